"""launcher=local for real on CPU: generation as a child process, DPO under `accelerate launch` with
2 processes and DeepSpeed ZeRO-3 (gloo), a failing child surfacing its error, and resume."""

import json
import math
import os
import subprocess
import sys
from dataclasses import replace

import pytest
from omegaconf import OmegaConf

from drift_exp.config import Config, LauncherConfig
from drift_exp.launch import stage_command

from .conftest import ROOT
from .helpers import drift_exp, mtimes, ok

LOCAL = ["launcher=local", "launcher.num_processes=2", "iterations=1", "trainer.warm_start_epochs=1",
         "trainer.learning_rate=1e-4", "tracking.mode=disabled"]


def config(**launcher) -> Config:
    return replace(Config(), launcher=LauncherConfig(**launcher))


def test_inline_needs_no_command_and_generation_is_one_process(tmp_path):
    cmd = stage_command(config(name="local", num_processes=8), tmp_path, "generate", 1, None)
    assert cmd == [sys.executable, "-m", "drift_exp.worker", "generate", "--run-dir", str(tmp_path), "--iteration", "1"]


def test_local_training_command(tmp_path):
    cmd = stage_command(config(name="local", num_processes=8), tmp_path, "train", 2, tmp_path / "ds.json")
    joined = " ".join(cmd)
    assert "accelerate.commands.launch --num_processes 8 --num_machines 1" in joined
    assert f"--use_deepspeed --deepspeed_config_file {tmp_path / 'ds.json'}" in joined
    assert joined.endswith(f"train --run-dir {tmp_path} --iteration 2 --deepspeed-config {tmp_path / 'ds.json'}")


def test_slurm_training_spans_the_nodes(tmp_path, monkeypatch):
    monkeypatch.setenv("SLURM_NNODES", "2")
    cmd = stage_command(config(name="slurm", num_processes=8), tmp_path, "train", 1, tmp_path / "ds.json")
    assert cmd[:5] == ["srun", "--overlap", "--nodes=2", "--ntasks-per-node=1", "--kill-on-bad-exit=1"]
    script = cmd[-1]
    assert script.startswith('export MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1); ')
    assert '--num_processes 16 --num_machines 2' in script
    assert '--machine_rank "$SLURM_NODEID" --main_process_ip "$MASTER_ADDR"' in script
    assert "--deepspeed_multinode_launcher standard" in script


@pytest.mark.e2e
def test_local_launcher_zero3_on_two_cpu_processes(tmp_path, model_cache):
    run_dir = tmp_path / "run"
    ok(drift_exp(run_dir, *LOCAL))
    it = run_dir / "iter_1"
    for stage in ("generate", "train"):
        assert (it / f"{stage}.log").read_text().startswith("$ ")  # ran as a child process
    assert "--num_processes 2" in (it / "train.log").read_text().splitlines()[0]
    train = json.loads((it / "metrics.json").read_text())["train"]
    assert train["world_size"] == 2 and train["deepspeed"]
    # the authors' batch: 4 pairs per device, no accumulation, effective 4 x world size
    assert (train["per_device_batch_size"], train["gradient_accumulation_steps"], train["effective_batch_size"]) == (
        4, 1, 8)
    assert train["parameters_held_whole_on_rank0"] == 0  # ZeRO-3: every parameter partitioned
    assert 0 < train["parameter_shard_on_rank0"] < train["parameters"]
    losses = [h["loss"] for h in train["history"]]
    assert len(set(losses)) > 1  # the loss moves
    # the gathered 16-bit checkpoint loads in a fresh process and differs from the starting weights
    probe = ("import sys, torch; from transformers import AutoModelForCausalLM as M;"
             "a = M.from_pretrained(sys.argv[1]).state_dict(); b = M.from_pretrained(sys.argv[2]).state_dict();"
             "print(sum(int(not torch.equal(a[k], b[k])) for k in a), len(a))")
    out = subprocess.run([sys.executable, "-c", probe, str(it / "checkpoint"), train["policy_start"]],
                         capture_output=True, text=True, timeout=300, env=dict(os.environ, HF_HUB_OFFLINE="1"))
    changed, total = map(int, out.stdout.split())
    assert total > 0 and changed > 0, out.stderr[-2000:]


