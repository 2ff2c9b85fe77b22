"""The vLLM backend builds the same prompts and sampling settings as the HF backend (no vLLM needed).

vLLM itself runs only in launchers/vllm-cpu/ (a separate venv; not part of this suite or CI). Here the
vLLM backend's pure functions are checked against what drift_exp.generation.hf actually does: its
`generate` runs on the tiny model with the model's `_prepare_generation_config` wrapped, so the test sees
the prompt ids and the effective generation config that transformers really samples with.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest

from drift_exp.config import GenerationConfig, TinyModelConfig
from drift_exp.errors import ConfigError
from drift_exp.generation import build_generator
from drift_exp.generation.vllm import (
    VLLMGenerator,
    _finished,
    build_inputs,
    engine_kwargs,
    request_seed,
    sampling_kwargs,
    stop_token_ids,
)
from drift_exp.models import build_tiny, load_tokenizer
from drift_exp.records import GenRequest

from .conftest import CONF
from .helpers import hf_effective_as_vllm, requests, run_hf

MAX_PROMPT = 160


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return build_tiny(TinyModelConfig(), root=tmp_path_factory.mktemp("tiny"))


def hf_reimplemented(tok, reqs, max_prompt_length):
    # What drift_exp/generation/hf.py does today, inline in HFGenerator.generate (no pure function to call):
    #   ids = tok(render_prompt(tok, req), add_special_tokens=False)["input_ids"]
    #   encoded.append((ids[-self.cfg.max_prompt_length:], len(ids) > self.cfg.max_prompt_length))
    from drift_exp.generation import render_prompt

    out = []
    for req in reqs:
        ids = tok(render_prompt(tok, req), add_special_tokens=False)["input_ids"]
        out.append((ids[-max_prompt_length:], len(ids) > max_prompt_length))
    return out


def test_prompt_ids_match_hf_chat_plain_and_truncation(tiny):
    tok = load_tokenizer(str(tiny))
    cfg = GenerationConfig(max_prompt_length=MAX_PROMPT)
    reqs = requests()
    ids, cut = build_inputs(tok, reqs, cfg)
    assert list(zip(ids, cut, strict=True)) == hf_reimplemented(tok, reqs, MAX_PROMPT)
    assert cut == [False, False, False, True, True, False]
    assert all(len(i) <= MAX_PROMPT for i in ids) and len(ids[3]) == len(ids[4]) == MAX_PROMPT
    # Chat prompts end with the generation cue (kept by left truncation); plain ones are the raw text.
    cue = tok("<|im_start|>assistant\n", add_special_tokens=False)["input_ids"]
    assert ids[0][-len(cue):] == cue and ids[3][-len(cue):] == cue
    assert tok.decode(ids[2]) == reqs[2].text
    assert tok.decode(ids[4]).endswith("\nAssistant:")


def test_prompt_ids_match_what_hf_generator_feeds_the_model(tiny, monkeypatch):
    tok = load_tokenizer(str(tiny))
    cfg = GenerationConfig(max_prompt_length=MAX_PROMPT, max_new_tokens=2, batch_size=2)
    reqs = requests()
    ids, cut = build_inputs(tok, reqs, cfg)
    completions, calls = run_hf(tiny, cfg, reqs, monkeypatch)
    fed = Counter(tuple(row) for call in calls for row in call["rows"])
    assert fed == Counter(tuple(i) for i in ids)
    assert [c.prompt_tokens for c in completions] == [len(i) for i in ids]
    assert [c.truncated_prompt for c in completions] == cut


# top_k off must reach transformers as 0: a None is filled in from the checkpoint's generation_config.json and
# then from transformers' defaults (top_k=50), so HF would sample with top-k 50 (or Qwen2.5's 20) and vLLM without.
SAMPLING_CASES = [
    pytest.param({}, 2, id="authors"),  # temperature 0.7, top_p 0.9, top_k off, rep. off
    pytest.param({"top_k": 20, "repetition_penalty": 1.05, "temperature": 1.0, "top_p": 0.8}, 2, id="top_k_penalty"),
    pytest.param({"top_k": 1, "top_p": 1.0}, 3, id="top_k_1"),
    # The HF backend refuses n > 1 when greedy (transformers: greedy search has no num_return_sequences > 1).
    pytest.param({"temperature": 0.0, "top_k": 5, "repetition_penalty": 1.2}, 1, id="greedy"),
]


@pytest.mark.parametrize("overrides,n", SAMPLING_CASES)
def test_sampling_settings_match_hf(tiny, monkeypatch, overrides, n):
    cfg = replace(GenerationConfig(max_prompt_length=MAX_PROMPT, max_new_tokens=3), **overrides)
    reqs = [replace(r, n=n) for r in requests()[:2]]
    _, calls = run_hf(tiny, cfg, reqs, monkeypatch)
    tok = load_tokenizer(str(tiny))
    ours = sampling_kwargs(cfg, n, seed=123, stop_ids=stop_token_ids(str(tiny), tok))
    assert ours.pop("seed") == 123 and ours.pop("skip_special_tokens") is True
    assert ours == hf_effective_as_vllm(calls[0]["config"])


def test_sampling_matches_hf_when_checkpoint_ships_sampling_defaults(tiny, tmp_path, monkeypatch):
    model = tmp_path / "qwen-like"
    shutil.copytree(tiny, model)
    gen_file = model / "generation_config.json"
    shipped = json.loads(gen_file.read_text())
    shipped.update(do_sample=True, temperature=0.7, top_p=0.8, top_k=20, repetition_penalty=1.05)  # Qwen2.5's
    gen_file.write_text(json.dumps(shipped))
    for defaults, top_k, penalty in (("model", 20, 1.05), ("none", -1, 1.0)):  # inherited, or switched off
        cfg = GenerationConfig(max_prompt_length=MAX_PROMPT, max_new_tokens=3, sampling_defaults=defaults)
        _, calls = run_hf(model, cfg, requests()[:1], monkeypatch)
        ours = sampling_kwargs(cfg, 2, seed=0, stop_ids=stop_token_ids(str(model), load_tokenizer(str(model))),
                               model_path=str(model))
        del ours["seed"], ours["skip_special_tokens"]
        assert ours == hf_effective_as_vllm(calls[0]["config"])
        assert (ours["top_k"], ours["repetition_penalty"], ours["top_p"]) == (top_k, penalty, 0.9)


def test_stop_tokens_without_generation_config_json(tiny, tmp_path):
    model = tmp_path / "no-gen-config"
    shutil.copytree(tiny, model)
    (model / "generation_config.json").unlink()
    tok = load_tokenizer(str(model))
    assert stop_token_ids(str(model), tok) == [tok.eos_token_id] == [2]


def test_request_seeds_are_stable_and_distinct():
    seeds = [request_seed(42, i) for i in range(1000)]
    assert len(set(seeds)) == 1000 and all(0 <= s < 2**31 for s in seeds)
    assert seeds == [request_seed(42, i) for i in range(1000)]
    assert request_seed(43, 0) not in seeds  # seed+index would collide across run seeds


def test_finished_flag():
    assert _finished("stop", [5, 2], {2})
    assert _finished("length", [5, 2], {2})  # EOS as the max_tokens-th token: finished, as in the HF backend
    assert not _finished("length", [5, 6], {2})
    assert not _finished("length", [], {2})


def test_engine_kwargs(monkeypatch):
    import drift_exp.generation.vllm as vllm_backend

    monkeypatch.setattr(vllm_backend, "visible_gpus", lambda: 4)
    cfg = GenerationConfig(max_prompt_length=1024, max_new_tokens=256)
    kw = engine_kwargs(cfg, "/m", "bfloat16", seed=7)
    assert kw == {"model": "/m", "tokenizer": "/m", "dtype": "bfloat16", "seed": 7, "tensor_parallel_size": 4,
                  "gpu_memory_utilization": 0.9, "enforce_eager": False, "max_model_len": 1280,
                  "generation_config": "vllm", "trust_remote_code": False}
    kw = engine_kwargs(replace(cfg, tensor_parallel_size=2, max_model_len=4096, enforce_eager=True,
                               engine_kwargs={"swap_space": 8}), "/m", "float32", seed=7)
    assert (kw["tensor_parallel_size"], kw["max_model_len"], kw["enforce_eager"], kw["swap_space"]) == (2, 4096,
                                                                                                        True, 8)
    monkeypatch.setattr(vllm_backend, "visible_gpus", lambda: 0)
    kw = engine_kwargs(GenerationConfig(), "/m", "auto", seed=0)
    assert kw["tensor_parallel_size"] == 1 and kw["dtype"] in ("float32", "bfloat16")


def test_build_generator_vllm_without_importing_vllm(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # any `import vllm` now raises ImportError
    gen = build_generator(replace(GenerationConfig(), backend="vllm"), "auto")
    assert isinstance(gen, VLLMGenerator) and gen.model_dtype == "auto"
    with pytest.raises(ImportError):
        gen.generate("/nonexistent", [GenRequest("r", "chosen", [{"role": "user", "content": "x"}])], seed=0)


def test_vllm_yaml_composes_and_validates():
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from drift_exp.config import register_configs
    from drift_exp.plan import validate

    register_configs()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = OmegaConf.to_object(compose(config_name="config", overrides=["generation=vllm"]))
    validate(cfg, environment=False)  # the values; whether vLLM is installed here is checked apart
    assert cfg.generation.backend == "vllm" and cfg.generation.tensor_parallel_size is None
    if importlib.util.find_spec("vllm") is None:
        with pytest.raises(ConfigError, match=r"generation.backend is vllm, but the vllm package is not installed"):
            validate(cfg)
