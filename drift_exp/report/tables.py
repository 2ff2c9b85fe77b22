"""Table 3/4-shaped results (methods x iterations) beside the paper's numbers, as Markdown and CSV."""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from drift_exp.report.collect import Record, value_at
from drift_exp.report.paper import (
    EXTRA_METRICS,
    LABELS,
    OWN_METRICS,
    PAPER_METRICS,
    TABLE_TITLES,
    WB_METRICS,
    Key,
    PaperCell,
    paper_key,
)

MISSING = "–"  # a value that is not there; never 0
PROXY = "†"  # a WildBench number judged with the project's paraphrased template, not WildBench's own
SETTING_ORDER = ("", "controlled", "full")
METHOD_ORDER = ("base", "seed", "spin", "iterdpo-unguided", "iterdpo", "drift-unguided", "drift")
ID_COLUMNS = ("data", "model", "setting", "method", "iteration", "seed", "runs")


@dataclass
class Row:
    data: str
    model: str
    setting: str
    method: str
    iteration: int
    seed: int | None
    runs: list[str] = field(default_factory=list)  # run directories (or W&B runs) the numbers come from
    ours: dict[str, Any] = field(default_factory=dict)  # metric id -> value (None: missing)
    paper: dict[str, str] = field(default_factory=dict)  # metric id -> the paper's value, as printed
    wb_proxy: bool = False  # WildBench judged with the project's paraphrase (eval.wildbench.template=project)

    def sort_key(self) -> tuple:
        block = METHOD_ORDER.index(self.method) if self.method in ("base", "seed") else 2
        return (self.data, self.model, block, rank(SETTING_ORDER, self.setting), rank(METHOD_ORDER, self.method),
                self.iteration, -1 if self.seed is None else self.seed)


def rank(order: tuple[str, ...], value: str) -> tuple[int, str]:
    """Known values in their paper order, then the others alphabetically."""
    return (order.index(value), "") if value in order else (len(order), value)


def number(value: Any) -> float | None:
    """A finite float, or None (missing, a string, NaN)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def fmt(value: Any, digits: int = 2) -> str:
    if value is None or value == "":
        return MISSING
    if isinstance(value, str):
        return value
    x = number(value)
    return MISSING if x is None else f"{x:.{digits}f}"


def delta(ours: Any, paper: str | None, digits: int = 2) -> str:
    x = number(ours)
    if x is None or not paper:
        return MISSING
    return f"{x - float(paper):+.{digits}f}"


def wb_proxy(metrics: dict[str, Any]) -> bool:
    """Whether WildBench was judged with a template other than WildBench's own: the project's paraphrase
    (eval.wildbench.template=project), or a run from before the official template was used (no record)."""
    wb = value_at(metrics, ("eval", "wildbench"))
    if not isinstance(wb, dict) or "judge" not in wb:
        return False
    return value_at(wb, ("template", "proxy")) is not False


def _richness(r: Record) -> int:
    return sum(value_at(r.metrics, m.path) is not None for m in (*PAPER_METRICS, *OWN_METRICS))


def build_rows(records: Iterable[Record], paper: dict[Key, dict[str, str]]) -> list[Row]:
    """One row per (data, model, setting, method, iteration, seed) of the records, plus the paper's rows
    for every (data, model) the records cover, so a partly finished sweep still has the table's shape.
    The seed and base models are shared by the experiments of a (data, model, seed): their row takes
    the iteration-0 record with the most numbers."""
    best: dict[tuple, Record] = {}
    runs: dict[tuple, list[str]] = {}
    for r in records:
        runs.setdefault(r.row_key, []).append(r.source)
        if r.row_key not in best or _richness(r) > _richness(best[r.row_key]):
            best[r.row_key] = r
    rows = []
    for key, r in best.items():
        ours = {m.id: value_at(r.metrics, m.path) for m in (*PAPER_METRICS, *OWN_METRICS, *EXTRA_METRICS)}
        rows.append(Row(*key, runs=sorted(set(runs[key])), ours=ours,
                        paper=dict(paper.get(paper_key(*key[:5]), {})), wb_proxy=wb_proxy(r.metrics)))
    covered = {(r.data, r.model) for r in rows}
    have = {(r.data, paper_key(r.data, r.model, r.setting, r.method, r.iteration)) for r in rows}
    for data, model in sorted(covered):
        for key, values in paper.items():
            if key[1] == model and key[0] in (data, "") and (data, key) not in have:
                rows.append(Row(data, model, key[2], key[3], key[4], None, paper=dict(values)))
                have.add((data, key))
    return sorted(rows, key=Row.sort_key)


def markdown_table(header: list[str], body: list[list[str]]) -> str:
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    return "\n".join([line(header), line(["---"] * len(header)), *map(line, body)])


def results_markdown(rows: list[Row]) -> str:
    """One table per (data, model); a paper metric's cell is `ours / paper (ours - paper)`."""
    out = []
    for data, model in dict.fromkeys((r.data, r.model) for r in rows):
        group = [r for r in rows if (r.data, r.model) == (data, model)]
        with_paper = {m.id for m in PAPER_METRICS if any(m.id in r.paper for r in group)}
        shown = [m for m in (*PAPER_METRICS, *OWN_METRICS)
                 if m.id in with_paper or any(number(r.ours.get(m.id)) is not None for r in group)]
        hidden = [m.label for m in (*PAPER_METRICS, *OWN_METRICS) if m not in shown]
        header = ["setting", "method", "iter", "seed", *(m.label for m in shown)]
        body = []
        for r in group:
            cells = [r.setting or MISSING, r.method, str(r.iteration), fmt(r.seed, 0)]
            for m in shown:
                ours = fmt(r.ours.get(m.id), m.digits)
                if r.wb_proxy and m.id in WB_METRICS and ours != MISSING:
                    ours += PROXY
                if m.id not in with_paper:
                    cells.append(ours)
                elif r.paper.get(m.id) is None:
                    cells.append(ours if ours == MISSING else f"{ours} / {MISSING}")
                else:
                    d = delta(r.ours.get(m.id), r.paper[m.id], m.digits)
                    cells.append(f"{ours} / {r.paper[m.id]}" + ("" if d == MISSING else f" ({d})"))
            body.append(cells)
        out.append(f"### {data} · {model}\n")
        if with_paper:
            out.append("Paper metrics: `ours / paper (ours − paper)`; – = not available.\n")
        out.append(markdown_table(header, body))
        if hidden:
            out.append(f"\nNo values in these runs for: {', '.join(hidden)}.")
        if any(r.wb_proxy for r in group):
            out.append(f"\n{PROXY} WildBench judged with this project's paraphrase of its score template "
                       "(eval.wildbench.template=project): a proxy for WB-Score / Task Score / WB-Elo.")
        out.append("")
    return "\n".join(out)


