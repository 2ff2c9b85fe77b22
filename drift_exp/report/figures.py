"""Figure 2 (score vs iteration, one line per method) and Figure 5 (DPO loss, and the chosen and rejected rewards
on one axis, per step, one row of panels per iteration), as PNG files. matplotlib's Figure API only: no pyplot
state, no display.

Figure 2's series keep apart where they overlap: each has its own marker and line style and a small sideways
offset of its points, and series whose points are equal are named in a note under the plot (and returned, for
report.md), since a CPU run's methods often score exactly alike."""

from __future__ import annotations

import textwrap
from pathlib import Path

from matplotlib.figure import Figure

from drift_exp.report.collect import Record, value_at
from drift_exp.report.paper import OWN_METRICS, PAPER_METRICS, Key, paper_key
from drift_exp.report.tables import METHOD_ORDER, SETTING_ORDER, number, rank

# The y axis of Figure 2: the paper's WildBench score when the runs have it, else what a CPU run has.
FIGURE2_METRICS = (("task", "WildBench task score"), ("proxy", "proxy reward (eval reward model)"),
                   ("margins", "final rewards/margins (training)"))
PATHS = {m.id: m.path for m in (*PAPER_METRICS, *OWN_METRICS)}
# Figure 5: (panel title, ((history key, line label), ...)); the rewards share one axis, as in the paper.
FIGURE5_PANELS = (("DPO loss", (("loss", "loss"),)),
                  ("implicit rewards", (("rewards/chosen", "chosen"), ("rewards/rejected", "rejected"))))
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">")
LINESTYLES = ("-", "--", "-.", ":")
OFFSET = 0.06  # sideways shift between neighbouring series, in iterations


def _runs(records: list[Record]) -> dict[str, list[Record]]:
    runs: dict[str, list[Record]] = {}
    for r in records:
        runs.setdefault(r.source, []).append(r)
    return runs


def figure2(records: list[Record], paper: dict[Key, dict[str, str]], out: Path,
            notes: list[str] | None = None) -> list[Path]:
    """figure2_<data>-<model>.png per (data, model): one line per run, the paper's values dashed beside it.
    A sentence per group of coinciding series is appended to `notes` (and printed under the plot)."""
    paths = []
    for data, model in dict.fromkeys((r.data, r.model) for r in records):
        group = [r for r in records if (r.data, r.model) == (data, model)]
        metric = next((m for m in FIGURE2_METRICS if any(number(value_at(r.metrics, PATHS[m[0]])) is not None
                                                         for r in group)), None)
        if metric is None:
            continue
        runs = sorted(_runs(group).values(), key=lambda rs: _line_key(rs))
        seeds = {rs[0].seed for rs in runs}
        fig = Figure(figsize=(7, 4.5), layout="constrained")
        ax = fig.add_subplot()
        colors: dict[tuple[str, str], str] = {}
        series: list[tuple[str, list[tuple[int, float]]]] = []
        for rs in runs:
            trained = next(r for r in rs if r.iteration > 0) if any(r.iteration > 0 for r in rs) else rs[0]
            cell = (trained.method, trained.setting)
            color = colors.setdefault(cell, f"C{len(colors) % 10}")
            # base/ (the untouched model) is drawn only when the run has no iteration-0 record of its own.
            line = [r for r in rs if r.metrics.get("stage") != "base"] or rs
            points = sorted(((r.iteration, number(value_at(r.metrics, PATHS[metric[0]]))) for r in line),
                            key=lambda p: p[0])
            points = [(k, y) for k, y in points if y is not None]
            if points:
                label = f"{cell[0]} ({cell[1]})" + (f" s{trained.seed}" if len(seeds) > 1 else "")
                i = len(series)
                shift = (i - (len(runs) - 1) / 2) * OFFSET
                xs, ys = zip(*points, strict=True)
                ax.plot([x + shift for x in xs], ys, marker=MARKERS[i % len(MARKERS)], markersize=6,
                        linestyle=LINESTYLES[i % len(LINESTYLES)], color=color, label=label, alpha=0.85)
                series.append((label, points))
        same = coinciding(series)
        if same:
            text = "; ".join(" = ".join(group) for group in same)
            fig.supxlabel(textwrap.fill(f"Equal values (drawn slightly apart): {text}", 110), fontsize="x-small")
            if notes is not None:
                notes.append(f"Figure 2 ({data}, {model}): these series have equal values at every iteration and "
                             f"are drawn slightly apart: {text}.")
        if metric[0] == "task":
            for (method, setting), color in colors.items():
                points = _paper_line(paper, data, model, setting, method)
                if points:
                    ax.plot(*zip(*points, strict=True), linestyle="--", marker="x", color=color, alpha=0.6,
                            label=f"{method} ({setting}), paper")
        ax.set_xlabel("iteration (0 = warm start / base model)")
        ax.set_ylabel(metric[1])
        ax.set_title(f"Figure 2: {metric[1]} per iteration ({data}, {model})")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
        path = out / f"figure2_{data}-{model}.png"
        fig.savefig(path, dpi=120)
        paths.append(path)
    return paths


