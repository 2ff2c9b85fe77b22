"""The comparison view built in code (drift_exp.dashboards): its specification round-trips through wandb-workspaces'
own models, it shows what the paper compares, and every key a panel names is a key the runs logged."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from drift_exp.names import WANDB_ITERATION, WANDB_PAIRS_TABLE, WANDB_TRAIN_STEP
from drift_exp.report.wandb_offline import find_offline_runs, read_offline_run

from .conftest import ROOT
from .helpers import wb, write_experiment_run, write_run

pytest.importorskip("wandb_workspaces", reason='the dashboards extra: pip install -e ".[dashboards]"')

from drift_exp.dashboards import (  # noqa: E402
    REPORT_FILE,
    WORKSPACE_FILE,
    build_report,
    build_workspace,
    load_spec,
    main,
    missing_keys,
    named_keys,
    read_sweep,
    spec_json,
)


def write_config(run: Path, sweep: str) -> None:
    (run / "config.yaml").write_text(
        f"method: {{name: {run.name.split('-')[2]}}}\ndata: {{name: {run.name.split('-')[0]}}}\n"
        f"model: {{name: {run.name.split('-')[1]}}}\nsetting: {{name: {run.name.split('-')[3]}}}\nseed: 42\n"
        f"run: {{sweep_name: {sweep}}}\ntracking: {{project: drift_exp, entity: null}}\n")


@pytest.fixture
def sweep_dir(tmp_path) -> Path:
    root = tmp_path / "table3"
    for method, setting in (("drift", "full"), ("spin", "controlled")):
        run = write_run(root, "wildfeedback", "qwen7b", method, setting,
                        {0: {"wildbench": wb(49.0)}, 1: {"wildbench": wb(51.0), "proxy": {"reward_mean": 0.1}}})
        write_config(run, "table3")
    return root


def test_the_specification_round_trips_through_the_librarys_model(sweep_dir, monkeypatch, capsys):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(sweep_dir / "no-netrc"))
    assert main([str(sweep_dir), "--entity", "team"]) == 0
    said = capsys.readouterr().out
    assert "not published" in said and f"WANDB_API_KEY=<key> python -m drift_exp.dashboards {sweep_dir}" in said
    for name in (WORKSPACE_FILE, REPORT_FILE):
        written = json.loads((sweep_dir / "report" / name).read_text())
        loaded = load_spec(sweep_dir / "report" / name)  # the library's Workspace / Report object
        assert spec_json(loaded) == written, name
    # The keys the panels name read the same from the objects built and from the ones read back.
    for name, built in ((WORKSPACE_FILE, build_workspace(read_sweep(sweep_dir))),
                        (REPORT_FILE, build_report(read_sweep(sweep_dir)))):
        assert named_keys(load_spec(sweep_dir / "report" / name)) == named_keys(built)
        assert "eval/wildbench/task_macro" in named_keys(built)["experiments"]
    workspace = load_spec(sweep_dir / "report" / WORKSPACE_FILE)
    assert (workspace.entity, workspace.project, workspace.name) == ("team", "drift_exp", "drift_exp table3")
    report = load_spec(sweep_dir / "report" / REPORT_FILE)
    assert type(workspace).__name__ == "Workspace" and type(report).__name__ == "Report"


def test_the_view_shows_what_the_paper_compares(sweep_dir):
    sweep = read_sweep(sweep_dir)
    workspace = build_workspace(sweep)
    settings = workspace.runset_settings
    assert "sweep:table3" in str(settings.filters) and "JobType" in str(settings.filters)
    assert [(type(g).__name__, g.name) for g in settings.groupby] == [("Config", "method.name"),
                                                                      ("Config", "setting.name")]
    assert "summary:eval/wildbench/task_macro" in settings.pinned_columns
    panels = {s.name: s.panels for s in workspace.sections}
    fig2 = panels["Figure 2: evaluation per iteration"]
    # WildBench and the proxy were evaluated (metrics.json), AlpacaEval was not: no panel for it.
    assert [(p.x, p.y) for p in fig2] == [(WANDB_ITERATION, ["eval/wildbench/task_macro"]),
                                          (WANDB_ITERATION, ["eval/proxy/reward_mean"])]
    fig5 = panels["Figure 5: training dynamics"]
    assert (WANDB_TRAIN_STEP, ["train/rewards/chosen", "train/rewards/rejected"]) in [(p.x, p.y) for p in fig5]
    signal = panels["Section 5: gradient signal"]
    assert {p.x for p in signal} == {WANDB_TRAIN_STEP, WANDB_ITERATION}
    assert any("train/signal/sigma_mean" in p.y for p in signal) and any("signal/sigma_mean" in p.y for p in signal)
    assert any(getattr(p, "table_name", None) == WANDB_PAIRS_TABLE for p in panels["Pairs"])
    report = build_report(sweep)
    grids = [b for b in report.blocks if type(b).__name__ == "PanelGrid"]
    assert [g.runsets[0].name for g in grids] == ["experiments"] * 5 + ["report"]  # no coverage analysis here
    assert grids[0].runsets[0].groupby == ["config.method.name", "config.setting.name"]
    assert {"tables/results"} == named_keys(report)["report"]


def test_keys_the_panels_name_are_checked_against_the_runs(tmp_path, monkeypatch):
    """A run in names.py's layout has every key of the experiments' panels but the ones it did not log."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    root = tmp_path / "table3"
    run = write_run(root, "wildfeedback", "qwen7b", "drift", "full", {1: {"wildbench": wb(51.0)}})
    write_config(run, "table3")
    logged = read_offline_run(write_experiment_run(tmp_path / "wandb-runs"))
    sweep = read_sweep(root)
    sweep.available = logged.keys
    missing = missing_keys(build_workspace(sweep), [logged])["experiments"]
    # That run logged no pairs table, no section 5 numbers and no pair counts; everything else it has.
    assert missing == {WANDB_PAIRS_TABLE, "stage/pairs/pairs", "stage/pairs/skipped_empty_sample",
                       *(f"{p}{k}" for p in ("train/signal/", "signal/")
                         for k in ("sigma_mean", "frac_sigma_ge_tau", "margin_mean", "margin_q10", "margin_q90"))}
    # Its held-out numbers get a panel since the run has them; the report's section is left out (no report run).
    names = [s.name for s in build_workspace(sweep).sections]
    assert "Held-out preference pairs" in names
    assert "report" not in named_keys(build_report(sweep))


