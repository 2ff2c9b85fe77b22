"""Benchmarks of the DRIFT paper (Tables 3/4) run as a per-iteration stage: AlpacaEval 2, WildBench v2,
and a reward-model proxy that runs everywhere. `drift_exp.evaluation.stage.evaluate` runs them on one policy
(see there for the files written); `drift_exp.evaluation.base` is the Base row.

This __init__ holds only the config schema (re-exported from `evaluation.config`) and `flat_metrics`:
`drift_exp.config` imports `EvalConfig` through this package, which must not run anything importing the config.
"""

from __future__ import annotations

from typing import Any

from drift_exp.evaluation.config import BENCHMARKS, EvalConfig, JudgeConfig, validate_eval

__all__ = ["BENCHMARKS", "EvalConfig", "JudgeConfig", "flat_metrics", "validate_eval"]


def flat_metrics(metrics: dict[str, Any], prefix: str = "") -> dict[str, float | int]:
    """The numbers of evaluate()'s dict as flat 'a/b/c' keys (for W&B summaries); strings and None dropped."""
    flat: dict[str, float | int] = {}
    for key, value in metrics.items():
        name = f"{prefix}/{key}" if prefix else str(key)
        if isinstance(value, dict):
            flat.update(flat_metrics(value, name))
        elif isinstance(value, int | float) and not isinstance(value, bool):
            flat[name] = value
    return flat