def cell(value: Any) -> Any:
    """A value for a program: a finite number as a number, a non-empty string as it is, else None (missing)."""
    x = number(value)
    if x is not None:
        return int(value) if isinstance(value, int) and not isinstance(value, bool) else x
    return value if isinstance(value, str) and value and value != MISSING else None


def printed(value: str | None) -> float | str | None:
    """A paper value as printed ("48.94") as a number; None where the paper has none."""
    if value is None or value in ("", MISSING):
        return None
    try:
        return float(value)
    except ValueError:
        return value


def numeric_delta(ours: Any, paper: str | None) -> float | None:
    x, p = number(ours), printed(paper)
    return round(x - p, 6) if x is not None and isinstance(p, float) else None


def results_table(rows: list[Row], paper_as_printed: bool = False) -> tuple[list[str], list[list[Any]]]:
    """The rows of results.csv with typed cells: numbers as numbers, None where a value is missing (never 0,
    never a dash). The W&B table takes them as they are; results.csv writes None as an empty cell and the
    paper's values as printed (paper_as_printed: "51.80", which a CSV reader still parses as a number)."""
    header = list(ID_COLUMNS)
    for m in PAPER_METRICS:
        header += [m.id, f"{m.id}_paper", f"{m.id}_delta"]
    header += [m.id for m in (*OWN_METRICS, *EXTRA_METRICS)]
    body = []
    for r in rows:
        line = [r.data, r.model, r.setting or None, r.method, r.iteration, r.seed, " ".join(r.runs) or None]
        for m in PAPER_METRICS:
            paper = r.paper.get(m.id) if paper_as_printed else printed(r.paper.get(m.id))
            line += [cell(r.ours.get(m.id)), paper,
                     numeric_delta(r.ours.get(m.id), r.paper.get(m.id))]
        line += [cell(r.ours.get(m.id)) for m in (*OWN_METRICS, *EXTRA_METRICS)]
        body.append(line)
    return header, body


LONG_COLUMNS = ("experiment", "method", "data", "model", "setting", "seed", "iteration", "metric", "value")


def results_long(records: Iterable[Record]) -> tuple[list[str], list[list[Any]]]:
    """Long format: one row per (run, iteration) x metric that has a number, in the metric ids of results.csv
    (the Base row is method 'base', the warm start 'seed')."""
    body = []
    for r in records:
        for m in (*PAPER_METRICS, *OWN_METRICS, *EXTRA_METRICS):
            value = cell(value_at(r.metrics, m.path))
            if isinstance(value, (int, float)):
                body.append([r.experiment, r.method, r.data, r.model, r.setting or None, r.seed, r.iteration, m.id,
                             value])
    return list(LONG_COLUMNS), body


def write_csv(path: Path, header: list[str], body: list[list[Any]]) -> None:
    """A CSV a program can read: None is an empty cell, numbers are written in full (no rounding)."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(header)
        w.writerows([["" if v is None else v for v in line] for line in body])


def paper_tables(cells: list[PaperCell]) -> list[tuple[str, list[str], list[list[str]]]]:
    """The paper's tables as shipped in paper_numbers.csv, in its row order: (title, header, body).
    Rows: data, setting, method, iteration; columns: one per (model, metric), values as printed."""
    tables = []
    for table in dict.fromkeys(c.table for c in cells):
        mine = [c for c in cells if c.table == table]
        columns = list(dict.fromkeys((c.model, c.metric) for c in mine))
        grid: dict[tuple, dict[tuple[str, str], str]] = {}
        for c in mine:
            grid.setdefault((c.data, c.setting, c.method, c.iteration), {})[(c.model, c.metric)] = c.value
        header = ["data", "setting", "method", "iter", *(f"{model} {LABELS[metric]}" for model, metric in columns)]
        body = [[data or MISSING, setting or MISSING, method, str(k), *(values.get(col, MISSING) for col in columns)]
                for (data, setting, method, k), values in grid.items()]
        tables.append((TABLE_TITLES.get(table, f"Table {table}"), header, body))
    return tables


def typed_paper_tables(cells: list[PaperCell]) -> list[tuple[str, list[str], list[list[Any]]]]:
    """paper_tables with numbers as numbers and None where the paper has no value (for W&B tables)."""
    return [(title, header, [[None if v == MISSING else v for v in line[:3]] + [int(line[3])]
                             + [printed(v) for v in line[4:]] for line in body])
            for title, header, body in paper_tables(cells)]


def paper_markdown(cells: list[PaperCell]) -> str:
    out = []
    for title, header, body in paper_tables(cells):
        out += [f"### {title}\n", markdown_table(header, body), ""]
    return "\n".join(out)
