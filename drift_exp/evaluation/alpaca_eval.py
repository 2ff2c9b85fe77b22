"""AlpacaEval 2: generation requests, `model_outputs.json` in the official format, and the official
evaluator run as a subprocess with its leaderboard.csv read back.

model_outputs.json is a JSON list in benchmark order of
{"instruction", "output", "generator", "dataset", "datasplit": "eval"} (alpaca_eval's example/outputs.json).
`alpaca_eval --model_outputs F --annotators_config weighted_alpaca_eval_gpt4_turbo --output_path D`
writes D/<annotators_config>/leaderboard.csv: first column the model name (no header), then columns
such as win_rate, standard_error, n_total, avg_length, length_controlled_winrate, lc_standard_error.
"""

from __future__ import annotations

import csv
import logging
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from drift_exp.errors import DataError, UserError
from drift_exp.records import Completion, GenRequest, write_json

log = logging.getLogger(__name__)

OUTPUTS_FILE = "model_outputs.json"
DATASPLIT = "eval"


class AlpacaEvalFailed(UserError):
    """The official evaluator exited with an error; the message holds its last lines."""


def requests(rows: list[dict[str, Any]]) -> list[GenRequest]:
    """Each instruction as a single user turn through the model's chat template."""
    return [GenRequest(record_id=f"alpaca_eval/{i}", slot="eval",
                       messages=[{"role": "user", "content": r["instruction"]}]) for i, r in enumerate(rows)]


def output_rows(rows: list[dict[str, Any]], completions: list[Completion], generator: str) -> list[dict[str, Any]]:
    out = []
    for i, (row, c) in enumerate(zip(rows, completions, strict=True)):
        assert c.record_id == f"alpaca_eval/{i}", (c.record_id, i)
        out.append({"instruction": row["instruction"], "output": c.outputs[0], "generator": generator,
                    "dataset": row.get("dataset", "alpaca_eval"), "datasplit": DATASPLIT})
    return out


def write_model_outputs(path: Path, rows: list[dict[str, Any]]) -> None:
    write_json(path, rows)


def avg_length(rows: list[dict[str, Any]]) -> int:
    """AlpacaEval's avg_length column: mean output length in characters, as an int."""
    return int(sum(len(r["output"]) for r in rows) / len(rows)) if rows else 0


def evaluator_available() -> str | None:
    """None when the official evaluator can run here, else why not."""
    if shutil.which("alpaca_eval") is None:
        return "the `alpaca_eval` command is not installed (pip install alpaca-eval)"
    if not (os.environ.get("OPENAI_API_KEY") or os.environ.get("OPENAI_CLIENT_CONFIG_PATH")):
        return "no judge key: OPENAI_API_KEY (or OPENAI_CLIENT_CONFIG_PATH) is not set"
    return None


def evaluator_command(outputs: Path, output_path: Path, annotator: str) -> list[str]:
    return ["alpaca_eval", "--model_outputs", str(outputs), "--annotators_config", annotator,
            "--output_path", str(output_path)]


def run_evaluator(outputs: Path, output_path: Path, annotator: str) -> Path:
    """Run the official evaluator; return its leaderboard.csv. Its output goes to output_path/alpaca_eval.log."""
    cmd = evaluator_command(outputs, output_path, annotator)
    log.info("AlpacaEval: %s", " ".join(cmd))
    output_path.mkdir(parents=True, exist_ok=True)
    logfile = output_path / "alpaca_eval.log"
    with open(logfile, "w", encoding="utf-8") as f:
        proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, text=True)
    if proc.returncode != 0:
        tail = "".join(logfile.read_text(encoding="utf-8", errors="replace").splitlines(keepends=True)[-20:])
        raise AlpacaEvalFailed(f"alpaca_eval exited with code {proc.returncode} (log: {logfile}):\n{tail}")
    board = output_path / annotator / "leaderboard.csv"
    if not board.exists():
        raise AlpacaEvalFailed(f"alpaca_eval finished but wrote no {board}")
    return board


def _number(value: str) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def read_leaderboard(path: Path, generator: str) -> dict[str, Any]:
    """The generator's row of leaderboard.csv: win_rate, lc_win_rate, their standard errors, avg_length, n_total."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    if not rows:
        raise DataError(f"{path}: empty leaderboard")
    header = rows[0]
    for required in ("win_rate", "length_controlled_winrate"):
        if required not in header:
            raise DataError(f"{path}: no {required!r} column (columns: {header})")
    names = [r[0] for r in rows[1:] if r]
    found = [r for r in rows[1:] if r and r[0] == generator]
    if not found:
        raise DataError(f"{path}: no row for generator {generator!r} (rows: {names})")
    row = dict(zip(header, found[0], strict=False))
    out = {"win_rate": _number(row["win_rate"]), "lc_win_rate": _number(row["length_controlled_winrate"])}
    for src, dst in (("standard_error", "win_rate_se"), ("lc_standard_error", "lc_win_rate_se"),
                     ("avg_length", "avg_length"), ("n_total", "n_total")):
        if src in row:
            value = _number(row[src])
            out[dst] = int(value) if dst in ("avg_length", "n_total") and value is not None else value
    return out
