"""Every config group option composes; bad values fail early with the key named."""

import dataclasses
import enum
import functools
import importlib.util
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from drift_exp.config import Config, experiment_name, register_configs
from drift_exp.errors import ConfigError
from drift_exp.plan import validate

from .conftest import CONF, ROOT
from .helpers import load

register_configs()
# The groups of the root defaults list; conf/sweep/ is the `+sweep=` group (tests/test_sweeps.py), whose files pin
# seed and iterations on purpose, so the "only what differs" rule below is for option files.
GROUPS = sorted(p.name for p in CONF.iterdir() if p.is_dir() and p.name != "sweep")


def test_groups_match_design():
    assert GROUPS == ["data", "eval", "generation", "launcher", "method", "model", "setting", "trainer"]


# What each option composes to, including values its file no longer spells out because they are the
# dataclass defaults (the option files hold only what differs): moving a default must not move these.
COMPOSED = {
    "data=sample": {"data.source": "sample", "data.format": "annotation", "data.split": "train_prefs"},
    "data=uf_sample": {"data.format": "ultrafeedback_binarized", "data.split": "train_prefs"},
    "data=ultrafeedback": {"data.source": "HuggingFaceH4/ultrafeedback_binarized", "data.split": "train_prefs"},
    "data=uf_raw_sample": {"data.format": "ultrafeedback_raw", "data.split": "train"},
    "data=ultrafeedback_raw": {"data.source": "openbmb/UltraFeedback", "data.split": "train"},
    "data=wildfeedback": {"data.source": "microsoft/WildFeedback", "data.format": "auto"},
    "eval=default": {"eval.benchmarks": ["proxy"], "eval.max_new_tokens": 256,  # temperature: tests/test_trainer.py
                     "eval.top_p": 1.0, "eval.top_k": -1, "eval.judge.enabled": False, "eval.alpaca_eval_judge": False,
                     "eval.limit": None, "eval.proxy_source": "sample"},
    "eval=full": {"eval.benchmarks": ["alpaca_eval", "wildbench", "proxy"], "eval.wildbench_config": "v2",
                  "eval.wildbench_split": "test", "eval.max_new_tokens": 4096, "eval.max_prompt_length": 8192,
                  "eval.judge.enabled": True, "eval.judge.model": "gpt-4o-2024-05-13",
                  "eval.judge.api_key_env": "OPENAI_API_KEY", "eval.judge.max_concurrency": 8,
                  "eval.judge.max_retries": 5, "eval.alpaca_eval_judge": True, "eval.wildbench.template": "official",
                  "eval.wildbench.elo.enabled": True},
    "generation=hf": {"generation.backend": "hf", "generation.temperature": 0.7, "generation.top_p": 0.9,
                      "generation.top_k": None, "generation.repetition_penalty": None, "generation.max_new_tokens": 512,
                      "generation.max_prompt_length": 2048, "generation.batch_size": 16,
                      "generation.sampling_defaults": "model", "generation.replicas": None},
    "generation=vllm": {"generation.backend": "vllm", "generation.temperature": 0.7, "generation.top_p": 0.9,
                        "generation.max_new_tokens": 512, "generation.tensor_parallel_size": None,
                        "generation.gpu_memory_utilization": 0.9, "generation.enforce_eager": False,
                        "generation.max_model_len": None, "generation.engine_kwargs": {}},
    "launcher=inline": {"launcher.name": "inline"},
    "launcher=local": {"launcher.name": "local", "launcher.num_processes": None, "launcher.num_machines": 1,
                       "launcher.deepspeed": True, "launcher.main_process_port": 29500},
    "launcher=slurm": {"launcher.name": "slurm", "launcher.num_processes": 8, "launcher.num_machines": 1,
                       "launcher.deepspeed": True},
    "method=drift": {"method.kind": "drift", "method.guided": True, "method.prompt_format": "plain",
                     "method.n_samples": 1, "method.accumulate": False},
    "method=iterdpo": {"method.kind": "iterdpo", "method.guided": True, "method.n_samples": 1},
    "method=spin": {"method.kind": "spin", "method.guided": False, "method.n_samples": 1, "method.accumulate": False},
    "method=drift_unguided": {"method.name": "drift-unguided", "method.kind": "drift", "method.guided": False},
    "method=iterdpo_unguided": {"method.name": "iterdpo-unguided", "method.kind": "iterdpo", "method.guided": False},
    "model=qwen7b": {"model.dtype": "auto"},
    "model=qwen14b": {"model.dtype": "auto"},
    "model=gemma12b": {"model.dtype": "auto"},
    "model=smollm2": {"model.dtype": "float32"},
    "model=tiny": {"model.path": "tiny", "model.dtype": "float32", "trainer.learning_rate": 1e-4,
                   "eval.temperature": 0.7},
    "setting=controlled": {"setting.max_records": 4000},
    "setting=full": {"setting.max_records": None},
    "trainer=dpo": {"trainer.beta": 0.1, "trainer.optim": "rmsprop",  # learning rate: tests/test_trainer.py
                    "trainer.micro_batch_size": 4, "trainer.max_length": 2048, "trainer.truncation": "authors",
                    "trainer.ref": "previous", "trainer.ref_mode": "auto", "trainer.max_prompt_length": None},
}
OPTIONS = [f"{g}={p.stem}" for g in GROUPS for p in sorted((CONF / g).glob("*.yaml"))]


