"""Load policies and tokenizers; build the tiny Qwen2 model that stands in for a real one on CPU."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import asdict
from pathlib import Path

import torch

from drift_exp.config import ModelConfig, TinyModelConfig
from drift_exp.data.cache import cache_root, remove_dead_temps, temp_path  # defined there: data loading skips torch

# ChatML, the format of Qwen2.5's template without its tool-calling branches.
CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>'"
    " + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def build_tiny(cfg: TinyModelConfig, root: Path | None = None, head: str = "lm") -> Path:
    """Save a randomly initialised Qwen2 model + byte-level Qwen2Tokenizer once; return its folder.

    head="lm": Qwen2ForCausalLM (the tiny policy); head="reward": Qwen2ForSequenceClassification
    with one output (the tiny reward model, a stand-in for the DeBERTa reward model on CPU).
    """
    from tokenizers import pre_tokenizers
    from transformers import Qwen2Config, Qwen2ForCausalLM, Qwen2ForSequenceClassification, Qwen2Tokenizer

    key = hashlib.sha256(json.dumps(asdict(cfg), sort_keys=True).encode()).hexdigest()[:12]
    folder = (root or cache_root()) / f"tiny-qwen2-{'' if head == 'lm' else head + '-'}{key}"
    remove_dead_temps(folder.parent)  # a build killed half way
    if (folder / "config.json").exists():
        return folder
    vocab = {"<|endoftext|>": 0, "<|im_start|>": 1, "<|im_end|>": 2}
    for ch in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab[ch] = len(vocab)
    tok = Qwen2Tokenizer(vocab=vocab, merges=[], eos_token="<|im_end|>", pad_token="<|endoftext|>",
                         unk_token=None, additional_special_tokens=["<|im_start|>"], padding_side="left")
    tok.chat_template = CHATML
    config = Qwen2Config(
        vocab_size=len(tok), hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_hidden_layers, num_attention_heads=cfg.num_attention_heads,
        num_key_value_heads=cfg.num_key_value_heads, max_position_embeddings=cfg.max_position_embeddings,
        tie_word_embeddings=head == "lm", eos_token_id=2, pad_token_id=0, bos_token_id=None,
        num_labels=1,
    )
    torch.manual_seed(cfg.init_seed)
    if head == "lm":
        model = Qwen2ForCausalLM(config)
        model.generation_config.eos_token_id = 2
        model.generation_config.pad_token_id = 0
    else:
        model = Qwen2ForSequenceClassification(config)
    tmp = temp_path(folder)
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    try:
        os.replace(tmp, folder)  # atomic; a concurrent builder may have won the race
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def base_model_path(cfg: ModelConfig) -> str:
    """The experiment's starting model: a hub id, a local folder, or the tiny model's cache folder."""
    return str(build_tiny(cfg.tiny)) if cfg.path == "tiny" else cfg.path


def torch_dtype(name: str) -> torch.dtype:
    if name == "auto":
        if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    return getattr(torch, name)


_trust_remote_code = False  # model.trust_remote_code of this process's config (set_trust_remote_code)


def set_trust_remote_code(flag: bool) -> None:
    """Apply model.trust_remote_code to every later load in this process (the pipeline and each worker
    set it from their config, so loads deep inside generation, scoring and evaluation honour it)."""
    global _trust_remote_code
    _trust_remote_code = bool(flag)


def trust_remote_code(override: bool | None = None) -> bool:
    """The flag a load passes to transformers / vLLM: `override`, else the configured one (off by default)."""
    return _trust_remote_code if override is None else override


def load_tokenizer(path: str, padding_side: str = "left", trust: bool | None = None):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path, padding_side=padding_side, trust_remote_code=trust_remote_code(trust))
    if tok.pad_token is None:  # as gen-drift.py does
        tok.pad_token = tok.eos_token
    return tok


def load_policy(path: str, dtype: torch.dtype, trust: bool | None = None):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, dtype=dtype, trust_remote_code=trust_remote_code(trust))
