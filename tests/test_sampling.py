"""generation.sampling_defaults: the checkpoint's generation_config.json under the config's settings, the same
for both backends. A copy of the tiny model whose generation_config.json ships Qwen2.5's sampling defaults."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from drift_exp.config import GenerationConfig, SamplingDefaults, TinyModelConfig
from drift_exp.errors import ConfigError
from drift_exp.generation.sampling import checkpoint_sampling, effective_sampling, hf_generate_kwargs, resolve
from drift_exp.generation.vllm import sampling_kwargs, stop_token_ids
from drift_exp.models import build_tiny, load_tokenizer

from .helpers import hf_effective_as_vllm, requests, run_hf

QWEN = {"do_sample": True, "temperature": 0.7, "top_p": 0.8, "top_k": 20, "repetition_penalty": 1.05}


@pytest.fixture(scope="module")
def qwen_like(tmp_path_factory) -> Path:
    tiny = build_tiny(TinyModelConfig(), root=tmp_path_factory.mktemp("tiny"))
    model = tmp_path_factory.mktemp("qwen-like") / "model"
    shutil.copytree(tiny, model)
    gen_file = model / "generation_config.json"
    gen_file.write_text(json.dumps({**json.loads(gen_file.read_text()), **QWEN}))
    return model


def test_resolution_rules():
    ckpt = {"top_k": 20, "repetition_penalty": 1.05}
    cfg = GenerationConfig(max_new_tokens=64)
    assert resolve(cfg, ckpt) == {"temperature": 0.7, "top_p": 0.9, "top_k": 20, "repetition_penalty": 1.05,
                                  "max_new_tokens": 64}
    assert resolve(cfg, {}) == {**resolve(cfg, ckpt), "top_k": -1, "repetition_penalty": 1.0}  # file sets none
    none = replace(cfg, sampling_defaults=SamplingDefaults.none)
    assert (resolve(none, ckpt)["top_k"], resolve(none, ckpt)["repetition_penalty"]) == (-1, 1.0)
    # values in the config win over the checkpoint's, in both modes; -1 / 1.0 switch them off
    assert resolve(replace(cfg, top_k=-1, repetition_penalty=1.0), ckpt)["top_k"] == -1
    assert resolve(replace(cfg, top_k=5, repetition_penalty=1.2), ckpt) == {
        **resolve(cfg, ckpt), "top_k": 5, "repetition_penalty": 1.2}
    assert resolve(replace(none, top_k=5), ckpt)["top_k"] == 5
    # greedy: top-p and top-k do nothing, recorded as off
    greedy = resolve(replace(cfg, temperature=0.0), ckpt)
    assert (greedy["top_p"], greedy["top_k"], greedy["repetition_penalty"]) == (1.0, -1, 1.05)
    assert resolve(cfg, {"top_k": 0})["top_k"] == -1  # transformers' "off"
    with pytest.raises(ConfigError, match="generation.top_k"):
        resolve(cfg, {"top_k": -5})
    assert hf_generate_kwargs(resolve(cfg, {}))["top_k"] == 0  # off reaches transformers as 0, never None
    # greedy: transformers applies no warper, and warns about any that is set, so none is passed
    assert {k: v for k, v in hf_generate_kwargs(greedy).items() if v is None} == {
        "temperature": None, "top_p": None, "top_k": None}


def test_checkpoint_fields(qwen_like, tmp_path):
    assert checkpoint_sampling(str(qwen_like)) == {"top_k": 20, "repetition_penalty": 1.05}
    bare = tmp_path / "bare"
    shutil.copytree(qwen_like, bare)
    (bare / "generation_config.json").unlink()
    assert checkpoint_sampling(str(bare)) == {}


@pytest.mark.parametrize("defaults,top_k,penalty", [("model", 20, 1.05), ("none", -1, 1.0)])
def test_both_backends_sample_with_the_resolved_settings(qwen_like, monkeypatch, defaults, top_k, penalty):
    """HF's effective generation config (what transformers really samples with, after merging the checkpoint's)
    equals the vLLM SamplingParams built for the same checkpoint, and both equal the recorded settings."""
    cfg = GenerationConfig(max_prompt_length=160, max_new_tokens=3, temperature=0.9, top_p=0.95,
                           sampling_defaults=defaults)
    recorded = effective_sampling(cfg, str(qwen_like))
    assert recorded == {"temperature": 0.9, "top_p": 0.95, "top_k": top_k, "repetition_penalty": penalty,
                        "max_new_tokens": 3}  # the config's temperature / top_p beat the file's 0.7 / 0.8
    _, calls = run_hf(qwen_like, cfg, requests()[:1], monkeypatch)
    tok = load_tokenizer(str(qwen_like))
    vllm = sampling_kwargs(cfg, 2, seed=0, stop_ids=stop_token_ids(str(qwen_like), tok), model_path=str(qwen_like))
    del vllm["seed"], vllm["skip_special_tokens"]
    assert vllm == hf_effective_as_vllm(calls[0]["config"])
    assert {k: vllm[k] for k in ("temperature", "top_p", "top_k", "repetition_penalty")} == {
        k: recorded[k] for k in ("temperature", "top_p", "top_k", "repetition_penalty")}
    assert vllm["max_tokens"] == recorded["max_new_tokens"]


def test_config_accepts_null_and_checks_values():
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from drift_exp.config import register_configs
    from drift_exp.plan import validate
    from tests.conftest import CONF

    register_configs()
    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        cfg = OmegaConf.to_object(compose("config", overrides=["model=tiny"]))
        assert (cfg.generation.top_k, cfg.generation.repetition_penalty) == (None, None)
        assert cfg.generation.sampling_defaults == SamplingDefaults.model
        validate(cfg)
        bad = OmegaConf.to_object(compose("config", overrides=["model=tiny", "generation.top_k=0"]))
        with pytest.raises(ConfigError, match="generation.top_k must be null"):
            validate(bad)
        with pytest.raises(Exception, match="sampling_defaults"):
            compose("config", overrides=["model=tiny", "generation.sampling_defaults=auto"])
