"""`python -m drift_exp.report`: the paper's tables and figures from finished runs, beside the paper's numbers.

Reads iter_k/metrics.json of run directories (or the same numbers from W&B), writes report.md (Table 3/4
shaped results with the paper's value and the difference beside each of ours, then the paper's own tables),
results.csv, figure2_<data>-<model>.png and figure5_<experiment>.png, and logs them to W&B as a run with
job_type "report". A missing value is "–", never 0.
"""

from __future__ import annotations

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
    paper_tables,
    results_csv_rows,
    results_markdown,
    write_csv,
)

__all__ = ["Report", "ReportError", "build_report"]


@dataclass
class Report:
    out: Path
    markdown: Path
    csv: Path
    figures: list[Path] = field(default_factory=list)
    wandb: str | None = None  # where the report run went (URL or offline folder)


def build_report(sources: list[Path], out: Path, wandb_path: str | None = None, groups: list[str] = (),
                 tags: list[str] = (), sweep: str | None = None, log_to_wandb: bool = True,
                 elo: str = "pool") -> Report:
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
    header, body = results_csv_rows(rows)
    write_csv(out / "results.csv", header, body)
    fig2, fig5 = figure2(records, paper, out), figure5(records, out)
    sweeps = sorted({r.sweep for r in records if r.sweep})
    text = [
        "# DRIFT reproduction report\n",
        f"{len({r.source for r in records})} runs" + (f" of sweep {', '.join(sweeps)}" if sweeps else "")
        + f" ({', '.join(map(str, sources)) or wandb_path}). Missing values are –.\n",
        "## Results (Table 3/4 layout)\n", rpo_markdown(records), results_markdown(rows),
        elo_markdown(pools, records, elo),
        "## Figures\n",
        *(f"![{p.stem}]({p.name})\n" for p in (*fig2, *fig5)),
        *([] if fig2 else ["Figure 2: no score in these runs (no WildBench, proxy or training numbers).\n"]),
        "## The paper's numbers (drift_exp/paper_numbers.csv)\n", paper_markdown(cells),
    ]
    report = Report(out=out, markdown=out / "report.md", csv=out / "results.csv", figures=[*fig2, *fig5])
    report.markdown.write_text("\n".join(text))
    if log_to_wandb:
        from drift_exp.report.wandb_io import log_report

        tracking = next((r.tracking for r in records if r.tracking.get("project")), {})
        entity, project = wandb_path.split("/") if wandb_path else (tracking.get("entity"),
                                                                    tracking.get("project", "drift_exp"))
        tables = {"results": (header, body)} | {"paper/" + t.split(":")[0].replace(" ", "").lower(): (h, b)
                                                for t, h, b in paper_tables(cells)}
        report.wandb = log_report(out, project, entity, name=f"report-{'+'.join(sweeps) or out.parent.name}",
                                  tables=tables, images=report.figures, files=[report.markdown, report.csv],
                                  tags=["report", *(f"sweep:{s}" for s in sweeps)])
    return report