@pytest.mark.e2e
def test_failing_child_stops_the_run_and_a_rerun_resumes(tmp_path, model_cache):
    run_dir = tmp_path / "run"
    proc = drift_exp(run_dir, *LOCAL, kill_at="iter_1/train@1")  # the training child dies at step 1
    assert proc.returncode == 2
    out = proc.stdout + proc.stderr
    assert "iter_1/train failed: its process exited with code" in out  # the child's error, surfaced
    assert "rerun the same command" in out
    done = json.loads((run_dir / "iter_1" / "DONE").read_text())
    assert set(done) == {"requests", "generate", "pairs"}
    before = mtimes(run_dir, markers=False)
    ok(drift_exp(run_dir, *LOCAL))
    after = mtimes(run_dir, markers=False)
    for name in ("iter_1/requests.jsonl", "iter_1/completions.jsonl", "iter_1/pairs.jsonl",
                 "iter_0/checkpoint/model.safetensors"):
        assert after[name] == before[name], name  # not recomputed
    assert (run_dir / "iter_1" / "checkpoint" / "model.safetensors").exists()


@pytest.mark.e2e
def test_precomputed_reference_under_zero3(tmp_path, model_cache):
    # TRL 1.16 computes the reference log-probs before training under DeepSpeed (trl #2985 fixed):
    # at step 0 the policy equals that reference, so the sigmoid loss is ln 2.
    run_dir = tmp_path / "run"
    ok(drift_exp(run_dir, *LOCAL, "trainer.ref_mode=precomputed", "trainer.rpo_alpha=0"))
    for k in (0, 1):
        train = json.loads((run_dir / f"iter_{k}" / "metrics.json").read_text())["train"]
        assert train["reference_mode"] == "precomputed" and train["world_size"] == 2
        assert abs(train["history"][0]["loss"] - math.log(2)) < 1e-4


# The world-size-8 rehearsal of issue 9: a paper sweep's own job (table3, drift-controlled) on the tiny model,
# 8 training processes under accelerate + DeepSpeed ZeRO-3 over gloo, the authors' batch (4 x 8 = 32).
REHEARSAL = ["+sweep=table3", "+cell=drift-controlled", "model=tiny", "data=sample", "generation=hf", "launcher=local",
             "launcher.num_processes=8", "eval=default", "iterations=1"]
# Small enough for a few minutes on 2 cores: few records and short generations; everything else is the sweep's.
REHEARSAL_SMALL = ["setting.max_records=8", "generation.max_new_tokens=16", "eval.max_new_tokens=16", "eval.limit=4",
                   "trainer.max_length=256", "trainer.warm_start_epochs=1"]


@pytest.mark.e2e
def test_world_size_eight_rehearsal_of_a_sweep_job(tmp_path, model_cache):
    run_dir = tmp_path / "run"
    env = dict(os.environ, WANDB_MODE="offline")
    cmd = [sys.executable, "-m", "drift_exp", f"hydra.run.dir={run_dir}", *REHEARSAL, *REHEARSAL_SMALL]
    ok(subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800))
    for k in (0, 1):
        train = json.loads((run_dir / f"iter_{k}" / "metrics.json").read_text())["train"]
        assert (train["world_size"], train["per_device_batch_size"], train["gradient_accumulation_steps"],
                train["effective_batch_size"]) == (8, 4, 1, 32)
        assert train["deepspeed"] and train["parameters_held_whole_on_rank0"] == 0
        assert 0 < train["parameter_shard_on_rank0"] < train["parameters"] / 4  # partitioned 8 ways
        ds = json.loads((run_dir / f"iter_{k}" / "ds_config.json").read_text())
        assert (ds["train_batch_size"], ds["train_micro_batch_size_per_gpu"]) == (32, 4)
        assert "--num_processes 8" in (run_dir / f"iter_{k}" / "train.log").read_text().splitlines()[0]
    cfg = OmegaConf.load(run_dir / "config.yaml")
    # the sweep's own trainer settings (Appendix D), untouched by the rehearsal's overrides, except the learning
    # rate: model=tiny brings its own (1e-4, drift_exp/conf/model/tiny.yaml; the paper's 5e-7 barely moves it)
    assert (cfg.trainer.learning_rate, cfg.trainer.optim, cfg.trainer.beta, cfg.trainer.global_batch_size) == (
        1.0e-4, "rmsprop", 0.1, None)
    assert cfg.run.sweep_name == "table3" and cfg.launcher.num_processes == 8
    gen = json.loads((run_dir / "iter_1" / "generate_stats.json").read_text())
    assert gen["requests"] == 8 and gen["replicas"] == 1 and gen["output_tokens"] > 0
    assert json.loads((run_dir / "iter_1" / "metrics.json").read_text())["eval"]["proxy"]["n"] == 4
