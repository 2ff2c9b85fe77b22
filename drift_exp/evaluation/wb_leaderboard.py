"""The WildBench leaderboard's other models, read at run time for WB-Elo: their per-task WB-Score files
(eval_results/v2.0625/score.v2/eval=gpt-4o-2024-05-13/<model>.json in allenai/WildBench: a JSON list of
{session_id, score, model_output, ...}) and their LMSYS Arena Elo (leaderboard/data_dir/all_stat.json).

Each file is downloaded once and cached (drift_exp.evaluation.fetch); the checksums of what was read
go into the metrics. Model names drop WildBench's "@together" suffix, as its scripts do.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from drift_exp.errors import DataError
from drift_exp.evaluation.config import EloConfig
from drift_exp.evaluation.fetch import default_cache, fetch_json, is_url

log = logging.getLogger(__name__)


@dataclass
class Leaderboard:
    scores: dict[str, dict[str, tuple[int, str]]]  # model -> session_id -> (score, output)
    init: dict[str, float]  # model -> Arena Elo (anchored models)
    provenance: dict[str, Any] = field(default_factory=dict)


def model_name(file_name: str) -> str:
    return file_name.removesuffix(".json").replace("@together", "")


def list_models(cfg: EloConfig, cache: Path) -> list[str]:
    """eval.wildbench.elo.models, else the .json files named by results_index_url (GitHub contents API
    format: a list of {name, ...}; a plain list of names works too)."""
    if cfg.models:
        return list(cfg.models)
    index, got = fetch_json(cfg.results_index_url, cache, "eval.wildbench.elo.models")
    if not isinstance(index, list):
        raise DataError(f"{got.source}: expected a JSON list of files, got {type(index).__name__}")
    names = [item if isinstance(item, str) else item.get("name", "") for item in index
             if isinstance(item, str | dict)]
    files = sorted(n.removesuffix(".json") for n in names if n.endswith(".json"))
    if not files:
        raise DataError(f"{got.source}: lists no <model>.json file")
    return files


def _score(value: Any) -> int | None:
    try:
        return int(float(value))
    except (TypeError, ValueError):
        return None


def load_leaderboard(cfg: EloConfig) -> Leaderboard:
    """Every listed model's per-task scores and the Arena Elo table; a bad file names its source and row."""
    cache = default_cache(cfg.cache_dir)
    scores: dict[str, dict[str, tuple[int, str]]] = {}
    digests, unscored = [], 0
    for file in list_models(cfg, cache):
        where = f"{cfg.results_url.rstrip('/')}/{file}.json"
        rows, got = fetch_json(where if is_url(where) else str(Path(cfg.results_url) / f"{file}.json"), cache,
                               "eval.wildbench.elo.results_url (a local folder)")
        if not isinstance(rows, list):
            raise DataError(f"{got.source}: expected a JSON list of score records, got {type(rows).__name__}")
        mine: dict[str, tuple[int, str]] = {}
        for i, row in enumerate(rows):
            if not isinstance(row, dict) or not isinstance(row.get("session_id"), str):
                raise DataError(f"{got.source}: row {i}: expected an object with a string 'session_id'")
            score = _score(row.get("score"))
            if score is None:
                unscored += 1
                continue
            mine[row["session_id"]] = (score, str(row.get("model_output") or ""))
        scores[model_name(file)] = mine
        digests.append(f"{file}:{got.sha256}")
    table, got = fetch_json(cfg.init_url, cache, "eval.wildbench.elo.init_url (a local copy)")
    if not isinstance(table, dict):
        raise DataError(f"{got.source}: expected a JSON object of models, got {type(table).__name__}")
    init = {}
    for name, stats in table.items():
        value = stats.get(cfg.init_column, "-") if isinstance(stats, dict) else "-"
        if value not in ("-", None, ""):
            try:
                init[model_name(name)] = float(value)
            except (TypeError, ValueError):
                raise DataError(f"{got.source}: model {name!r}: field {cfg.init_column!r} is not a number: "
                                f"{value!r}") from None
    provenance = {"results_url": cfg.results_url, "models": len(scores),
                  "results_sha256": hashlib.sha256("\n".join(sorted(digests)).encode()).hexdigest(),
                  "init_url": cfg.init_url, "init_column": cfg.init_column, "init_sha256": got.sha256,
                  "anchored": sum(m in init for m in scores), "unscored_rows": unscored}
    log.info("WB-Elo leaderboard: %d models (%d with an Arena Elo), %d unscored rows skipped", len(scores),
             provenance["anchored"], unscored)
    return Leaderboard(scores, init, provenance)


def our_scores(records: list[dict[str, Any]]) -> dict[str, tuple[int, str]]:
    """The policy's judged tasks (wildbench.judge records) in the leaderboard's shape."""
    return {r["session_id"]: (int(r["score"]), r["model_output"]) for r in records if r.get("score") is not None}


def unique_name(name: str, taken: dict[str, Any]) -> str:
    while name in taken:
        name += " (drift_exp)"
    return name


def elo_settings(cfg: EloConfig) -> dict[str, Any]:
    """The rating settings of eval.wildbench.elo, as wb_elo / wb_elo_pool take them (and elo.json records them)."""
    return {"margin": cfg.margin, "tie_margin": cfg.tie_margin, "length_margin": cfg.length_margin,
            "k_factor": cfg.k_factor, "rounds": cfg.rounds, "dynamic": cfg.dynamic, "interval": cfg.interval,
            "seed": cfg.seed}
