"""WB-Elo in the report: every policy of the report rated in one pool with the leaderboard's models, and
each row's Elo relative to its Base row.

The evaluation stage rates each policy alone against the leaderboard (iter_k/eval/wildbench/elo.json);
the paper rated all its models in one pool, where they also play each other. `pool_elo` does that here:
it reads the judge's per-task scores of every record (`<run>/iter_k/eval/wildbench/scores.json`, or
`<run>/base/eval/...` for the Base row), the leaderboard and the rating settings named by the run's own
config.yaml (eval.wildbench.elo), and rates all of them in one `wb_elo_pool`. Runs whose Elo settings or
leaderboard differ go to separate pools. Each row of the report is one player: the records of one row
(the Base row's base/ in every job of a sweep, the Seed row's iteration 0) are rated as the first of them.

Results go into each record's metrics under `elo_pool`: {elo, std, ci_low, ci_high, games, pool, pooled,
vs_base}; `pooled` is false where the report had no scores to pool (a W&B record, a run without
WB-Elo): `elo` is then the run's own Elo, rated alone. `vs_base` is the row's Elo minus the Base row's
Elo (same model, same pool), so an offset common to all ratings, such as a leaderboard snapshot whose
anchors sit elsewhere, cancels.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from drift_exp.errors import UserError
from drift_exp.names import BASE_FOLDER, iteration_folder
from drift_exp.report.collect import Record, ReportError, value_at

log = logging.getLogger(__name__)

KEY = "elo_pool"  # where a record's pooled numbers go in its metrics
ALONE = "alone"  # the pool id of records rated alone (their run's own Elo)
MODES = ("pool", "alone")


@dataclass
class Pool:
    id: str
    settings: dict[str, Any]
    leaderboard: dict[str, Any]  # the leaderboard's provenance (models, anchored, checksums)
    players: dict[str, list[str]] = field(default_factory=dict)  # player -> the records' sources (run, folder)
    problem: str | None = None  # why this pool could not be rated


def scores_path(r: Record) -> Path | None:
    """The judge records of a local record: base/ for the Base row read from base/metrics.json (which has no
    'iteration'), else iter_k/."""
    run = Path(r.source)
    if not run.is_dir():
        return None
    folder = BASE_FOLDER if r.method == "base" and "iteration" not in r.metrics else iteration_folder(r.iteration)
    path = run / folder / "eval" / "wildbench" / "scores.json"
    return path if path.exists() else None


def elo_config(run: Path) -> Any | None:
    """The run's eval.wildbench.elo (an EloConfig) when its config.yaml has WB-Elo on, else None."""
    from drift_exp.evaluation.config import EloConfig

    path = run / "config.yaml"
    if not path.exists():
        return None
    node = OmegaConf.select(OmegaConf.load(path), "eval.wildbench.elo")
    if node is None:
        return None
    cfg = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(EloConfig), node))
    return cfg if cfg.enabled else None


def _pool_key(cfg: Any) -> str:
    from drift_exp.evaluation.wb_leaderboard import elo_settings

    where = {k: getattr(cfg, k) for k in ("results_url", "models", "results_index_url", "init_url", "init_column")}
    return json.dumps({**elo_settings(cfg), **where}, sort_keys=True, default=str)


