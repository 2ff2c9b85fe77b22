"""`python -m drift_exp.report`: the paper's tables and figures from finished runs, beside the paper's numbers.

Reads iter_k/metrics.json of run directories (or the same numbers from W&B), writes report.md (Table 3/4
shaped results with the paper's value and the difference beside each of ours, the figures, the coverage
analysis's Figures 3-4 where one was run, then the paper's own tables), results.csv (the same rows, one
column per number), results_long.csv (one row per run and iteration x metric), figure2_<data>-<model>.png and
figure5_<experiment>.png, and logs them to W&B as a run with job_type "report". A missing value is "–" in
report.md and an empty cell in the CSV files (None in the W&B tables), never 0.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from drift_exp.report.collect import Record, ReportError, collect_local
from drift_exp.report.elo import add_paper_vs_base, elo_markdown, pool_elo
from drift_exp.report.figures import figure2, figure5
from drift_exp.report.paper import load_cells, paper_index
from drift_exp.report.rpo import label_rpo, rpo_markdown
from drift_exp.report.tables import (
    build_rows,
    paper_markdown,
    results_long,
    results_markdown,
    results_table,
    typed_paper_tables,
    write_csv,
)

__all__ = ["Report", "ReportError", "build_report"]


@dataclass
class Report:
    out: Path
    markdown: Path
    csv: Path
    long_csv: Path | None = None
    figures: list[Path] = field(default_factory=list)
    coverage: list[Path] = field(default_factory=list)  # the coverage analyses' folders linked from report.md
    wandb: str | None = None  # where the report run went (URL or offline folder)


def build_report(sources: list[Path], out: Path, wandb_path: str | None = None, groups: list[str] = (),
                 tags: list[str] = (), sweep: str | None = None, log_to_wandb: bool = True,
                 coverage: list[Path] = (), elo: str = "pool") -> Report:
    records: list[Record] = collect_local([Path(s) for s in sources]) if sources else []
    if wandb_path:
        from drift_exp.report.wandb_io import pull

        records += pull(wandb_path, groups=groups, tags=tags)
    if sweep:
        records = [r for r in records if r.sweep == sweep]
    if not records:
        where = ", ".join(map(str, sources)) + (f" W&B {wandb_path}" if wandb_path else "")
        raise ReportError(f"nothing to report: no finished iteration found in {where}")
    cells = load_cells()
    label_rpo(records)  # rows trained with a non-default trainer.rpo_alpha: "<method>+dpo", ...
    pools = pool_elo(records, elo)  # the Elo column: one pool (elo="pool") or each run's own rating ("alone")
    paper = add_paper_vs_base(paper_index(cells))
    rows = build_rows(records, paper)
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / "results.csv", *results_table(rows, paper_as_printed=True))
    write_csv(out / "results_long.csv", *results_long(records))
    notes: list[str] = []
    fig2, fig5 = figure2(records, paper, out, notes), figure5(records, out)
    cov = find_coverage([*sources, *coverage])
    sweeps = sorted({r.sweep for r in records if r.sweep})
    text = [
        "# DRIFT reproduction report\n",
        f"{len({r.source for r in records})} runs" + (f" of sweep {', '.join(sweeps)}" if sweeps else "")
        + f" ({', '.join(map(str, sources)) or wandb_path}). Missing values are –. The same numbers for a program: "
          "[results.csv](results.csv) (one column per number, empty where missing) and "
          "[results_long.csv](results_long.csv) (one row per run, iteration and metric).\n",
        "## Results (Table 3/4 layout)\n", rpo_markdown(records), results_markdown(rows),
        elo_markdown(pools, records, elo),
        "## Figures\n",
        *(f"![{p.stem}]({p.name})\n" for p in (*fig2, *fig5)),
        *(f"{n}\n" for n in notes),
        *([] if fig2 else ["Figure 2: no score in these runs (no WildBench, proxy or training numbers).\n"]),
        *coverage_markdown(cov, out),
        "## The paper's numbers (drift_exp/paper_numbers.csv)\n", paper_markdown(cells),
    ]
    report = Report(out=out, markdown=out / "report.md", csv=out / "results.csv", long_csv=out / "results_long.csv",
                    figures=[*fig2, *fig5], coverage=cov)
    report.markdown.write_text("\n".join(text))
    if log_to_wandb:
        from drift_exp.report.wandb_io import log_report

        tracking = next((r.tracking for r in records if r.tracking.get("project")), {})
        entity, project = wandb_path.split("/") if wandb_path else (tracking.get("entity"),
                                                                    tracking.get("project", "drift_exp"))
        tables = {"results": results_table(rows)} | {"paper/" + t.split(":")[0].replace(" ", "").lower(): (h, b)
                                                for t, h, b in typed_paper_tables(cells)}
        report.wandb = log_report(out, project, entity, name=f"report-{'+'.join(sweeps) or out.parent.name}",
                                  tables=tables, images=report.figures,
                                  files=[report.markdown, report.csv, report.long_csv],
                                  tags=["report", *(f"sweep:{s}" for s in sweeps)])
    return report


def find_coverage(paths: list[Path]) -> list[Path]:
    """Folders of coverage analyses (drift_exp.analysis.coverage: coverage.json and its figures) at or under
    `paths`, outside W&B's own folders."""
    found = set()
    for path in map(Path, paths):
        if (path / "coverage.json").is_file():
            found.add(path)
        elif path.is_dir():
            found |= {p.parent for p in path.glob("**/coverage.json") if "wandb" not in p.parts}
    return sorted(found)


def coverage_markdown(folders: list[Path], out: Path) -> list[str]:
    """report.md's coverage section: each analysis's average shares and its Figures 3-4, linked relative to
    report.md (the PNGs stay where the analysis wrote them)."""
    if not folders:
        return []
    text = ["## Exploration coverage (Figures 3-4)\n"]
    for folder in folders:
        try:
            result = json.loads((folder / "coverage.json").read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise ReportError(f"{folder / 'coverage.json'}: not readable as JSON ({err})") from err
        shares = result.get("average") or {}
        text.append(f"### {os.path.relpath(folder, out)}\n")
        if shares:
            text.append("Share of the high-reward region (average over "
                        f"{result.get('n_prompts', '?')} prompts): "
                        + ", ".join(f"{m} {v:.3f}" for m, v in shares.items()) + ".\n")
        for fig in sorted(folder.glob("fig3_*.png")) + sorted(folder.glob("fig4_*.png")):
            text.append(f"![{fig.stem}]({Path(os.path.relpath(fig, out)).as_posix()})\n")
    return text