def test_every_option_has_expected_values():
    assert sorted(COMPOSED) == sorted(OPTIONS)


@pytest.mark.parametrize("override", OPTIONS)
def test_every_option_composes_and_validates(override):
    cfg = load([override])
    for key, value in COMPOSED[override].items():
        assert functools.reduce(getattr, key.split("."), cfg) == value, (override, key)
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
    overrides = override.split()
    if any("." not in o.split("=")[0] and o.split("=")[0] not in ("seed",) for o in overrides):
        cfg = load(overrides)  # a config group: Hydra composes it
    else:  # plain values: merged into the default config (composing once keeps the fast tier fast)
        cfg = OmegaConf.to_object(OmegaConf.merge(default_dcfg(), OmegaConf.from_dotlist(overrides)))
    with pytest.raises(ConfigError, match=message.replace("**", r"\*\*")):
        validate(cfg)


@functools.cache
def default_dcfg():
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config")


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


def redundant(node: dict, default: Any, where: str = "") -> list[str]:
    """Dotted keys of a YAML mapping whose value equals the schema default it would replace."""
    found = []
    for key, value in node.items():
        path = f"{where}.{key}" if where else str(key)
        if dataclasses.is_dataclass(default) and key in {f.name for f in dataclasses.fields(default)}:
            schema = getattr(default, key)
        elif isinstance(default, dict) and key in default:
            schema = default[key]
        else:
            continue  # not a schema key: composition rejects it (test_every_option_composes_and_validates)
        if isinstance(value, dict) and value and (dataclasses.is_dataclass(schema) or isinstance(schema, dict)):
            found += redundant(value, schema, path)
        elif _same(value, schema):
            found.append(path)
    return found


def _same(value: Any, default: Any) -> bool:
    if isinstance(default, enum.Enum):
        default = default.value
    if isinstance(value, bool) or isinstance(default, bool):  # True == 1 in Python, not in a config
        return type(value) is type(default) and value == default
    return value == default


def yaml_values(path: Path) -> tuple[dict, Any]:
    """A conf/ file's values (defaults list and hydra block left out) and the schema node they land in."""
    node = OmegaConf.to_container(OmegaConf.load(path), resolve=False) or {}
    group = path.parent.relative_to(CONF).as_posix()
    is_global = group == "." or path.read_text().startswith("# @package _global_")
    values = {k: v for k, v in node.items() if k not in ("defaults", "hydra")}
    return values, Config() if is_global else getattr(Config(), group)


@pytest.mark.parametrize("path", sorted(p for p in CONF.rglob("*.yaml") if p.parent.name != "sweep"),
                         ids=lambda p: p.relative_to(CONF).as_posix())
def test_yaml_sets_only_what_differs_from_the_dataclass_defaults(path):
    values, schema = yaml_values(path)
    assert redundant(values, schema) == [], f"{path.relative_to(ROOT)} repeats dataclass defaults (drift_exp/config.py)"


