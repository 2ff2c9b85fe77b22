"""Sampling from the policy. Every backend renders prompts with `render_prompt` and samples with the
settings `sampling.effective_sampling` resolves, so two backends given the same config sample the same way."""

from __future__ import annotations

from drift_exp.config import GenerationConfig
from drift_exp.generation.protocol import Generator, prompt_ids, render_prompt, reply_text

__all__ = ["Generator", "build_generator", "prompt_ids", "render_prompt", "reply_text"]


def build_generator(cfg: GenerationConfig, model_dtype: str) -> Generator:
    if cfg.backend == "hf":
        from drift_exp.generation.hf import HFGenerator

        return HFGenerator(cfg, model_dtype)
    if cfg.backend == "vllm":
        from drift_exp.generation.vllm import VLLMGenerator  # imports vllm itself only when generating

        return VLLMGenerator(cfg, model_dtype)
    raise ValueError(f"generation.backend={cfg.backend!r} is not implemented")
