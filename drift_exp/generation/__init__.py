"""Sampling from the policy. Every backend renders prompts with `render_prompt` and samples with the
settings `sampling.effective_sampling` resolves, so two backends given the same config sample the same way."""

from __future__ import annotations

from typing import Protocol

from drift_exp.config import GenerationConfig
from drift_exp.records import Completion, GenRequest


class Generator(Protocol):
    output_tokens: int  # generated tokens of the last call

    def generate(self, model_path: str, requests: list[GenRequest], seed: int) -> list[Completion]: ...

    def generate_share(self, model_path: str, requests: list[GenRequest], seed: int, replica: int,
                       replicas: int) -> dict[int, Completion]:
        """Replica `replica` of `replicas`: its share of the requests' completions, by request index."""
        ...


def render_prompt(tokenizer, request: GenRequest) -> str:
    """The exact prompt text: the request's raw text (with BOS where the chat template opens with one), or its
    messages through the chat template."""
    if request.text is not None:
        from drift_exp.methods.prompts import with_bos

        return with_bos(tokenizer, request.text)
    return tokenizer.apply_chat_template(request.messages, tokenize=False, add_generation_prompt=True)


def build_generator(cfg: GenerationConfig, model_dtype: str) -> Generator:
    if cfg.backend == "hf":
        from drift_exp.generation.hf import HFGenerator

        return HFGenerator(cfg, model_dtype)
    if cfg.backend == "vllm":
        from drift_exp.generation.vllm import VLLMGenerator  # imports vllm itself only when generating

        return VLLMGenerator(cfg, model_dtype)
    raise ValueError(f"generation.backend={cfg.backend!r} is not implemented")