def pool_elo(records: list[Record], mode: str = "pool") -> list[Pool]:
    """Rate the records (see the module docstring) and write metrics['elo_pool'] into each record that has
    an Elo; returns the pools rated (none with mode='alone')."""
    from drift_exp.evaluation.wb_elo import wb_elo_pool
    from drift_exp.evaluation.wb_leaderboard import elo_settings, load_leaderboard, our_scores

    if mode not in MODES:
        raise ReportError(f"--elo must be one of {MODES}, got {mode!r}")
    groups: dict[str, tuple[Any, list[tuple[Record, Path]]]] = {}
    if mode == "pool":
        for r in records:
            path = scores_path(r)
            cfg = elo_config(Path(r.source)) if path else None
            if cfg is not None:
                groups.setdefault(_pool_key(cfg), (cfg, []))[1].append((r, path))
    pools, pooled = [], set()
    for n, (cfg, members) in enumerate(groups.values()):
        pool = Pool(id=f"pool{n + 1}" if len(groups) > 1 else "pool", settings=elo_settings(cfg), leaderboard={})
        pools.append(pool)
        try:
            board = load_leaderboard(cfg)
        except UserError as err:
            pool.problem = f"leaderboard not readable: {err}"
            log.warning("WB-Elo pool: %s; the rows keep their runs' own Elo", pool.problem)
            continue
        pool.leaderboard = board.provenance
        results = dict(board.scores)
        player_of: dict[tuple, str] = {}  # one player per report row (the Base row of a sweep's jobs: one)
        for r, path in members:
            if r.row_key in player_of:
                pool.players[player_of[r.row_key]].append(f"{r.source}/{path.parents[2].name}")
                continue
            try:
                scores = our_scores(json.loads(path.read_text()))
            except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
                raise ReportError(f"{path}: not a WildBench judge record list ({err})") from err
            name = f"{r.experiment}/{path.parents[2].name}"
            while name in results:
                name += " (drift_exp)"
            results[name] = scores
            player_of[r.row_key] = name
            pool.players[name] = [f"{r.source}/{path.parents[2].name}"]
        rated = wb_elo_pool(results, board.init, list(pool.players), **pool.settings)
        for r, _ in members:
            got = rated[player_of[r.row_key]]
            if got["elo"] is None:
                continue
            r.metrics[KEY] = {**{k: got[k] for k in ("elo", "std", "ci_low", "ci_high", "games", "length_ties")},
                              "pool": pool.id, "pooled": True, "policies": len(pool.players)}
            pooled.add(id(r))
    for r in records:
        alone = value_at(r.metrics, ("eval", "wildbench", "elo"))
        if id(r) not in pooled and isinstance(alone, int | float):
            r.metrics[KEY] = {"elo": float(alone), "pool": ALONE, "pooled": False}
    _vs_base(records)
    return pools


def _vs_base(records: list[Record]) -> None:
    """metrics['elo_pool']['vs_base'] = Elo - the Base row's Elo of the same model in the same pool (the same
    data and seed when there is such a Base record)."""
    bases = [r for r in records if r.method == "base" and KEY in r.metrics]
    for r in records:
        mine = r.metrics.get(KEY)
        if not mine:
            continue
        same = [b for b in bases if b.model == r.model and b.metrics[KEY]["pool"] == mine["pool"]]
        exact = [b for b in same if (b.data, b.seed) == (r.data, r.seed)]
        base = (exact or same or [None])[0]
        if base is not None:
            mine["vs_base"] = mine["elo"] - base.metrics[KEY]["elo"]


def add_paper_vs_base(paper: dict[tuple, dict[str, str]]) -> dict[tuple, dict[str, str]]:
    """The paper's Elo relative to its Base row (Qwen2.5-*-Instruct in Tables 3 and 5), per key with an Elo."""
    for key, values in paper.items():
        base = paper.get(("", key[1], "", "base", 0), {}).get("elo")
        if "elo" in values and base:
            values.setdefault("elo_vs_base", f"{float(values['elo']) - float(base):+.2f}")
    return paper


def elo_markdown(pools: list[Pool], records: list[Record], mode: str) -> str:
    """The report's WB-Elo section: how the Elo column was computed."""
    alone = sorted({f"{r.experiment} ({r.method} {r.iteration})" for r in records
                    if r.metrics.get(KEY, {}).get("pooled") is False})
    lines = ["## WB-Elo\n"]
    if mode == "alone":
        lines.append("Elo: each run's own rating, every policy rated alone against the leaderboard (--elo alone).\n")
    for p in pools:
        if p.problem:
            lines.append(f"- {p.id}: not rated ({p.problem}).")
            continue
        s = p.settings
        lines.append(f"- {p.id}: {len(p.players)} policies of these runs and the leaderboard's "
                     f"{p.leaderboard.get('models', '?')} models ({p.leaderboard.get('anchored', '?')} anchored at "
                     f"their Arena Elo) rated in one pool; margin {s['margin']}, tie margin {s['tie_margin']}, "
                     f"length margin {s['length_margin']}, K {s['k_factor']}, "
                     f"{'dynamic' if s['dynamic'] else 'fixed'} anchors, interval {s['interval']}, "
                     f"{s['rounds']} rounds, seed {s['seed']}.")
    if alone:
        lines.append(f"- Rated alone (no judge scores to pool; the run's own Elo): {', '.join(alone)}.")
    if not pools and not alone:
        lines.append("No WB-Elo in these runs.")
    lines.append("\n`Elo − Base` is a row's Elo minus its Base row's Elo in the same pool; the paper's value "
                 "beside it is the same difference of its printed numbers.\n")
    return "\n".join(lines)
