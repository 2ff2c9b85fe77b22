"""Sampling from the policy. Every backend renders prompts with `render_prompt` and samples with
the settings of `sampling_settings`, so two backends given the same config sample the same way."""

from __future__ import annotations

import re
from typing import Any, Protocol

from drift_exp.config import GenerationConfig
from drift_exp.records import Completion, GenRequest


class Generator(Protocol):
    def generate(self, model_path: str, requests: list[GenRequest], seed: int) -> list[Completion]: ...


def render_prompt(tokenizer, request: GenRequest) -> str:
    """The exact prompt text: the request's raw text, or its messages through the chat template."""
    if request.text is not None:
        return request.text
    return tokenizer.apply_chat_template(request.messages, tokenize=False, add_generation_prompt=True)


# The speaker labels of the plain prompt format (methods/prompts.py). A small model prompted with
# "...User: ...\nAssistant: " often writes the next "User:" turn itself instead of stopping: the reply
# ends where a line starts with a label. A sample cut at max_new_tokens may end on part of one ("\nAss").
_LABELS = ("User:", "Assistant:", "System:")
_TURN = re.compile(r"(?:^|\n)(?:User|Assistant|System):")
_PARTIAL = re.compile(r"\n(?:" + "|".join(re.escape(lab[:i]) for lab in _LABELS for i in range(1, len(lab)))
                      + r")$")


def reply_text(text: str, plain: bool, finished: bool) -> tuple[str, bool]:
    """A decoded sample -> (the reply, whether it ended). Plain-format samples end at a new turn's label;
    an unfinished sample loses a trailing U+FFFD (a multi-byte character cut by max_new_tokens)."""
    if plain:
        m = _TURN.search(text)
        if m is not None:
            text, finished = text[:m.start()], True
        elif not finished:
            text = _PARTIAL.sub("", text)
    if not finished:
        text = text.rstrip("\ufffd")
    return text.strip(), finished


def sampling_settings(cfg: GenerationConfig) -> dict[str, Any]:
    """Backend-neutral sampling settings (vLLM SamplingParams names)."""
    return {
        "temperature": cfg.temperature,
        "top_p": cfg.top_p,
        "top_k": cfg.top_k,
        "repetition_penalty": cfg.repetition_penalty,
        "max_tokens": cfg.max_new_tokens,
    }


def build_generator(cfg: GenerationConfig, model_dtype: str) -> Generator:
    if cfg.backend == "hf":
        from drift_exp.generation.hf import HFGenerator

        return HFGenerator(cfg, model_dtype)
    if cfg.backend == "vllm":
        from drift_exp.generation.vllm import VLLMGenerator  # imports vllm itself only when generating

        return VLLMGenerator(cfg, model_dtype)
    raise ValueError(f"generation.backend={cfg.backend!r} is not implemented")
