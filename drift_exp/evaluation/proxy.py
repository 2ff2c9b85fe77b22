"""A benchmark proxy that runs everywhere: the reward model's score of the policy's greedy replies to
held-out prompts (bundled: 16 prompts, some multi-turn). Logged every iteration as mean, std, n.

The scorer is the same RewardScorer IterDPO ranks with (OpenAssistant/reward-model-deberta-v3-large-v2
on real runs, the tiny random classifier on CPU), fed (question_text(prompt), reply).
"""

from __future__ import annotations

import math
from typing import Any

from drift_exp.config import ScorerConfig
from drift_exp.records import Completion, GenRequest


def requests(prompts: list[dict[str, Any]]) -> list[GenRequest]:
    return [GenRequest(record_id=f"proxy/{p['id']}", slot="eval", messages=p["messages"]) for p in prompts]


def summarize(rewards: list[float]) -> dict[str, Any]:
    """mean, population std (ddof 0) and n of the rewards."""
    n = len(rewards)
    if n == 0:
        return {"reward_mean": None, "reward_std": None, "n": 0}
    mean = sum(rewards) / n
    std = math.sqrt(sum((r - mean) ** 2 for r in rewards) / n)
    return {"reward_mean": mean, "reward_std": std, "n": n}


def score(prompts: list[dict[str, Any]], completions: list[Completion], scorer_cfg: ScorerConfig
          ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(summary, per-prompt rows {id, output, reward})."""
    from drift_exp.scoring import RewardScorer, question_text

    if scorer_cfg.path == "auto":
        raise ValueError("proxy: pass a ScorerConfig with its path resolved (drift_exp.config.scorer_path)")
    for p, c in zip(prompts, completions, strict=True):
        assert c.record_id == f"proxy/{p['id']}", (c.record_id, p["id"])
    scorer = RewardScorer(scorer_cfg)
    rewards = scorer.score([question_text(p["messages"]) for p in prompts], [c.outputs[0] for c in completions])
    del scorer
    rows = [{"id": p["id"], "output": c.outputs[0], "reward": r} for p, c, r in zip(prompts, completions, rewards,
                                                                                   strict=True)]
    return summarize(rewards), rows
