"""WB-Elo as WildBench's leaderboard computes it (allenai/WildBench, leaderboard/wb_elo.py), written anew.

1. Games. On every task, every two models that both have a WB-Score play one virtual game: the higher
   score wins when the gap is at least `margin`, otherwise a gap of at most `tie_margin` is a draw, and
   any other gap is no game (with margin 2 and tie margin 2, WildBench's settings, a gap of 2 or more wins
   and a gap of 0 or 1 is a draw). A pair is left out when either output is empty or was cut
   ("... (truncated)"). Scores count as whole numbers (int(score)), as WildBench stores them.
   The length rule (`length_margin` > 0): a game whose two outputs differ in length by more than
   `length_margin` characters is a draw, whatever the scores. Lengths are those of the outputs with
   surrounding white space stripped (WildBench strips them when it loads the results); -1 (or 0)
   switches the rule off, as in WildBench.
2. Ratings. Models with an LMSYS Chatbot Arena Elo (WildBench's all_stat.json) start from it and are
   anchored; the others start at 1000. Games between two anchored models are not played. The games are
   played one by one in random order with the logistic Elo update (scale 400, K-factor `k_factor`):
   unanchored models always move; anchored ones move only when `dynamic`, and are then pulled halfway
   back to their Arena Elo on every `interval`-th game they play (their first, (interval+1)-th, ...).
3. The order is reshuffled `rounds` times, each round starting from the initial ratings; a model's
   WB-Elo is its mean final rating over the rounds (std, median and the 2.5/97.5 percentiles too).

`wb_elo` rates one policy among the leaderboard's models; `wb_elo_pool` rates several policies in one
pool with them (the policies also play each other), as the paper rated its models.

The rounds are independent, so they are played side by side as the rows of one array: one step of
the loop plays game t of every round's shuffled order. The random order differs from WildBench's
(numpy's generator, not Python's `random`), so single digits may differ; the method is the same.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from drift_exp.evaluation.wb_metrics import TRUNCATED

START = 1000.0  # the rating of a model without an Arena Elo
SCALE = 400.0


@dataclass
class Games:
    models: list[str]
    first: np.ndarray  # index into models
    second: np.ndarray
    outcome: np.ndarray  # the first model's result: 1 win, 0.5 draw, 0 loss
    length_tie: np.ndarray | None = None  # per game: the scores decided it, the length rule made it a draw


def usable(output: str) -> bool:
    text = output.strip()
    return bool(text) and not text.endswith(TRUNCATED)


def build_games(results: dict[str, dict[str, tuple[int, str]]], margin: int, tie_margin: int,
                length_margin: int = -1) -> Games:
    """The virtual games of step 1 from {model: {session_id: (score, output)}}."""
    models = sorted(results)
    sessions: dict[str, list[tuple[int, int, int]]] = {}
    for i, model in enumerate(models):
        for sid, (score, output) in results[model].items():
            if usable(output):
                sessions.setdefault(sid, []).append((i, int(score), len(output.strip())))
    first, second, outcome, by_length = [], [], [], []
    for entries in sessions.values():
        for x in range(len(entries)):
            i, si, li = entries[x]
            for y in range(x + 1, len(entries)):
                j, sj, lj = entries[y]
                gap = si - sj
                if abs(gap) >= margin:
                    result = 1.0 if gap > 0 else 0.0
                elif abs(gap) <= tie_margin:
                    result = 0.5
                else:
                    continue
                tie = length_margin > 0 and abs(li - lj) > length_margin
                by_length.append(tie and result != 0.5)
                if tie:
                    result = 0.5
                first.append(i)
                second.append(j)
                outcome.append(result)
    return Games(models, np.asarray(first, dtype=np.int32), np.asarray(second, dtype=np.int32),
                 np.asarray(outcome, dtype=np.float64), np.asarray(by_length, dtype=bool))


def play(games: Games, init: dict[str, float], k_factor: float, rounds: int, dynamic: bool, interval: int,
         seed: int, max_cells: int = 100_000_000) -> np.ndarray:
    """Step 2 for `rounds` shuffles: the final ratings, shape (rounds, models)."""
    m = len(games.models)
    anchored = np.array([name in init for name in games.models], dtype=bool)
    start = np.array([init.get(name, START) for name in games.models], dtype=np.float64)
    played = ~(anchored[games.first] & anchored[games.second])
    first, second, outcome = games.first[played], games.second[played], games.outcome[played]
    anchored_1, anchored_2 = anchored[first], anchored[second]
    start_1, start_2 = start[first], start[second]
    n = len(first)
    rng = np.random.default_rng(seed)
    pull = dynamic and interval > 0
    finals = []
    batch = max(1, min(rounds, max_cells // max(n, 1)))  # rounds per pass, bounding the order array's memory
    for done in range(0, rounds, batch):
        r = min(batch, rounds - done)
        order = np.stack([rng.permutation(n).astype(np.int32) for _ in range(r)]) if n else np.zeros((r, 0), int)
        elo = np.tile(start, r)  # round-major (round * m + model), so one index reaches a round's model
        count = np.zeros(r * m, dtype=np.int64)
        offset = np.arange(r) * m
        for t in range(n):
            g = order[:, t]
            x, y = offset + first[g], offset + second[g]
            rx, ry = elo[x], elo[y]
            # Both expectations come from the ratings before the game: E_y = 1 - E_x, so y moves by -delta.
            delta = k_factor * (outcome[g] - 1.0 / (1.0 + 10.0 ** ((ry - rx) / SCALE)))
            nx, ny = rx + delta, ry - delta
            if not dynamic:  # anchored models keep their Arena Elo
                nx, ny = np.where(anchored_1[g], rx, nx), np.where(anchored_2[g], ry, ny)
            elif pull:  # ... or move, pulled halfway back on their 1st, (interval+1)-th, ... game
                px, py = anchored_1[g] & (count[x] % interval == 0), anchored_2[g] & (count[y] % interval == 0)
                nx = np.where(px, (nx + start_1[g]) / 2, nx)
                ny = np.where(py, (ny + start_2[g]) / 2, ny)
                count[x] += 1
                count[y] += 1
            elo[x], elo[y] = nx, ny
        finals.append(elo.reshape(r, m))
    return np.concatenate(finals)


def summarize(finals: np.ndarray, column: int) -> dict[str, float]:
    x = finals[:, column]
    return {"elo": float(x.mean()), "std": float(x.std()), "median": float(np.median(x)),
            "ci_low": float(np.percentile(x, 2.5)), "ci_high": float(np.percentile(x, 97.5))}


def wb_elo_pool(results: dict[str, dict[str, tuple[int, str]]], init: dict[str, float], targets: list[str], *,
                margin: int, tie_margin: int, k_factor: float, rounds: int, dynamic: bool, interval: int, seed: int,
                length_margin: int = -1) -> dict[str, dict[str, Any]]:
    """WB-Elo of every model in `targets`, rated in one pool: all of `results` (the leaderboard's models and
    the targets, each under its own name) play each other in the same shuffled rounds. init: Arena Elo by
    model (anchors). Returns {target: {elo, std, median, ci_low, ci_high, games, wins, draws, losses,
    length_ties, models, anchored}}; elo is None for a target that played no game."""
    missing = [t for t in targets if t not in results]
    if missing:
        raise KeyError(f"targets without results: {missing}")
    games = build_games(results, margin, tie_margin, length_margin)
    finals = None
    out: dict[str, dict[str, Any]] = {}
    for target in targets:
        t = games.models.index(target)
        mine = (games.first == t) | (games.second == t)
        won = ((games.first == t) & (games.outcome == 1.0)) | ((games.second == t) & (games.outcome == 0.0))
        draws = mine & (games.outcome == 0.5)
        counts: dict[str, Any] = {"games": int(mine.sum()), "wins": int(won.sum()), "draws": int(draws.sum()),
                                  "losses": int(mine.sum() - won.sum() - draws.sum()),
                                  "length_ties": int((mine & games.length_tie).sum()), "models": len(games.models),
                                  "anchored": sum(name in init for name in games.models)}
        if not counts["games"]:
            out[target] = {"elo": None, **counts}
            continue
        if finals is None:
            finals = play(games, init, k_factor, rounds, dynamic, interval, seed)
        out[target] = {**summarize(finals, t), **counts}
    return out


def wb_elo(results: dict[str, dict[str, tuple[int, str]]], init: dict[str, float], target: str, *, margin: int,
           tie_margin: int, k_factor: float, rounds: int, dynamic: bool, interval: int, seed: int,
           length_margin: int = -1) -> dict[str, Any]:
    """WB-Elo of `target` among `results` (its own scores included there); init: Arena Elo by model.

    Returns {elo, std, median, ci_low, ci_high, games, wins, draws, losses, length_ties, models, anchored};
    elo is None when the target played no game (no task in common with the others). length_ties: the
    target's games that the scores decided and the length rule made draws.
    """
    return wb_elo_pool(results, init, [target], margin=margin, tie_margin=tie_margin, k_factor=k_factor,
                       rounds=rounds, dynamic=dynamic, interval=interval, seed=seed,
                       length_margin=length_margin)[target]
