"""Reward-model scoring: IterDPO's ranking of two policy samples, and the evaluation proxy."""

from drift_exp.scoring.reward import RewardScorer, question_text

__all__ = ["RewardScorer", "question_text"]
