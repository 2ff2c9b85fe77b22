"""python -m drift_exp.report <run-or-sweep-dir>... [--out DIR] [--wandb ENTITY/PROJECT] [--no-wandb]"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from drift_exp.report import ReportError, build_report


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m drift_exp.report",
        description="Tables (Markdown, CSV) and figures (PNG) of finished runs beside the paper's numbers.",
        epilog="Examples:\n  python -m drift_exp.report outputs/sweeps/table3\n"
               "  python -m drift_exp.report --wandb my-team/drift_exp --sweep table3 --out report-table3",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sources", nargs="*", type=Path,
                   help="run directories, sweep folders (outputs/sweeps/<name>) or outputs/; searched for "
                        "iter_*/metrics.json")
    p.add_argument("--out", type=Path, help="output folder (default: <source>/report with one source, else ./report)")
    p.add_argument("--wandb", metavar="ENTITY/PROJECT", help="also read the iteration runs of this W&B project")
    p.add_argument("--group", action="append", default=[], help="with --wandb: only this W&B group (experiment); "
                                                                "repeatable, any of them")
    p.add_argument("--tag", action="append", default=[], help="with --wandb: only runs with this tag, e.g. "
                                                              "method:drift; repeatable, all of them")
    p.add_argument("--sweep", help="only runs of this sweep (config run.sweep_name)")
    p.add_argument("--coverage", action="append", type=Path, default=[],
                   help="a coverage analysis's folder (python -m drift_exp.analysis.coverage --out) to link from "
                        "report.md; repeatable (folders under the sources are found without it)")
    p.add_argument("--no-wandb", action="store_true", help="do not log the report to W&B")
    p.add_argument("--elo", choices=("pool", "alone"), default="pool",
                   help="pool (default): rate every policy of the report in one WB-Elo pool with the leaderboard's "
                        "models; alone: each run's own rating from its evaluation")
    args = p.parse_args(argv)
    if not args.sources and not args.wandb:
        p.error("name a run or sweep directory, or --wandb ENTITY/PROJECT")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = args.out or (args.sources[0] / "report" if len(args.sources) == 1 else Path("report"))
    try:
        report = build_report(args.sources, out, wandb_path=args.wandb, groups=args.group, tags=args.tag,
                              sweep=args.sweep, log_to_wandb=not args.no_wandb, coverage=args.coverage,
                              elo=args.elo)
    except ReportError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {report.markdown}, {report.csv}, {report.long_csv}" + "".join(f", {p.name}" for p in report.figures))
    if report.wandb:
        print(f"W&B report run: {report.wandb}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
