"""Pair construction. A method is two pure halves (docs/DESIGN.md), so generation can run elsewhere:
`requests(records, iteration)` says what to sample; `pairs(records, completions, scorer)` builds
the DPO pairs from what came back. Table 2 of the paper is the specification:

              chosen                                  rejected
  DRIFT    WF policy sample (guided by feedback)      the real DSAT reply
           UF policy sample                           the data set's rejected
  SPIN     WF the real SAT reply                      policy sample from the context before it
           UF the data set's chosen                   policy sample
  IterDPO  WF policy sample, guided                   policy sample from the context alone
           UF / unguided: two policy samples of one prompt, ranked by the reward model
"""

from __future__ import annotations

from importlib import import_module

from drift_exp.config import MethodConfig
from drift_exp.methods.base import PairBuilder
from drift_exp.names import METHOD_KINDS
from drift_exp.records import FeedbackRecord, PreferencePair

__all__ = ["PairBuilder", "build_method", "seed_pairs"]


def build_method(cfg: MethodConfig) -> PairBuilder:
    """The pair builder of method.kind: PAIR_BUILDER of drift_exp/methods/<kind>.py (the kinds: drift_exp.names)."""
    if cfg.kind not in METHOD_KINDS:
        raise ValueError(f"method.kind={cfg.kind!r} is not implemented")
    return import_module(f"{__name__}.{cfg.kind}").PAIR_BUILDER(cfg)  # imported on use: only the kind that runs


def seed_pairs(records: list[FeedbackRecord]) -> list[PreferencePair]:
    """The warm start's data (iteration 0, every method): DSAT reply rejected, its SAT revision chosen."""
    return [
        PreferencePair(id=r.id, prompt=[dict(m) for m in r.prompt], chosen=r.chosen, rejected=r.rejected,
                       meta={"record_id": r.id, "chosen_from": "sat_revision", "rejected_from": "dsat_reply"})
        for r in records if r.kind == "seed"
    ]
