"""The decoding settings that generation.* and eval.* share: each field, its meaning and its checks, once.

GenerationConfig (drift_exp/config.py) and EvalConfig (drift_exp/evaluation/config.py) inherit these
fields, so the keys stay generation.temperature, eval.temperature, ... The defaults here are the policy
sampling of the authors' gen-drift.py; EvalConfig overrides them with WildBench's greedy decoding.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any


@dataclass
class DecodingConfig:
    # Authors' gen-drift.py settings; temperature 0 = greedy (top_p and top_k then select nothing).
    temperature: float = 0.7
    top_p: float = 0.9
    # null: the checkpoint's generation_config.json value with generation.sampling_defaults=model (Qwen2.5: 20),
    # off otherwise; -1 = off. Both backends apply the same resolved value (drift_exp/generation/sampling.py).
    top_k: int | None = None
    # null: as top_k (Qwen2.5: 1.05); 1.0 = off.
    repetition_penalty: float | None = None
    max_new_tokens: int = 512


# Tokens of one sequence: the longest context of the models in reach (Qwen2.5, Gemma 3: 128k). A larger
# max_new_tokens is a typo that would size a KV cache (and the plan's time) for a context no model has.
MAX_TOKENS = 131_072

# The settings a backend samples with (drift_exp/generation/sampling.py), in the order they are recorded.
DECODING_KEYS = tuple(f.name for f in fields(DecodingConfig))


def decoding_checks(prefix: str, cfg: DecodingConfig) -> list[tuple[str, bool, str]]:
    """(key, ok, why) of the range checks of the decoding fields of `cfg` (generation.* or eval.*)."""
    # A subclass may narrow top_k / repetition_penalty to non-null (eval.*: never the checkpoint's).
    nullable = {f.name for f in fields(cfg) if "None" in str(f.type)}

    def null(key: str, then: str) -> str:
        return f"null (the checkpoint's){then}" if key in nullable else ""

    top_k, penalty = cfg.top_k, cfg.repetition_penalty
    return [
        (f"{prefix}.temperature", cfg.temperature >= 0, f"must be >= 0 (0 = greedy), got {cfg.temperature}"),
        (f"{prefix}.top_p", 0 < cfg.top_p <= 1, f"must be in (0, 1], got {cfg.top_p}"),
        (f"{prefix}.top_k", top_k is None or top_k == -1 or top_k >= 1,
         f"must be {null('top_k', ', ')}-1 (off) or >= 1, got {top_k}"),
        (f"{prefix}.repetition_penalty", penalty is None or penalty > 0,
         f"must be {null('repetition_penalty', ' or ')}> 0, got {penalty}"),
        (f"{prefix}.max_new_tokens", cfg.max_new_tokens >= 1, f"must be >= 1, got {cfg.max_new_tokens}"),
        (f"{prefix}.max_new_tokens", cfg.max_new_tokens <= MAX_TOKENS,
         f"must be <= {MAX_TOKENS:,} (tokens generated per reply; the longest context of the models in reach), "
         f"got {cfg.max_new_tokens:,}"),
    ]


def decoding_of(cfg: DecodingConfig) -> dict[str, Any]:
    """The decoding fields of `cfg` as a dict (e.g. to lay eval.* over a GenerationConfig)."""
    return {key: getattr(cfg, key) for key in DECODING_KEYS}
