"""`python -m drift_exp.plan`: every shipped sweep passes on 8 x 80 GB, the known-bad settings fail naming their
key, and the same checks stop a run before anything is read or written."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from drift_exp import plan
from drift_exp.plan import compose, main
from drift_exp.sweeps import sweep_files

from .conftest import ROOT

NODE = ["launcher.num_processes=8", "launcher.gpu_memory_gb=80"]
JOBS = {"table3": 10, "table4": 6, "table6": 5, "figure2": 3, "table7": 3}


@pytest.fixture(autouse=True)
def cluster_disk(monkeypatch):
    """The disk the jobs would write to: a cluster's shared file system (10 TB free), not this machine's (a test of
    the disk check sets its own)."""
    monkeypatch.setattr(plan, "free_bytes", lambda root: 10e12)


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


# ------------------------------------------------------------------------- the plan's verdict is the run's


def problems_of(out: str) -> str:
    return out.split("problem(s):", 1)[1] if "problem(s):" in out else ""


@pytest.mark.parametrize(("override", "message"), [
    ("iterations=1000000", "iterations must be <= 100"),
    ("method.n_samples=100000000", "method.n_samples must be <= 64"),
    ("setting.max_records=100000000000", "setting.max_records must be <= 10,000,000"),
    ("generation.max_new_tokens=10000000", "generation.max_new_tokens must be <= 131,072"),
    ("trainer.max_length=1000000", "trainer.max_length must be <= 131,072"),
    ("trainer.micro_batch_size=100000", "trainer.micro_batch_size must be <= 1,024"),
])
def test_what_the_run_refuses_fails_the_plan(override, message, capsys):
    # The run refuses these in its config check (plan.validate, the first thing __main__ does); the plan fails
    # the job with the same message instead of printing a warning and "all jobs pass".
    assert main(["model=qwen7b", override, *NODE]) == 1
    out = capsys.readouterr().out
    assert message.split(" must")[1] in problems_of(out) and "pass." not in out
    from drift_exp.errors import ConfigError

    (_, cfg), = compose(["model=qwen7b", override])
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        plan.validate(cfg, environment=False)


def test_a_disk_shortfall_fails_the_plan_and_the_run(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(plan, "free_bytes", lambda root: 20e9)  # 20 GB free; qwen7b keeps 3 x 15 GB
    assert main(["model=qwen7b", *NODE]) == 1
    assert ": hydra.run.dir: the job keeps 3 checkpoints, ~46 GB" in problems_of(capsys.readouterr().out)
    (_, cfg), = compose(["model=qwen7b", *NODE])
    job = plan.check(cfg, tmp_path / "run", runtime=True)  # the run's preflight: the same problem
    assert any(key == "hydra.run.dir" for key, _ in job.problems)
    monkeypatch.setattr(plan, "free_bytes", lambda root: 100e9)  # one job fits, three together do not
    assert main(["-m", "model=qwen7b", "seed=1,2,3", *NODE]) == 1
    assert "sweep: hydra.sweep.dir: all jobs together keep ~137 GB" in capsys.readouterr().out


def test_table3_wall_times_include_the_fixed_costs(capsys):
    assert main(["+sweep=table3", *NODE]) == 0
    out = capsys.readouterr().out
    assert "fixed h" in out and "wall h" in out
    assert "vLLM engine start" in out and "ZeRO-3 set-up" in out and "characters per token" in out
    rows = {plan.experiment_name(cfg): plan.check(cfg).row for _, cfg in compose(["+sweep=table3", *NODE])}
    assert len(rows) == 10
    for name, row in rows.items():
        assert 0 < float(row["fixed h"]) < float(row["wall h"]), (name, row)
        assert row["lengths"] == "1500c assumed"  # microsoft/WildFeedback is a hub id: not read by the plan
    # The 7B DRIFT job (full setting) on 8 x 80 GB: the fixed costs alone are over half an hour, more than the
    # decoding; with the WildBench judge served (as for the paper's numbers) the job is in the realistic 1.5-3 h.
    drift7 = rows["wildfeedback-qwen7b-drift-full-s42"]
    assert float(drift7["fixed h"]) >= 0.5 and float(drift7["wall h"]) > 1.0, drift7


def test_table3_wall_time_with_the_judge_served(monkeypatch):
    monkeypatch.setenv("DRIFT_JUDGE_BASE_URL", "http://judge.invalid/v1")
    monkeypatch.setenv("OPENAI_API_KEY", "x")
    jobs = {plan.experiment_name(cfg): cfg for _, cfg in compose(["+sweep=table3", *NODE])}
    row = plan.check(jobs["wildfeedback-qwen7b-drift-full-s42"]).row
    assert 1.5 <= float(row["wall h"]) <= 3.0, row


def test_expected_lengths_come_from_the_data_where_it_can_be_read():
    (_, cfg), = compose(["data=sample"])
    got = plan.expected_lengths(cfg, "dsat")
    assert got.source == "measured on sample" and got.reply > 0
    from drift_exp.data.load import load_records

    records, _ = load_records(cfg.data)
    dsat = [r for r in records if r.kind == "dsat"]
    assert got.reply == pytest.approx(sum(len(r.rejected) for r in dsat) / len(dsat))
    (_, hub), = compose(["data=wildfeedback"])
    assert plan.expected_lengths(hub, "dsat").source == "assumed"  # a hub id is not downloaded by the plan


def test_the_plan_reads_only_small_regular_data(tmp_path):
    import shutil as sh

    from drift_exp.data.sources import SAMPLE_DIR

    local = tmp_path / "sat_dsat_annotation.json"
    sh.copy(SAMPLE_DIR / "sat_dsat_annotation.json", local)
    (_, cfg), = compose(["data=wildfeedback", f"data.source={local}"])
    assert plan.expected_lengths(cfg, "dsat").source == f"measured on {local}"
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    assert plan._size_within(fifo, 10**9) is None  # never opened: reading a FIFO would block
    (_, cfg), = compose(["data=wildfeedback", f"data.source={fifo}"])
    assert plan.expected_lengths(cfg, "dsat").source == "assumed"
    for i in range(300):
        (tmp_path / "many" / f"f{i}").parent.mkdir(exist_ok=True)
        (tmp_path / "many" / f"f{i}").write_text("x")
    assert plan._size_within(tmp_path / "many", 10**9) is None  # a large folder is not walked to the end


def test_the_disk_checked_is_where_the_sweep_would_write(tmp_path, monkeypatch):
    """hydra.sweep.dir moves the disk check to that file system (a cluster's shared one), as the sweep would."""
    roots = []
    monkeypatch.setattr(plan, "free_bytes", lambda root: roots.append(root) or 10e12)
    assert main(["+sweep=table7", "launcher.num_processes=8", "launcher.gpu_memory_gb=80",
                 f"hydra.sweep.dir={tmp_path / 'shared' / 'table7'}"]) == 0
    assert roots and set(roots) == {tmp_path}
