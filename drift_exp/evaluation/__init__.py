"""Benchmarks of the DRIFT paper (Tables 3/4) run as a per-iteration stage: AlpacaEval 2, WildBench v2,
and a reward-model proxy that runs everywhere. See `drift_exp.evaluation.stage` for the files written.

This module imports only the config schema, so `drift_exp.config` can import `EvalConfig` from here;
`evaluate` loads the rest (generation, judges, reward model) when called.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from drift_exp.evaluation.config import BENCHMARKS, EvalConfig, JudgeConfig, validate_eval

if TYPE_CHECKING:
    from drift_exp.config import GenerationConfig, ScorerConfig

__all__ = ["BENCHMARKS", "EvalConfig", "JudgeConfig", "evaluate", "flat_metrics", "validate_eval"]


def evaluate(eval_cfg: EvalConfig, gen_cfg: GenerationConfig, model_dtype: str, scorer_cfg: ScorerConfig,
             policy_path: str, out_dir: Path, generator_name: str, seed: int) -> dict[str, Any]:
    """Generate on the configured benchmarks with policy_path, write their files under out_dir, run the
    judges that are enabled, and return the metrics for iter_k/metrics.json["eval"]."""
    from drift_exp.evaluation.stage import evaluate as _evaluate

    return _evaluate(eval_cfg, gen_cfg, model_dtype, scorer_cfg, policy_path, out_dir, generator_name, seed)


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
