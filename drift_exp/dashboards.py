"""`python -m drift_exp.dashboards SWEEP_DIR`: the comparison view of a sweep, built in code as a W&B workspace and
a W&B Report (W&B's own library for them, `wandb-workspaces`: `pip install -e ".[dashboards]"`).

What they show, for the runs tagged `sweep:<name>` (one W&B run per experiment, names.py's WANDB_* layout):

- the Table 3/4 runs table: the sweep's experiments grouped by method and setting, the evaluation's columns;
- Figure 2: each evaluation number against `iteration`, a line per (method, setting) group;
- Figure 5: the DPO loss and the chosen and rejected rewards against train/global_step;
- section 5's gradient signal: the per-step train/signal/* and the per-iteration signal/* summaries;
- the pairs: the last iteration's pairs/preview table and the pair counts per iteration;
- the held-out preference numbers (heldout/*) where the runs have them;
- the report run's tables (tables/results, the paper's tables) and figures, when `python -m drift_exp.report`
  logged it; the coverage analysis's Figures 3-4 when one was logged for runs of the sweep.

Which evaluation panels there are follows from the runs' own metrics.json (a WildBench score only when WildBench
was run). Optional panels (held-out numbers, report, coverage) are added when the runs logged them: read from the
offline runs under the sweep folder, or through the W&B API with a key.

With a W&B API key the workspace and the report are saved and their URLs printed. Either way their
specification (the library's own models, `View` and `ReportViewspec`, as JSON) is written beside the report
(`<sweep>/report/wandb_workspace.json`, `wandb_report.json`); `load_spec` reads one back into the library's
objects. Without a key, the command says how to publish them.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from drift_exp.errors import UserError
from drift_exp.names import (
    WANDB_EVAL,
    WANDB_HELDOUT,
    WANDB_ITERATION,
    WANDB_PAIRS_TABLE,
    WANDB_SIGNAL,
    WANDB_STAGE,
    WANDB_TRAIN,
    WANDB_TRAIN_STEP,
)

INSTALL = 'pip install -e ".[dashboards]"  (or: pip install wandb-workspaces)'
WORKSPACE_FILE = "wandb_workspace.json"
REPORT_FILE = "wandb_report.json"
GROUP_BY = ("method.name", "setting.name")  # config keys the runs are grouped by (Table 3/4's rows)

# Figure 2's candidates: (W&B key, its metrics.json path, title); a panel for each one the runs evaluated.
EVAL_METRICS = (
    (f"{WANDB_EVAL}wildbench/task_macro", ("eval", "wildbench", "task_macro"), "WildBench task score"),
    (f"{WANDB_EVAL}wildbench/elo", ("eval", "wildbench", "elo"), "WB-Elo"),
    (f"{WANDB_EVAL}alpaca_eval/lc_win_rate", ("eval", "alpaca_eval", "lc_win_rate"), "AlpacaEval 2 LC win rate"),
    (f"{WANDB_EVAL}alpaca_eval/win_rate", ("eval", "alpaca_eval", "win_rate"), "AlpacaEval 2 win rate"),
    (f"{WANDB_EVAL}proxy/reward_mean", ("eval", "proxy", "reward_mean"), "proxy reward (eval reward model)"),
)
TRAIN_CURVES = (("DPO loss", [f"{WANDB_TRAIN}loss"]),
                ("chosen and rejected rewards", [f"{WANDB_TRAIN}rewards/chosen", f"{WANDB_TRAIN}rewards/rejected"]),
                ("reward margin", [f"{WANDB_TRAIN}rewards/margins"]))
# Section 5: sigma(-s) (the gradient weight), the share with sigma(-s) >= tau (Lemma 1's p_0) and the margin s.
SIGNAL = (("mean gradient weight sigma(-s)", ["sigma_mean"]),
          ("share of pairs with sigma(-s) >= tau", ["frac_sigma_ge_tau"]),
          ("implicit margin s (mean, 10% and 90% quantiles)", ["margin_mean", "margin_q10", "margin_q90"]))
PAIR_COUNTS = [f"{WANDB_STAGE}pairs/pairs", f"{WANDB_STAGE}pairs/skipped_empty_sample"]
REPORT_TABLE = "tables/results"  # drift_exp.report's run: its results table, the paper's under tables/paper/


class DashboardError(UserError):
    """The dashboards cannot be built; the message says why and what to do."""


def _library():
    try:
        import wandb_workspaces.reports.v2 as wr
        import wandb_workspaces.workspaces as ws
        from wandb_workspaces import expr
    except ImportError as err:
        raise DashboardError(f"the dashboards need W&B's wandb-workspaces library ({err}): {INSTALL}") from None
    return ws, wr, expr


@dataclass
class Panel:
    """One panel, independent of where it goes (a workspace section or a report's panel grid)."""

    kind: str  # line | table | media
    title: str
    keys: list[str]  # y metrics (line), the table key (table), media keys (media)
    x: str | None = None  # line: the x axis


@dataclass
class Section:
    name: str
    runs: str  # which runs it shows: experiments | report | coverage
    panels: list[Panel] = field(default_factory=list)
    text: str = ""  # the report's words above the panels


@dataclass
class Sweep:
    """What the dashboards are built from: the sweep's name, where its runs log and what they evaluated."""

    name: str
    folder: Path
    project: str
    entity: str | None
    records: list = field(default_factory=list)  # drift_exp.report Records of the run directories
    available: set[str] | None = None  # metric keys the runs logged (None: not known, assume every one)
    coverage: list[str] = field(default_factory=list)  # W&B run names of coverage analyses of these runs


def read_sweep(folder: Path, project: str | None = None, entity: str | None = None) -> Sweep:
    from drift_exp.report.collect import ReportError, collect_local

    folder = Path(folder)
    try:
        records = collect_local([folder])
    except ReportError as err:
        raise DashboardError(str(err)) from None
    sweeps = sorted({r.sweep for r in records if r.sweep})
    if len(sweeps) > 1:
        raise DashboardError(f"{folder}: runs of several sweeps ({', '.join(sweeps)}); name one sweep's folder")
    tracking = next((r.tracking for r in records if r.tracking), {})
    return Sweep(name=sweeps[0] if sweeps else folder.name, folder=folder,
                 project=project or tracking.get("project") or "drift_exp",
                 entity=entity or tracking.get("entity") or None, records=records)


def evaluated(records: Iterable) -> list[tuple[str, str]]:
    """(W&B key, title) of the evaluation numbers the runs' metrics.json hold."""
    from drift_exp.report.collect import value_at
    from drift_exp.report.tables import number

    records = list(records)
    return [(key, title) for key, path, title in EVAL_METRICS
            if any(number(value_at(r.metrics, path)) is not None for r in records)]


def has(sweep: Sweep, key: str) -> bool:
    return sweep.available is None or key in sweep.available


def sections(sweep: Sweep) -> list[Section]:
    """The comparison view, panel by panel (the same for the workspace and the report)."""
    evals = evaluated(sweep.records)
    out = [
        Section("Table 3/4: the sweep's runs by method and setting", "experiments", text=(
            f"The runs tagged sweep:{sweep.name}, grouped by method and setting; the columns are each "
            "experiment's last iteration. Every iteration's numbers beside the paper's are in the report's tables "
            "below.")),
        Section("Figure 2: evaluation per iteration", "experiments",
                [Panel("line", title, [key], x=WANDB_ITERATION) for key, title in evals],
                text="Each evaluation number against the iteration (0 = the warm start), a line per method and "
                     "setting (the mean over seeds where there are several)."),
        Section("Figure 5: training dynamics", "experiments",
                [Panel("line", title, keys, x=WANDB_TRAIN_STEP) for title, keys in TRAIN_CURVES],
                text="TRL's per-step logs against the optimizer step summed over the iterations."),
        Section("Section 5: gradient signal", "experiments",
                [Panel("line", f"{title}, per step", [f"{WANDB_TRAIN}signal/{k}" for k in keys], x=WANDB_TRAIN_STEP)
                 for title, keys in SIGNAL]
                + [Panel("line", f"{title}, per iteration", [f"{WANDB_SIGNAL}{k}" for k in keys], x=WANDB_ITERATION)
                   for title, keys in SIGNAL],
                text="The distribution of the implicit margin s and of the gradient weight sigma(-s) of the pairs "
                     "(Lemma 1), per logging step and per training stage."),
        Section("Pairs", "experiments",
                [Panel("table", "the last iteration's pairs (pairs/preview)", [WANDB_PAIRS_TABLE]),
                 Panel("line", "pairs built and empty samples skipped", PAIR_COUNTS, x=WANDB_ITERATION)],
                text="Each iteration's first pairs with the user's complaint, the guided instruction, the lengths "
                     "and whether a sample was cut at the token limit."),
    ]
    heldout = sorted(k for k in sweep.available or () if k.startswith(WANDB_HELDOUT))
    if heldout:
        out.append(Section("Held-out preference pairs", "experiments",
                           [Panel("line", key[len(WANDB_HELDOUT):], [key], x=WANDB_ITERATION) for key in heldout],
                           text="The held-out pairs evaluated at the end of each training stage."))
    if has(sweep, REPORT_TABLE):
        paper = sorted(k for k in sweep.available or () if k.startswith("tables/paper/"))
        figures = sorted(k for k in sweep.available or () if k.startswith("figures/"))
        out.append(Section("The report's tables and the paper's numbers", "report",
                           [Panel("table", "our numbers beside the paper's (tables/results)", [REPORT_TABLE])]
                           + [Panel("table", key.rsplit("/", 1)[-1], [key]) for key in paper]
                           + ([Panel("media", "the report's figures", figures)] if figures else []),
                           text="The run that python -m drift_exp.report logged: every row of results.csv, typed, "
                                "and the paper's own tables."))
    if sweep.coverage:
        media = sorted(k for k in sweep.available or () if re.fullmatch(r"coverage/fig[34]_.*", k))
        panels = [Panel("media", "Figures 3-4", media)] if media else []
        if sweep.available is None or "coverage/per_prompt" in sweep.available:
            panels.append(Panel("table", "shares per prompt", ["coverage/per_prompt"]))
        if panels:
            out.append(Section("Exploration coverage (Figures 3-4)", "coverage", panels,
                               text="The coverage analysis of the sweep's final policies."))
    return [s for s in out if s.panels or s.runs == "experiments" and s.name.startswith("Table")]


def columns(sweep: Sweep) -> list[str]:
    """The runs table's pinned columns: the evaluation numbers and the final loss and margin (summary values)."""
    keys = [key for key, _ in evaluated(sweep.records)] + [f"{WANDB_TRAIN}loss", f"{WANDB_TRAIN}rewards/margins"]
    return [f"summary:{k}" for k in keys]


# ---------------------------------------------------------------------------------------------- the library's objects

def _filters(expr, sweep: Sweep, runs: str) -> list:
    tag = expr.Tags().isin([f"sweep:{sweep.name}"])
    if runs == "report":
        return [tag, expr.Metric("JobType") == "report"]
    if runs == "coverage":
        return [expr.Metric("JobType") == "coverage", expr.Metric("Name").isin(sweep.coverage)]
    return [tag, expr.Metric("JobType").notin(["report", "coverage"])]


def _panel(wr, p: Panel):
    if p.kind == "line":
        return wr.LinePlot(title=p.title, x=p.x, y=list(p.keys), title_x=p.x)
    if p.kind == "table":
        # (the default size: the library does not read a summary table's layout back from its model)
        return wr.WeavePanelSummaryTable(table_name=p.keys[0])
    if p.kind == "media":
        return wr.MediaBrowser(title=p.title, media_keys=list(p.keys), num_columns=2, layout=wr.Layout(w=24, h=12))
    raise ValueError(f"unknown panel kind {p.kind!r}")


def build_workspace(sweep: Sweep):
    """The saved workspace: the experiment runs of the sweep, grouped by method and setting."""
    ws, wr, expr = _library()
    return ws.Workspace(
        entity=sweep.entity or "", project=sweep.project, name=f"drift_exp {sweep.name}",
        sections=[ws.Section(name=s.name, panels=[_panel(wr, p) for p in s.panels], is_open=True)
                  for s in sections(sweep) if s.runs == "experiments" and s.panels],
        settings=ws.WorkspaceSettings(x_axis=WANDB_ITERATION),
        runset_settings=ws.RunsetSettings(filters=_filters(expr, sweep, "experiments"),
                                          groupby=[expr.Config(k) for k in GROUP_BY],
                                          pinned_columns=columns(sweep)))


def build_report(sweep: Sweep, resolve_project: bool = False):
    """The W&B Report: a heading and a panel grid per section. `resolve_project` names the project in each run set
    (the library then looks its id up, so only with a key); otherwise the run sets take the report's project."""
    ws, wr, expr = _library()
    where = {"entity": sweep.entity or "", "project": sweep.project} if resolve_project else {}
    blocks: list[Any] = [wr.P(f"The comparison view of the sweep {sweep.name} ({len(sweep.records)} evaluated "
                              f"policies), built by python -m drift_exp.dashboards from the runs tagged "
                              f"sweep:{sweep.name}.")]
    for s in sections(sweep):
        runset = wr.Runset(name=s.runs, filters=_filters(expr, sweep, s.runs), **where,
                           groupby=[f"config.{k}" for k in GROUP_BY] if s.runs == "experiments" else [],
                           pinned_columns=columns(sweep) if s.name.startswith("Table") else [])
        blocks += [wr.H2(s.name), wr.P(s.text),
                   wr.PanelGrid(runsets=[runset], panels=[_panel(wr, p) for p in s.panels])]
    return wr.Report(project=sweep.project, entity=sweep.entity or "", title=f"DRIFT reproduction: {sweep.name}",
                     description=f"Runs tagged sweep:{sweep.name}", blocks=blocks)


# ------------------------------------------------------------------------------------------ the specification (JSON)

def spec_json(obj) -> dict[str, Any]:
    """The library's model of a workspace or report (its `View` / `ReportViewspec`) as JSON."""
    return obj._to_model().model_dump(mode="json", by_alias=True, exclude_none=True)


def load_spec(path: Path):
    """A written specification read back into the library's object (a Workspace or a Report)."""
    ws, wr, _ = _library()
    from wandb_workspaces.reports.v2 import internal as report_model
    from wandb_workspaces.workspaces import internal as workspace_model

    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise DashboardError(f"{path}: not a readable JSON specification ({err})") from None
    if "spec" in data and "section" in data["spec"]:
        return ws.Workspace._from_model(workspace_model.View.model_validate(data))
    return wr.Report._from_model(report_model.ReportViewspec.model_validate(data))


def _metric_name(metric: Any) -> str:
    """A panel's metric as the key the runs log: a name as given, or the name of the library's Metric object
    (what a panel read back from a specification holds)."""
    return metric if isinstance(metric, str) else str(getattr(metric, "name", metric))


def named_keys(obj) -> dict[str, set[str]]:
    """The metric keys the panels of a workspace or report name, by the runs they read (experiments, report,
    coverage: the run set's name in a report, the workspace's runs are the experiments)."""
    out: dict[str, set[str]] = {}

    def add(runs: str, panels: Iterable, pinned: Iterable[str] = ()) -> None:
        keys = out.setdefault(runs, set())
        for p in panels:
            kind = type(p).__name__
            if kind == "LinePlot":
                keys.update(_metric_name(y) for y in p.y)
                if p.x and _metric_name(p.x) not in ("Step", "_step"):
                    keys.add(_metric_name(p.x))
            elif kind == "WeavePanelSummaryTable":
                keys.add(p.table_name)
            elif kind == "MediaBrowser":
                keys.update(p.media_keys)
        keys.update(c.split(":", 1)[1] for c in pinned if c.startswith("summary:"))

    if hasattr(obj, "sections"):  # a Workspace
        for s in obj.sections:
            add("experiments", s.panels)
        add("experiments", [], obj.runset_settings.pinned_columns)
    else:
        for block in obj.blocks:
            if type(block).__name__ == "PanelGrid":
                for runset in block.runsets:
                    add(runset.name, block.panels, runset.pinned_columns)
    return out


def run_kind(job_type: str) -> str:
    return job_type if job_type in ("report", "coverage") else "experiments"


def missing_keys(obj, runs: Iterable) -> dict[str, set[str]]:
    """The keys a workspace or report names that no run of the matching kind logged (runs: OfflineRun objects
    from drift_exp.report.wandb_offline, or anything with job_type and keys)."""
    logged: dict[str, set[str]] = {}
    for run in runs:
        logged.setdefault(run_kind(run.job_type), set()).update(run.keys)
    return {kind: missing for kind, keys in named_keys(obj).items()
            if (missing := keys - logged.get(kind, set()))}


# ------------------------------------------------------------------------------------------------ the command

def offline_keys(folder: Path) -> tuple[set[str] | None, list]:
    """The keys the offline runs under `folder` logged, and the runs (None, [] when there are none)."""
    from drift_exp.report.wandb_offline import find_offline_runs

    runs = find_offline_runs(folder)
    return ({k for r in runs for k in r.keys} if runs else None), runs


def online_keys(sweep: Sweep) -> set[str] | None:
    """The summary keys of the sweep's runs in W&B (with a key); None if they cannot be read."""
    import wandb

    try:
        runs = wandb.Api(timeout=30).runs(f"{sweep.entity}/{sweep.project}" if sweep.entity else sweep.project,
                                          filters={"tags": {"$in": [f"sweep:{sweep.name}"]}})
        return {k for r in runs for k in dict(r.summary_metrics) if not k.startswith("_")}
    except Exception as err:  # wandb raises CommError, ValueError, requests errors...
        print(f"warning: could not read the runs' keys from W&B ({type(err).__name__}: {err}); every optional "
              "panel is added", file=sys.stderr)
        return None


def coverage_runs(folder: Path, extra: Iterable[Path], sweep: Sweep) -> list[str]:
    """W&B run names of coverage analyses (coverage.json) of this sweep's run directories."""
    from drift_exp.report import find_coverage

    ours = {Path(r.source).resolve() for r in sweep.records}
    names = []
    for cov in find_coverage([folder, *extra]):
        try:
            runs = json.loads((cov / "coverage.json").read_text()).get("runs", [])
        except (OSError, json.JSONDecodeError, AttributeError) as err:
            raise DashboardError(f"{cov / 'coverage.json'}: not a coverage analysis's result ({err})") from None
        if any(Path(r.get("run_dir", "")).resolve() in ours for r in runs) or cov.is_relative_to(folder):
            names.append("coverage-" + "-vs-".join(r["label"] for r in runs if "label" in r))
    return names


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m drift_exp.dashboards",
        description="Build a sweep's W&B workspace and W&B Report (saved with an API key; else their JSON "
                    "specification is written beside the report).",
        epilog="Example:\n  python -m drift_exp.dashboards outputs/sweeps/table3 --entity my-team --project drift_exp",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sweep", type=Path, help="the sweep's folder (outputs/sweeps/<name>)")
    p.add_argument("--entity", help="W&B entity (default: the runs' tracking.entity, else your default entity)")
    p.add_argument("--project", help="W&B project (default: the runs' tracking.project)")
    p.add_argument("--out", type=Path, help="where the specification goes (default: <sweep>/report)")
    p.add_argument("--coverage", action="append", type=Path, default=[],
                   help="a coverage analysis's folder of these runs (repeatable; those under the sweep are found)")
    p.add_argument("--offline", action="store_true", help="write the specification only, even with an API key")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from drift_exp.report.wandb_io import has_api_key

    try:
        _library()
        sweep = read_sweep(args.sweep, args.project, args.entity)
        publish = not args.offline and has_api_key() and os.environ.get("WANDB_MODE") not in ("offline", "disabled")
        sweep.available, runs = offline_keys(args.sweep)
        if sweep.available is None and publish:
            sweep.available = online_keys(sweep)
        sweep.coverage = coverage_runs(args.sweep, args.coverage, sweep)
        if publish and not sweep.entity:
            import wandb

            try:
                sweep.entity = wandb.Api(timeout=30).default_entity
            except Exception as err:  # no network, a refused key...
                raise DashboardError(f"W&B did not say your default entity ({type(err).__name__}: {err}); pass "
                                     "--entity, or --offline to write the specification only") from None
        workspace, report = build_workspace(sweep), build_report(sweep)
        out = args.out or args.sweep / "report"
        out.mkdir(parents=True, exist_ok=True)
        for obj, name in ((workspace, WORKSPACE_FILE), (report, REPORT_FILE)):
            (out / name).write_text(json.dumps(spec_json(obj), indent=1) + "\n")
        print(f"wrote the specification: {out / WORKSPACE_FILE}, {out / REPORT_FILE}")
        if runs:
            for kind, keys in {**missing_keys(workspace, runs), **missing_keys(report, runs)}.items():
                print(f"warning: no {kind} run under {args.sweep} logged {', '.join(sorted(keys))}", file=sys.stderr)
        if not publish:
            where = f" --entity {sweep.entity or '<entity>'} --project {sweep.project}"
            print("not published (no W&B API key, or --offline / WANDB_MODE). To publish: WANDB_API_KEY=<key> "
                  f"python -m drift_exp.dashboards {args.sweep}{where}")
            return 0
        try:
            workspace.save()
            saved = build_report(sweep, resolve_project=True)  # looks the project's id up
            saved.save()
        except Exception as err:  # the library raises requests, GraphQL and value errors
            raise DashboardError(f"W&B refused the dashboards ({type(err).__name__}: {err}); the specification "
                                 f"is in {out}") from None
        print(f"workspace: {workspace.url}\nreport: {saved.url}")
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
