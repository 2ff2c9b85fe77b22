"""WildBench v2's WB-Score aggregation, as `leaderboard/data_dir/_create_tables.py` (score mode) and
`_merge_results.py` compute it.

- Every task belongs to the macro groups of its primary_tag + secondary_tags (deduplicated).
- score: mean judge score (1-10) over every scored task; adjusted = (mean - 5) * 2.
- Per group: mean over its tasks, then (mean - 5) * 2. Outputs that are empty or end with
  "... (truncated)" are left out of the group means and the length (not out of the overall mean).
- task_macro = sum over the groups present of group score x weight, divided by the sum of ALL five
  weights (a group with no task counts as 0, as in WildBench).
- The leaderboard (and the DRIFT paper's Task Score / per-category columns) shows these x 10.
"""

from __future__ import annotations

from typing import Any

TASK_GROUP = {
    "Information seeking": "Information/Advice seeking",
    "Creative Writing": "Creative Tasks",
    "Coding & Debugging": "Coding & Debugging",
    "Reasoning": "Planning & Reasoning",
    "Editing": "Creative Tasks",
    "Math": "Math & Data Analysis",
    "Planning": "Planning & Reasoning",
    "Brainstorming": "Creative Tasks",
    "Role playing": "Creative Tasks",
    "Advice seeking": "Information/Advice seeking",
    "Data Analysis": "Math & Data Analysis",
    "Others": "Creative Tasks",
}
GROUP_WEIGHTS = {
    "Creative Tasks": 0.5,
    "Planning & Reasoning": 1.25,
    "Math & Data Analysis": 1.0,
    "Information/Advice seeking": 0.75,
    "Coding & Debugging": 1.25,
}
GROUPS = tuple(GROUP_WEIGHTS)
TRUNCATED = "... (truncated)"


def task_groups(task: dict[str, Any]) -> list[str]:
    """The macro groups of one WildBench task (primary + secondary tags, deduplicated, sorted)."""
    return sorted({TASK_GROUP[t] for t in [task["primary_tag"], *task["secondary_tags"]]})


def wb_scores(records: list[dict[str, Any]], groups_of: dict[str, list[str]]) -> dict[str, Any]:
    """WildBench's score row from per-task records {session_id, score (None: unscored), model_output}.

    Returns raw (1-10 based) values: score (mean), adjusted_score, task_categorized_scores (adjusted),
    task_macro_score, avg_len, total, n_scored.
    """
    scored = [r for r in records if r.get("score") is not None]
    out: dict[str, Any] = {"total": len(records), "n_scored": len(scored)}
    if not scored:
        return out
    scores = [float(r["score"]) for r in scored]
    mean = sum(scores) / len(scores)
    per_group: dict[str, list[float]] = {}
    lengths = []
    for r in scored:
        text = r["model_output"]
        if text.endswith(TRUNCATED) or len(text) == 0:
            continue
        lengths.append(len(text))
        for g in groups_of[r["session_id"]]:
            per_group.setdefault(g, []).append(float(r["score"]))
    group_scores = {g: (sum(v) / len(v) - 5) * 2 for g, v in per_group.items()}
    macro = sum(s * GROUP_WEIGHTS[g] for g, s in group_scores.items()) / sum(GROUP_WEIGHTS.values())
    out.update(score=mean, adjusted_score=(mean - 5) * 2, task_categorized_scores=group_scores,
               task_macro_score=macro, adjusted_task_macro_score=macro,
               avg_len=sum(lengths) / len(lengths) if lengths else None)
    return out


def leaderboard(row: dict[str, Any], digits: int = 4) -> dict[str, Any]:
    """The leaderboard's x10 columns: WB_score, WB_score.task_macro and WB_score.<group> (None: no task)."""
    if not row.get("n_scored"):
        return {}
    cats = row["task_categorized_scores"]
    return {
        "score": round(row["adjusted_score"] * 10, digits),
        "task_macro": round(row["task_macro_score"] * 10, digits),
        "groups": {g: (round(cats[g] * 10, digits) if g in cats else None) for g in GROUPS},
        "score_mean": round(row["score"], digits),
        "avg_length": None if row["avg_len"] is None else round(row["avg_len"], 1),
    }
