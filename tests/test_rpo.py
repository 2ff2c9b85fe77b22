"""The rpo_alpha dimension: `+rpo=dpo,rpo` runs both readings of the NLL weight into distinct run directories,
and the report puts them in distinct, labelled rows beside the same paper numbers."""

import csv
import json
import os
import subprocess
import sys

import yaml

from drift_exp.report import build_report
from drift_exp.report.rpo import suffix, unlabelled
from drift_exp.sweeps import compose_jobs

from .conftest import ROOT

CPU = ["model=tiny", "data=sample", "generation=hf", "launcher=inline", "eval=default"]


def test_the_group_sets_the_weight_and_the_directory():
    jobs = compose_jobs("table7", ["+rpo=dpo,rpo", "+cell=drift-full", *CPU])
    got = sorted((cfg.trainer.rpo_alpha, cfg.hydra.sweep.subdir) for _, cfg in jobs)
    assert got == [(0.0, "sample-tiny-drift-full-s42+dpo"), (0.001, "sample-tiny-drift-full-s42")]


def test_a_real_multirun_of_both_readings_writes_two_run_directories(tmp_path):
    cmd = [sys.executable, "-m", "drift_exp", "-m", "+sweep=table7", "+rpo=dpo,rpo", "+cell=drift-full", *CPU,
           "run.stop_after=prepare", "tracking.mode=disabled"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    sweep = tmp_path / "outputs" / "sweeps" / "table7"
    runs = {p.name: yaml.safe_load((p / "config.yaml").read_text())["trainer"]["rpo_alpha"]
            for p in sweep.iterdir() if p.is_dir()}
    assert runs == {"sample-tiny-drift-full-s42": 0.001, "sample-tiny-drift-full-s42+dpo": 0.0}


def test_labels():
    assert (suffix(0.001), suffix(0.0), suffix(0), suffix(0.01), suffix(None)) == ("", "+dpo", "+dpo", "+rpo0.01", "")
    assert [unlabelled(m) for m in ("drift+dpo", "seed+rpo0.01", "drift", "iterdpo-unguided")] == [
        "drift", "seed", "drift", "iterdpo-unguided"]


def write_run(root, name: str, alpha: float, task: float) -> None:
    run = root / name
    cfg = {"data": {"name": "wildfeedback"}, "model": {"name": "qwen7b"}, "method": {"name": "drift"},
           "setting": {"name": "full"}, "seed": 42, "trainer": {"rpo_alpha": alpha}}
    for k in (0, 1):
        (run / f"iter_{k}").mkdir(parents=True)
        metrics = {"iteration": k, "eval": {"wildbench": {"task_macro": task + k}}}
        (run / f"iter_{k}" / "metrics.json").write_text(json.dumps(metrics))
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))


def test_the_report_shows_each_reading_in_its_own_labelled_row(tmp_path):
    sweep = tmp_path / "table3"
    write_run(sweep, "wildfeedback-qwen7b-drift-full-s42", 0.001, 50.0)
    write_run(sweep, "wildfeedback-qwen7b-drift-full-s42+dpo", 0.0, 52.0)
    report = build_report([sweep], tmp_path / "out", log_to_wandb=False)
    with open(report.csv, newline="") as f:
        rows = {(r["method"], r["iteration"]): r for r in csv.DictReader(f) if r["runs"] != ""}
    assert set(rows) == {("seed", "0"), ("seed+dpo", "0"), ("drift", "1"), ("drift+dpo", "1")}
    rpo, dpo = rows[("drift", "1")], rows[("drift+dpo", "1")]
    assert (float(rpo["rpo_alpha"]), float(dpo["rpo_alpha"])) == (0.001, 0.0)
    assert (float(rpo["task"]), float(dpo["task"])) == (51.0, 53.0)
    # Both beside Table 3's DRIFT full iter1 (50.61): the paper does not say which reading it used.
    assert rpo["task_paper"] == dpo["task_paper"] == "50.61"
    text = report.markdown.read_text()
    assert "trainer.rpo_alpha 0, 0.001" in text and "+dpo = 0" in text