def test_the_redundancy_check_can_fail():
    assert redundant({"beta": 0.1, "learning_rate": 1e-6}, Config().trainer) == ["beta"]
    assert redundant({"prompt_format": "plain", "guided": False}, Config().method) == ["prompt_format"]
    assert redundant({"launcher": {"name": "slurm", "deepspeed": True}}, Config()) == ["launcher.deepspeed"]
    assert redundant({"judge": {"enabled": True, "model": "gpt-4o-2024-05-13"}, "engine_kwargs": {}},
                     Config().eval) == ["judge.model"]
    assert redundant({"engine_kwargs": {}, "top_k": -1}, Config().generation) == ["engine_kwargs"]
    assert redundant({"num_machines": True}, Config().launcher) == []  # 1 == True, but not the same setting


# ------------------------------------------------------------------------------------------- upper bounds


@pytest.mark.parametrize("override,message", [
    # the probe of issue 19: passed the preflight and died in generation asking for a 26 TB allocation
    ("method.n_samples=100000000", "method.n_samples must be <= 64 (policy samples per request; "),
    ("iterations=1000000", "iterations must be <= 100 (each iteration samples, trains and keeps a checkpoint), "
                           "got 1,000,000"),
    ("setting.max_records=100000000", "setting.max_records must be <= 10,000,000"),
    ("generation.max_new_tokens=1000000", "generation.max_new_tokens must be <= 131,072"),
    ("eval.max_new_tokens=1000000", "eval.max_new_tokens must be <= 131,072"),
    ("generation.max_prompt_length=1000000", "generation.max_prompt_length must be <= 131,072"),
    ("eval.max_prompt_length=1000000", "eval.max_prompt_length must be <= 131,072"),
    ("generation.batch_size=100000", "generation.batch_size must be <= 4,096"),
    ("generation.max_model_len=1000000", "generation.max_model_len must be <= 131,072"),
    ("eval.batch_size=100000", "eval.batch_size must be <= 4,096"),
    ("trainer.max_length=1000000", "trainer.max_length must be <= 131,072"),
    ("trainer.micro_batch_size=100000", "trainer.micro_batch_size must be <= 1,024"),
    ("trainer.global_batch_size=1000000", "trainer.global_batch_size must be <= 65,536"),
    ("trainer.epochs=1000", "trainer.epochs must be <= 100"),
    ("trainer.warm_start_epochs=1000", "trainer.warm_start_epochs must be <= 100"),
    ("scorer.max_length=1000000", "scorer.max_length must be <= 131,072"),
    ("scorer.batch_size=100000", "scorer.batch_size must be <= 4,096"),
    ("launcher.num_processes=100000", "launcher.num_processes must be <= 1,024"),
    ("launcher.num_machines=100000", "launcher.num_machines must be <= 4,096"),
    ("model.tiny.hidden_size=1000000", "model.tiny.hidden_size must be <= 8,192"),
    ("eval.judge.max_tokens=1000000", "eval.judge.max_tokens must be <= 131,072"),
    ("eval.judge.max_concurrency=100000", "eval.judge.max_concurrency must be <= 1,024"),
])
def test_numbers_that_multiply_memory_or_time_have_upper_bounds(override, message):
    cfg = OmegaConf.to_object(OmegaConf.merge(default_dcfg(), OmegaConf.from_dotlist([override])))
    with pytest.raises(ConfigError) as err:
        validate(cfg, environment=False)
    assert str(err.value).startswith(message), str(err.value)


@pytest.mark.parametrize("override", [
    "method.n_samples=64", "iterations=100", "setting.max_records=10000000", "generation.max_new_tokens=131072",
    "trainer.max_length=131072", "trainer.micro_batch_size=1024", "launcher.num_processes=1024",
])
def test_the_bounds_themselves_pass(override):
    cfg = OmegaConf.to_object(OmegaConf.merge(default_dcfg(), OmegaConf.from_dotlist([override])))
    cfg.validate()  # the sections' checks alone (a bound is one of them)
