"""Every config group option composes; bad values fail early with the key named."""

import importlib.util
import subprocess
import sys
import time

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from drift_exp.config import Config, experiment_name, register_configs, validate
from drift_exp.errors import ConfigError

from .conftest import CONF, ROOT

register_configs()
GROUPS = sorted(p.name for p in CONF.iterdir() if p.is_dir())


def load(overrides: list[str]) -> Config:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        dcfg = compose(config_name="config", overrides=overrides)
    return OmegaConf.to_object(dcfg)


def test_groups_match_design():
    assert GROUPS == ["data", "eval", "generation", "launcher", "method", "model", "setting", "trainer"]


@pytest.mark.parametrize("override", [f"{g}={p.stem}" for g in GROUPS for p in sorted((CONF / g).glob("*.yaml"))])
def test_every_option_composes_and_validates(override):
    cfg = load([override])
    if cfg.generation.backend == "vllm" and importlib.util.find_spec("vllm") is None:
        with pytest.raises(ConfigError, match="generation.backend is vllm, but the vllm package is not installed"):
            validate(cfg)  # refused at once, not after the first stages ran
        return
    validate(cfg)
    assert isinstance(cfg, Config)


def test_embedded_default_is_drift_sample_tiny_two_iterations():
    cfg = load([])
    assert (cfg.method.kind, cfg.data.name, cfg.model.path, cfg.iterations) == ("drift", "sample", "tiny", 2)
    assert experiment_name(cfg) == "sample-tiny-drift-controlled-s42"


def test_paper_settings_are_the_defaults():
    t = load(["model=qwen14b"]).trainer
    assert (t.beta, t.learning_rate, t.optim, t.lr_scheduler_type, t.warmup_ratio) == (0.1, 5e-7, "rmsprop",
                                                                                      "linear", 0.1)
    assert (t.global_batch_size, t.micro_batch_size, t.max_length, t.warm_start_epochs, t.epochs, t.rpo_alpha) == (
        None, 4, 2048, 3, 1, 0.001)  # the authors' batch: 4 per device, no accumulation
    g = load([]).generation
    assert (g.temperature, g.top_p, g.max_new_tokens) == (0.7, 0.9, 512)


@pytest.mark.parametrize("model,path", [("qwen7b", "Qwen/Qwen2.5-7B-Instruct"),
                                        ("qwen14b", "Qwen/Qwen2.5-14B-Instruct"),
                                        ("gemma12b", "google/gemma-3-12b-it")])
def test_real_models_and_local_paths(model, path):
    assert load([f"model={model}"]).model.path == path
    assert load([f"model={model}", "model.path=/models/local"]).model.path == "/models/local"


def test_settings():
    assert load(["setting=controlled"]).setting.max_records == 4000
    assert load(["setting=full"]).setting.max_records is None


