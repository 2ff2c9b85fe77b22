"""`python -m drift_exp.plan`: every shipped sweep passes on 8 x 80 GB, the known-bad settings fail naming their
key, and the same checks stop a run before anything is read or written."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from drift_exp.plan import compose, main
from drift_exp.sweeps import sweep_files

from .conftest import ROOT

NODE = ["launcher.num_processes=8", "launcher.gpu_memory_gb=80"]
JOBS = {"table3": 10, "table4": 6, "table6": 5, "figure2": 3, "table7": 3}


@pytest.fixture(autouse=True)
def judge_env(monkeypatch):
    # Judge keys are checked from the environment; leave none set so the result does not depend on it.
    for key in ("OPENAI_API_KEY", "OPENAI_CLIENT_CONFIG_PATH", "DRIFT_JUDGE_BASE_URL"):
        monkeypatch.delenv(key, raising=False)


@pytest.mark.e2e  # composes all 27 jobs: ~30 s on 2 cores
@pytest.mark.parametrize("name", sorted(sweep_files()))
def test_every_shipped_sweep_passes_on_eight_80gb_gpus(name, capsys):
    assert main([f"+sweep={name}", *NODE]) == 0, capsys.readouterr().out
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith(("wildfeedback", "ultrafeedback"))]
    assert all(r.split()[-1] == "yes" for r in rows)
    assert len(rows) == JOBS[name]
    assert all("4x1x8=32" in r for r in rows)  # the authors' batch: 4 per device, no accumulation, 8 GPUs
    assert "all" in out and "pass" in out


def test_table3_layout_and_memory(capsys):
    main(["+sweep=table3", *NODE])
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines() if line.startswith("wildfeedback")}
    assert "8x TP1" in rows["wildfeedback-qwen7b-drift-full-s42"]  # 28 heads: never TP 8; 8 replicas instead
    assert "8x TP1" in rows["wildfeedback-qwen14b-drift-full-s42"]


@pytest.mark.parametrize(("overrides", "key"), [
    (["model=qwen7b", "generation=vllm", "generation.tensor_parallel_size=8", *NODE],
     "generation.tensor_parallel_size"),
    (["model=qwen7b", "trainer.global_batch_size=4", "launcher=local", *NODE], "trainer.global_batch_size"),
    (["model=qwen14b", "generation=vllm", "launcher=local", "launcher.num_processes=8", "launcher.gpu_memory_gb=24"],
     "launcher.gpu_memory_gb"),
    (["model=qwen7b", "generation=vllm", "generation.replicas=3", *NODE], "generation.replicas"),
    (["data.source=/no/such/file.json", *NODE], "data.source"),
])
def test_bad_settings_fail_naming_the_key(overrides, key, capsys):
    assert main(overrides) == 1
    problems = capsys.readouterr().out.split("problem(s):", 1)[1]
    assert f": {key}: " in problems


def test_the_issue_commands_fail_naming_the_key(capsys):
    # Exactly the three commands the issue lists (default generation/launcher groups).
    for overrides, key in ((["model=qwen7b", "generation.tensor_parallel_size=8"], "generation.tensor_parallel_size"),
                           (["trainer.global_batch_size=4", "launcher.num_processes=8"], "trainer.global_batch_size"),
                           (["model=qwen14b", "launcher.gpu_memory_gb=24"], "launcher.gpu_memory_gb")):
        assert main(overrides) == 1, overrides
        assert f": {key}: " in capsys.readouterr().out.split("problem(s):", 1)[1]


def test_judge_key_is_required_when_the_judge_runs(monkeypatch, capsys):
    monkeypatch.setenv("DRIFT_JUDGE_BASE_URL", "http://judge.invalid/v1")
    assert main(["+sweep=table7", *NODE]) == 1
    assert ": eval.judge.api_key_env: " in capsys.readouterr().out
    monkeypatch.setenv("OPENAI_API_KEY", "x")
    assert main(["+sweep=table7", *NODE]) == 0


def test_multirun_overrides_expand_like_hydra():
    jobs = compose(["-m", "model=qwen7b,qwen14b", "seed=1,2"])
    assert len(jobs) == 4 and {c.model.name for _, c in jobs} == {"qwen7b", "qwen14b"}


@pytest.mark.e2e
def test_a_run_stops_at_preflight_before_writing(tmp_path):
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "drift_exp", f"hydra.run.dir={run_dir}", "launcher=local",
           "launcher.num_processes=3", "trainer.global_batch_size=4", "tracking.mode=disabled"]
    proc = subprocess.run(cmd, cwd=ROOT, env=dict(os.environ), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout + proc.stderr  # Hydra's job logging goes to stdout
    assert "preflight found problems" in out and "trainer.global_batch_size" in out
    assert not (run_dir / "data").exists() and not (run_dir / "config.yaml").exists()
    proc = subprocess.run([*cmd, "run.preflight=false", "run.stop_after=prepare"], cwd=ROOT, env=dict(os.environ),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]  # skipped: the batch problem surfaces only at training
    assert (run_dir / "data" / "records.jsonl").exists()
