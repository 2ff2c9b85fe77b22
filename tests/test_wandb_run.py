"""One W&B run per experiment, written by the orchestrator alone, on the inline and the local launcher.

Real W&B offline on CPU: the run's `.wandb` transaction log is read back with the wandb CLI's own reader
(`wandb leet inspect --json`: one JSON record per line, history rows included), so the test sees what a
`wandb sync` would upload, from that one folder alone.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import ROOT

pytestmark = pytest.mark.e2e

SMALL = ["setting.max_records=4", "data.holdout=1", "iterations=1", "generation.max_new_tokens=8", "eval.limit=2",
         "eval.max_new_tokens=8", "trainer.max_length=256", "trainer.warm_start_epochs=1"]
LAUNCHERS = {
    "inline": ["launcher=inline"],
    # training and generation as child processes, the training curves tailed from iter_k/train_log.jsonl
    "local": ["launcher=local", "launcher.num_processes=1", "launcher.deepspeed=false"],
}


def run(run_dir: Path, *overrides: str) -> None:
    env = dict(os.environ, WANDB_MODE="offline")
    env.pop("DRIFT_EXP_KILL_AT", None)
    proc = subprocess.run([sys.executable, "-m", "drift_exp", f"hydra.run.dir={run_dir}", *SMALL, *overrides],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]


def records(folder: Path) -> list[dict]:
    """Every record of an offline run's .wandb log, as the wandb CLI reads it."""
    out = subprocess.run(["wandb", "leet", "inspect", "--json", str(folder)], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return [json.loads(line) for line in out.stdout.splitlines() if line.strip()]


def history(folder: Path) -> list[dict]:
    return [r["history"]["item"] for r in records(folder) if r.get("type") == "history"]


@pytest.fixture(scope="module", params=sorted(LAUNCHERS))
def experiment(request, tmp_path_factory, model_cache):
    run_dir = tmp_path_factory.mktemp(f"wandb-{request.param}") / "run"
    run(run_dir, *LAUNCHERS[request.param])
    return request.param, run_dir


def test_one_folder_holds_the_whole_experiment(experiment):
    launcher, run_dir = experiment
    (folder,) = (run_dir / "wandb").glob("offline-run-*")  # exactly one writer, one folder
    assert folder.name.endswith("-" + (run_dir / "wandb_id").read_text().strip())
    assert not list(run_dir.glob("iter_*/wandb_id"))
    rows = history(folder)

    # the training curves of both iterations, on one cumulative step axis
    train = [r for r in rows if "train/loss" in r]
    log_lines = {k: [json.loads(x) for x in (run_dir / f"iter_{k}" / "train_log.jsonl").read_text().splitlines()]
                 for k in (0, 1)}
    for k in (0, 1):
        mine = [r for r in train if r["train/iteration"] == k]
        assert [r["train/loss"] for r in mine] == [x["loss"] for x in log_lines[k] if "loss" in x]
        assert [r["train/iteration_step"] for r in mine] == [x["step"] for x in log_lines[k] if "loss" in x]
        assert "train/rewards/margins" in mine[0] and "train/signal/sigma_mean" in mine[0]
    steps0 = json.loads((run_dir / "iter_0" / "metrics.json").read_text())["train"]["steps"]
    assert [r["train/global_step"] for r in train] == [r["train/iteration_step"] + steps0 * r["train/iteration"]
                                                        for r in train]

    # the stage numbers, the section 5 summaries and the evaluation: history rows of their iteration
    def at(k: int, key: str):
        (value,) = [r[key] for r in rows if r.get("iteration") == k and key in r]
        return value

    metrics = {k: json.loads((run_dir / f"iter_{k}" / "metrics.json").read_text()) for k in (0, 1)}
    for k in (0, 1):
        assert at(k, "eval/proxy/reward_mean") == metrics[k]["eval"]["proxy"]["reward_mean"]
        assert at(k, "stage/train/steps") == metrics[k]["train"]["steps"]
        assert at(k, "signal/sigma_mean") == metrics[k]["train"]["signal"]["stage"]["sigma_mean"]
    assert at(1, "stage/requests/requests") == metrics[1]["requests"]["requests"] == 4
    assert at(1, "stage/generation/samples") == metrics[1]["generate"]["samples"]
    assert at(1, "stage/pairs/pairs") == metrics[1]["pairs"]["pairs"]
    # the pairs table (a table-file reference in the history row; the table itself under media/)
    (table,) = [r for r in rows if r.get("pairs/preview._type") == "table-file"]
    assert table["pairs/preview.nrows"] == min(5, metrics[1]["pairs"]["pairs"])
    assert (folder / "files" / table["pairs/preview.path"]).is_file()

    # the Base row in the summary, the metric definitions, the identity
    out = subprocess.run(["wandb", "leet", "inspect", "--summary", "--json", str(folder)], capture_output=True,
                         text=True, timeout=300)
    info = json.loads(out.stdout)
    assert info["state"] == "finished" and "base/eval/proxy/reward_mean" in info["summary"]
    recs = records(folder)
    metric_defs = {(m["metric"].get("glob_name") or m["metric"].get("name"), m["metric"].get("step_metric"))
                   for m in recs if m.get("type") == "metric"}
    assert {("iteration", None), ("eval/*", "iteration"), ("stage/*", "iteration"), ("signal/*", "iteration"),
            ("heldout/*", "iteration"), ("train/global_step", None), ("train/*", "train/global_step")} <= metric_defs
    (run_record,) = [r["run"] for r in recs if r.get("type") == "run"]
    variant = ("data.holdout_1+generation.max_new_tokens_8+setting.max_records_4+trainer.max_length_256"
               "+trainer.warm_start_epochs_1")
    assert run_record["display_name"] == f"sample-tiny-drift-controlled-s42+{variant}"
    assert run_record["run_group"] == f"sample-tiny-drift-controlled+{variant}"  # without the seed
    assert run_record["job_type"] == "experiment"
    assert run_record["tags"][:5] == ["method:drift", "data:sample", "model:tiny", "setting:controlled", "seed:42"]

    if launcher == "local":  # children ran with W&B disabled: no folder, no wandb files of theirs
        assert (run_dir / "iter_1" / "train.log").read_text().startswith("$ ")
        assert not list(run_dir.glob("iter_*/wandb"))


@pytest.mark.parametrize("experiment", ["inline"], indirect=True)  # one launcher is enough to show the resume
def test_a_resumed_experiment_logs_into_the_same_run(experiment):
    launcher, run_dir = experiment
    before = sorted((run_dir / "wandb").glob("offline-run-*"))
    run(run_dir, *LAUNCHERS[launcher])  # nothing left to do: nothing logged, no folder
    assert sorted((run_dir / "wandb").glob("offline-run-*")) == before
    run(run_dir, *LAUNCHERS[launcher], "iterations=2")  # one more iteration: a second folder, same run id
    folders = sorted((run_dir / "wandb").glob("offline-run-*"))
    assert len(folders) == 2 and len({f.name.rsplit("-", 1)[1] for f in folders}) == 1
    rows = history(folders[1])
    assert {r["iteration"] for r in rows if "iteration" in r} == {2}
    steps = sum(json.loads((run_dir / f"iter_{k}" / "metrics.json").read_text())["train"]["steps"] for k in (0, 1))
    assert min(r["train/global_step"] for r in rows if "train/loss" in r) == steps + 1