def coinciding(series: list[tuple[str, list[tuple[int, float]]]], rel: float = 1e-9) -> list[list[str]]:
    """Groups (of two or more) of series labels whose points are the same iterations with equal values."""
    groups: list[tuple[list[tuple[int, float]], list[str]]] = []
    for label, points in series:
        for ref, labels in groups:
            if [k for k, _ in ref] == [k for k, _ in points] and all(
                    abs(a - b) <= rel * max(1.0, abs(a), abs(b)) for (_, a), (_, b) in zip(ref, points, strict=True)):
                labels.append(label)
                break
        else:
            groups.append((points, [label]))
    return [labels for _, labels in groups if len(labels) > 1]


def _line_key(rs: list[Record]) -> tuple:
    r = next((x for x in rs if x.iteration > 0), rs[0])
    return (rank(SETTING_ORDER, r.setting), rank(METHOD_ORDER, r.method), r.seed or 0)


def _paper_line(paper: dict[Key, dict[str, str]], data: str, model: str, setting: str,
                method: str) -> list[tuple[int, float]]:
    start = paper.get(paper_key(data, model, "", "seed", 0)) or paper.get(paper_key(data, model, "", "base", 0))
    points = [(0, float(start["task"]))] if start and "task" in start else []
    for k in range(1, 100):
        value = paper.get(paper_key(data, model, setting, method, k), {}).get("task")
        if value is not None:
            points.append((k, float(value)))
    return points if len(points) > 1 else []


def figure5(records: list[Record], out: Path) -> list[Path]:
    """figure5_<experiment>.png per run: the loss, and the chosen and rejected rewards on one axis, per step;
    a row per iteration."""
    paths = []
    runs = _runs(records).values()
    names = [rs[0].experiment for rs in runs]
    for rs in runs:
        # The same experiment in two sweeps (outputs/ as the source): prefix the sweep folder.
        stem = rs[0].experiment
        if names.count(stem) > 1:
            stem = f"{Path(rs[0].source).parent.name}-{stem}"
        history = {r.iteration: value_at(r.metrics, ("train", "history")) or [] for r in rs}
        iterations = [k for k in sorted(history) if k > 0 and history[k]] or [k for k in history if history[k]]
        if not iterations:
            continue
        fig = Figure(figsize=(9, 2.6 * len(iterations) + 0.6), layout="constrained")
        axes = fig.subplots(len(iterations), len(FIGURE5_PANELS), squeeze=False)
        for row, k in enumerate(iterations):
            steps = [h for h in history[k] if "loss" in h]
            for col, (title, lines) in enumerate(FIGURE5_PANELS):
                ax = axes[row][col]
                for n, (key, label) in enumerate(lines):
                    points = [(h.get("step", i + 1), number(h.get(key))) for i, h in enumerate(steps)]
                    points = [(x, y) for x, y in points if y is not None]
                    if points:
                        ax.plot(*zip(*points, strict=True), color=f"C{col + n}", label=label,
                                marker="." if len(points) < 30 else None)
                if len(lines) > 1 and ax.lines:
                    ax.axhline(0, color="grey", linewidth=0.6)
                    ax.legend(fontsize="small")
                ax.set_title(f"iter {k}: {title}", fontsize="medium")
                ax.set_xlabel("step")
                ax.xaxis.get_major_locator().set_params(integer=True)
                ax.grid(alpha=0.3)
        fig.suptitle(f"Figure 5: DPO training dynamics, {rs[0].experiment}")
        path = out / f"figure5_{stem}.png"
        fig.savefig(path, dpi=110)
        paths.append(path)
    return paths
