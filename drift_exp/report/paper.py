"""The paper's published numbers (drift_exp/paper_numbers.csv) and the metric columns of the report.

The CSV is a cell-by-cell transcription of the paper's Tables 3, 4, 6, 7, the rows of Table 5 (the
WildBench leaderboard) for the paper's own models, and the two Figure 2 values stated in its text;
one row per cell: table, data, model, setting, method, iteration, metric, value (as printed).
Keys use this project's names: method = the run directory's method label (drift, drift-unguided,
spin, iterdpo, iterdpo-unguided), plus `base` (the untrained model, data left empty: Tables 3 and 4
share it) and `seed` (the warm-start model, iteration 0). Mapping choices:
- SPIN appears only in Table 3's controlled block; Tables 6 and 7 repeat that run (Table 6's SPIN
  numbers equal Table 3's), so every SPIN row has setting=controlled, as the sweeps run it.
- Table 6's "(Full)" rows are the guided methods in the full setting (= Table 3's full rows).
- Table 4 (UltraFeedback) does not name a data size; its rows carry setting=full, as sweeps/table4 runs.
- Figure 2's two values (DRIFT iter4 52.47, iter5 51.22) are taken as the full setting, as sweeps/figure2.
- Table 5 names "-4k" models (the controlled setting); its "-RPO" variant is left out.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from drift_exp.report.rpo import unlabelled

PAPER_CSV = Path(__file__).resolve().parents[1] / "paper_numbers.csv"

# Key of a table row: (data, model, setting, method, iteration).
Key = tuple[str, str, str, str, int]


@dataclass(frozen=True)
class Metric:
    id: str  # column id in paper_numbers.csv and results.csv
    label: str  # column header in the Markdown tables
    path: tuple[str, ...]  # where the value sits in iter_k/metrics.json
    paper: bool = True  # the paper reports it
    digits: int = 2


GROUPS = ("Creative Tasks", "Planning & Reasoning", "Math & Data Analysis", "Information/Advice seeking",
          "Coding & Debugging")
# WildBench's "Task" (Tables 5, 7; "Score" in Tables 3, 4, 6) is WB-Score's task macro average.
PAPER_METRICS = (
    # WB-Elo as the report rates it (drift_exp/report/elo.py): all the report's policies in one pool.
    Metric("elo", "Elo", ("elo_pool", "elo")),
    Metric("task", "Task", ("eval", "wildbench", "task_macro")),
    *(Metric(i, label, ("eval", "wildbench", "groups", g))
      for i, label, g in zip(("creative", "reasoning", "math", "info_seek", "coding"),
                             ("Creative", "Reasoning", "Math", "Info Seek", "Coding"), GROUPS, strict=True)),
    Metric("win", "Win", ("eval", "alpaca_eval", "win_rate")),
    Metric("lc", "LC", ("eval", "alpaca_eval", "lc_win_rate")),
    # The same Elo relative to the Base row (the paper's value: its Elo minus its Base row's Elo).
    Metric("elo_vs_base", "Elo − Base", ("elo_pool", "vs_base")),
)
# Numbers that exist on a CPU run too (the paper does not report them).
OWN_METRICS = (
    Metric("loss", "final loss", ("train", "final", "loss"), paper=False, digits=4),
    Metric("margins", "rewards/margins", ("train", "final", "rewards/margins"), paper=False, digits=4),
    Metric("proxy", "proxy reward", ("eval", "proxy", "reward_mean"), paper=False, digits=4),
    # The held-out pairs (data.holdout, the authors' test split) after the iteration's training stage.
    Metric("heldout_acc", "held-out acc", ("train", "heldout", "reward_accuracy"), paper=False, digits=4),
    Metric("heldout_margin", "held-out margin", ("train", "heldout", "margin_mean"), paper=False, digits=4),
)
# Only in results.csv.
EXTRA_METRICS = (
    Metric("wb_score", "WB score", ("eval", "wildbench", "score")),
    Metric("wb_n_scored", "WB scored", ("eval", "wildbench", "n_scored"), digits=0),
    Metric("wb_judge", "WB judge", ("eval", "wildbench", "judge")),
    Metric("wb_template", "WB template", ("eval", "wildbench", "template", "template")),
    Metric("wb_elo_games", "WB-Elo games", ("eval", "wildbench", "elo_detail", "games"), digits=0),
    Metric("elo_alone", "Elo alone", ("eval", "wildbench", "elo")),  # the run's own rating (the stage's)
    Metric("elo_pool", "Elo pool", ("elo_pool", "pool")),
    Metric("rpo_alpha", "RPO α", ("rpo_alpha",), digits=4),  # trainer.rpo_alpha of the run (report/rpo.py)
    Metric("wb_cost_usd", "WB cost", ("eval", "wildbench", "cost_usd"), digits=4),
    Metric("ae_n_outputs", "AE outputs", ("eval", "alpaca_eval", "n_outputs"), digits=0),
    Metric("ae_avg_length", "AE length", ("eval", "alpaca_eval", "avg_length"), digits=1),
    Metric("proxy_std", "proxy std", ("eval", "proxy", "reward_std"), digits=4),
    Metric("proxy_n", "proxy n", ("eval", "proxy", "n"), digits=0),
    Metric("train_loss", "mean loss", ("train", "train_loss"), digits=4),
    Metric("chosen", "rewards/chosen", ("train", "final", "rewards/chosen"), digits=4),
    Metric("rejected", "rewards/rejected", ("train", "final", "rewards/rejected"), digits=4),
    Metric("accuracy", "rewards/accuracies", ("train", "final", "rewards/accuracies"), digits=4),
    Metric("steps", "steps", ("train", "steps"), digits=0),
    Metric("heldout_loss", "held-out loss", ("train", "heldout", "loss"), digits=4),
    Metric("heldout_pairs", "held-out pairs", ("train", "heldout", "pairs"), digits=0),
)
# Columns computed from WildBench's judge: marked as a proxy when the judge prompt was not WildBench's own.
WB_METRICS = ("elo", "elo_vs_base", "elo_alone", "task", "creative", "reasoning", "math", "info_seek", "coding",
              "wb_score")
# Metrics only the paper's tables have (Table 5's WildBench output length).
PAPER_ONLY = {"length": "Length"}
LABELS = {m.id: m.label for m in (*PAPER_METRICS, *OWN_METRICS, *EXTRA_METRICS)} | PAPER_ONLY

TABLE_TITLES = {
    "3": "Table 3: training on WildFeedback",
    "4": "Table 4: training on UltraFeedback",
    "5": "Table 5: WildBench leaderboard, the paper's models",
    "6": "Table 6: unguided ablation, Qwen2.5-7B, full WildFeedback setting",
    "7": "Table 7: Gemma-3-12B-it, full WildFeedback setting",
    "figure2": "Figure 2: values stated in the text (DRIFT, Qwen2.5-7B, WildBench task score)",
}


@dataclass(frozen=True)
class PaperCell:
    table: str
    data: str
    model: str
    setting: str
    method: str
    iteration: int
    metric: str
    value: str  # as printed in the paper

    @property
    def key(self) -> Key:
        return (self.data, self.model, self.setting, self.method, self.iteration)


def load_cells(path: Path = PAPER_CSV) -> list[PaperCell]:
    with open(path, newline="") as f:
        return [PaperCell(**{**row, "iteration": int(row["iteration"])}) for row in csv.DictReader(f)]


def paper_key(data: str, model: str, setting: str, method: str, iteration: int) -> Key:
    """The key a run's row is looked up under: the base model's numbers do not depend on the data; a method
    label's rpo_alpha suffix (drift_exp/report/rpo.py) is dropped."""
    method = unlabelled(method)
    return ("" if method == "base" else data, model, "" if method in ("base", "seed") else setting, method, iteration)


def paper_index(cells: list[PaperCell]) -> dict[Key, dict[str, str]]:
    """key -> {metric: value as printed}; tables that repeat a cell agree (tests/test_report.py checks)."""
    index: dict[Key, dict[str, str]] = {}
    for c in cells:
        index.setdefault(c.key, {}).setdefault(c.metric, c.value)
    return index