def test_without_the_library_the_command_says_how_to_install_it(sweep_dir, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "wandb_workspaces", None)
    monkeypatch.setitem(sys.modules, "wandb_workspaces.reports.v2", None)
    assert main([str(sweep_dir)]) == 2
    err = capsys.readouterr().err
    assert "wandb-workspaces" in err and ".[dashboards]" in err and "Traceback" not in err


def test_a_folder_without_runs_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main([str(tmp_path / "empty")]) == 2
    assert "no run directory" in capsys.readouterr().err


# ---------------------------------------------------------------- a CPU sweep, its report and its dashboards

CPU = ["model=tiny", "data=sample", "generation=hf", "launcher=inline", "eval=default", "iterations=1",
       "generation.max_new_tokens=16", "trainer.max_length=256", "trainer.warm_start_epochs=1"]


@pytest.mark.e2e
def test_every_key_a_panel_names_is_in_the_offline_runs_of_a_cpu_sweep(tmp_path):
    """The contract with the tracker (names.py's WANDB_* layout): the runs of a CPU sweep, read back from their
    offline files, hold every key the workspace and the report name."""
    sweep_dir = tmp_path / "table3"
    env = dict(os.environ, WANDB_MODE="offline")
    env.pop("WANDB_API_KEY", None)
    cmd = [sys.executable, "-m", "drift_exp", "-m", "+sweep=table3", *CPU, "+cell=spin-controlled,drift-full",
           f"hydra.sweep.dir={sweep_dir}", f"eval.base_cache_dir={tmp_path / 'base_cache'}"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    for command in (["drift_exp.report", str(sweep_dir)], ["drift_exp.dashboards", str(sweep_dir)]):
        proc = subprocess.run([sys.executable, "-m", *command], cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=600)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    runs = find_offline_runs(sweep_dir)
    experiments = [r for r in runs if r.job_type not in ("report", "coverage")]
    assert len(experiments) == 2  # one W&B run per experiment
    workspace, report = (load_spec(sweep_dir / "report" / name) for name in (WORKSPACE_FILE, REPORT_FILE))
    assert missing_keys(workspace, runs) == {} and missing_keys(report, runs) == {}
    assert named_keys(report).keys() == {"experiments", "report"}
    for run in experiments:
        assert run.step_metric("eval/proxy/reward_mean") == WANDB_ITERATION
        assert run.step_metric("train/rewards/chosen") == WANDB_TRAIN_STEP
        assert [k for k, _ in run.column("eval/proxy/reward_mean")] == [0, 1]
    assert "warning" not in proc.stderr
