"""The sampling settings both backends apply, resolved once from the config and the checkpoint.

The authors' gen-drift.py called transformers' `generate(do_sample=True, temperature=0.7, top_p=0.9,
max_new_tokens=512)`, so everything else came from the checkpoint's generation_config.json: for
Qwen2.5-Instruct top_k 20 and repetition_penalty 1.05, for Gemma-3-it top_k 64.

generation.sampling_defaults:
- model (default): start from the checkpoint's generation_config.json, then apply the config's temperature,
  top_p and max_new_tokens. generation.top_k / generation.repetition_penalty left null take the checkpoint's
  value (off where the file sets none); a value given in the config wins (top_k -1 / repetition_penalty 1.0
  switch them off).
- none: the checkpoint's file is not read; top_k and repetition_penalty are the config's, null = off.

Off where the file sets no top_k: transformers would fill in its library default (50) there, vLLM nothing;
neither of the paper's checkpoints (Qwen2.5, Gemma-3) leaves it unset, and "off" is what both backends can
do alike. Fields other than these (e.g. min_p) are not read: neither paper checkpoint sets them.

The resolved settings are passed to each backend explicitly (`hf_generate_kwargs`, `vllm_sampling_kwargs`):
transformers fills only unset fields from the checkpoint, and vLLM runs with generation_config="vllm"
(its "auto" only changes `LLM.get_default_sampling_params()`, which explicit SamplingParams bypass), so the
two backends sample with exactly the numbers recorded in generate_stats.json["sampling"].
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from drift_exp.config import GenerationConfig, SamplingDefaults
from drift_exp.decoding import DECODING_KEYS
from drift_exp.errors import ConfigError

log = logging.getLogger(__name__)
KEYS = DECODING_KEYS  # temperature, top_p, top_k, repetition_penalty, max_new_tokens
OFF = {"top_k": -1, "repetition_penalty": 1.0}  # the recorded value of a switched-off setting


def checkpoint_sampling(model_path: str) -> dict[str, Any]:
    """The sampling fields the checkpoint's generation_config.json sets ({} without the file)."""
    from transformers import GenerationConfig as HFGenerationConfig

    if Path(model_path).is_dir() and not (Path(model_path) / "generation_config.json").exists():
        return {}  # a local checkpoint without the file: nothing to inherit
    try:
        gen = HFGenerationConfig.from_pretrained(model_path)
    except OSError as err:  # a hub id whose repository has no such file (or cannot be reached): say so
        log.warning("!!! %s: no generation_config.json could be read (%s); sampling without the checkpoint's "
                    "defaults", model_path, err)
        return {}
    return {k: v for k in ("top_k", "repetition_penalty") if (v := getattr(gen, k, None)) is not None}


def resolve(cfg: GenerationConfig, checkpoint: dict[str, Any]) -> dict[str, Any]:
    """The effective settings (KEYS; top_k -1 and repetition_penalty 1.0 = off) from the config and the
    checkpoint's fields (`checkpoint_sampling`; ignored with sampling_defaults=none)."""
    inherit = cfg.sampling_defaults == SamplingDefaults.model
    out: dict[str, Any] = {"temperature": cfg.temperature, "top_p": cfg.top_p, "max_new_tokens": cfg.max_new_tokens}
    for key in ("top_k", "repetition_penalty"):
        value = getattr(cfg, key)
        if value is None and inherit:
            value = checkpoint.get(key)
        out[key] = OFF[key] if value is None else value
    if out["top_k"] == 0:  # transformers' spelling of "off"
        out["top_k"] = -1
    if not (out["top_k"] == -1 or out["top_k"] >= 1) or out["repetition_penalty"] <= 0:
        raise ConfigError(f"generation_config.json gives top_k={out['top_k']}, repetition_penalty="
                          f"{out['repetition_penalty']}; set generation.top_k / generation.repetition_penalty")
    if out["temperature"] == 0:  # greedy: top-p and top-k select nothing
        out.update(top_p=1.0, top_k=-1)
    return out


def effective_sampling(cfg: GenerationConfig, model_path: str) -> dict[str, Any]:
    """The settings a backend samples with from the checkpoint at model_path (generate_stats.json["sampling"])."""
    inherit = cfg.sampling_defaults == SamplingDefaults.model
    return resolve(cfg, checkpoint_sampling(model_path) if inherit else {})


def hf_generate_kwargs(s: dict[str, Any]) -> dict[str, Any]:
    """transformers GenerationConfig fields. Every field is set: a None would be filled from the checkpoint
    (and then from transformers' defaults, top_k 50), except in greedy decoding, where transformers applies no
    temperature, top-p or top-k (and warns about any that is set)."""
    sample = s["temperature"] > 0
    return {
        "do_sample": sample,
        "temperature": s["temperature"] if sample else None,
        "top_p": s["top_p"] if sample else None,
        "top_k": (s["top_k"] if s["top_k"] > 0 else 0) if sample else None,  # 0, not None: off
        "repetition_penalty": s["repetition_penalty"],
        "max_new_tokens": s["max_new_tokens"],
    }


def vllm_sampling_kwargs(s: dict[str, Any]) -> dict[str, Any]:
    """vllm.SamplingParams fields (top_k -1 = off)."""
    return {"temperature": s["temperature"], "top_p": s["top_p"], "top_k": s["top_k"],
            "repetition_penalty": s["repetition_penalty"], "max_tokens": s["max_new_tokens"]}