@pytest.mark.parametrize("override,key", [
    ("trainer.beta=-0.1", "trainer.beta"),
    ("iterations=0", "iterations"),
    ("trainer.learning_rate=0", "trainer.learning_rate"),
    ("trainer.warmup_ratio=1.5", "trainer.warmup_ratio"),
    ("generation.top_p=0", "generation.top_p"),
    ("generation.temperature=-1", "generation.temperature"),
    ("setting.max_records=0", "setting.max_records"),
    ("run.stop_after=iter_9/train", "run.stop_after"),
    ("run.stop_after=bogus", "run.stop_after"),
    ("model.dtype=float8", "model.dtype"),
    ("data.name=a/b", "data.name"),
])
def test_bad_values_name_the_key(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        validate(load([override]))


@pytest.mark.parametrize("override,message", [
    ("trainer.learning_rate=inf", "trainer.learning_rate must be a finite number, got inf"),
    ("trainer.beta=nan", "trainer.beta must be a finite number, got nan"),
    ("trainer.rpo_alpha=inf", "trainer.rpo_alpha must be a finite number"),
    ("generation.temperature=inf", "generation.temperature must be a finite number"),
    ("eval.judge.timeout_s=inf", "eval.judge.timeout_s must be a finite number"),
    ("seed=-1", "seed must be in 0 .. 2**32-1, got -1"),
    ("seed=4294967296", "seed must be in 0 .. 2**32-1"),
    ("model.tiny.init_seed=-5", "model.tiny.init_seed must be in 0 .. 2**32-1"),
    ("trainer.optim=bogus", "trainer.optim must be one transformers accepts (.*rmsprop.*), got 'bogus'"),
    ("trainer.lr_scheduler_type=bogus", "trainer.lr_scheduler_type must be one transformers accepts (.*cosine.*)"),
    ("model.path=/nonexistent/model", "model.path='/nonexistent/model': no such file or folder"),
    ("model.path=./models/missing", "model.path='./models/missing': no such file or folder"),
    ("scorer.path=/nonexistent", "scorer.path='/nonexistent': no such file or folder"),
    ("eval.proxy_source=/nonexistent.jsonl", "eval.proxy_source='/nonexistent.jsonl': no such file"),
    ("data.source=/nonexistent.json", "data.source='/nonexistent.json': no such file or folder"),
    ("generation.temperature=0 method.n_samples=2", "generation.temperature is 0 .greedy., so the method.n_samples=2"),
    ("generation.temperature=0 method=iterdpo_unguided", "unguided IterDPO's two samples of a prompt would be"),
    ("model.tiny.num_attention_heads=0", "model.tiny.num_attention_heads must be >= 1, got 0"),
    ("scorer.tiny.num_key_value_heads=0", "scorer.tiny.num_key_value_heads must be >= 1, got 0"),
    ("eval.temperature=nan", "eval.temperature must be a finite number"),
])
def test_values_that_would_fail_late_are_refused_in_validate(override, message):
    with pytest.raises(ConfigError, match=message.replace("**", r"\*\*")):
        validate(load(override.split()))


def test_hub_ids_and_existing_local_paths_pass(tmp_path):
    validate(load(["model=qwen7b", f"scorer.path={tmp_path}", "eval=full"]))  # hub ids are not checked here
    validate(load([f"model.path={tmp_path}", "model.name=local"]))


def test_missing_backend_packages_are_refused(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "deepspeed" else real(name, *a))
    with pytest.raises(ConfigError, match="launcher.deepspeed is true with launcher=local, but the deepspeed package"):
        validate(load(["launcher=local"]))
    validate(load(["launcher=local", "launcher.deepspeed=false"]))


@pytest.mark.parametrize("override,key", [
    ("trainer.betaa=0.1", "betaa"),
    ("trainer.beta=abc", "trainer.beta"),
    ("method.prompt_format=html", "method.prompt_format"),
    ("trainer.ref=sometimes", "trainer.ref"),
])
def test_unknown_keys_and_bad_types_fail_at_composition(override, key):
    with pytest.raises(ConfigCompositionException) as err:
        load([override])
    assert key in str(err.value) + str(err.value.__cause__)


def test_cli_rejects_bad_value_fast_without_traceback():
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "drift_exp", "trainer.beta=-1"], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    elapsed = time.perf_counter() - t0
    assert proc.returncode == 2
    assert "trainer.beta must be > 0, got -1" in proc.stderr + proc.stdout
    assert "Traceback" not in proc.stderr + proc.stdout
    # Interpreter start + Hydra composition; torch is never imported on this path.
    assert elapsed < 10, elapsed


def test_cli_help_and_cfg_job():
    out = subprocess.run([sys.executable, "-m", "drift_exp", "--help"], cwd=ROOT, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0 and "method: drift, drift_unguided, iterdpo, iterdpo_unguided, spin" in out.stdout
    out = subprocess.run([sys.executable, "-m", "drift_exp", "--cfg", "job", "model=qwen14b", "data=wildfeedback"],
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0
    job = OmegaConf.create(out.stdout)
    assert job.model.path == "Qwen/Qwen2.5-14B-Instruct" and job.data.name == "wildfeedback"
