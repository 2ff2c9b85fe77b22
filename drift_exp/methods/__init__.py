"""Pair construction. A method is two pure halves (docs/DESIGN.md), so generation can run elsewhere:
`requests(records, iteration)` says what to sample; `pairs(records, completions, scorer)` builds
the DPO pairs from what came back. Besides, a method declares from the config alone what it needs
(`needs(family)`: the records it iterates on, samples per record, whether it ranks with the reward
model) and which settings it cannot work with (`config_problems`); the config check, the hub check
and the preflight read those instead of knowing the methods. Table 2 of the paper is the specification:

              chosen                                  rejected
  DRIFT    WF policy sample (guided by feedback)      the real DSAT reply
           UF policy sample                           the data set's rejected
  SPIN     WF the real SAT reply                      policy sample from the context before it
           UF the data set's chosen                   policy sample
  IterDPO  WF policy sample, guided                   policy sample from the context alone
           UF / unguided: two policy samples of one prompt, ranked by the reward model

A method is its module here (ending `PAIR_BUILDER = <class>`) and its conf/method/<name>.yaml, which sets
`kind: <module name>`; the kinds are the modules present (drift_exp.names.method_kinds).
"""

from __future__ import annotations

from importlib import import_module

from drift_exp.config import MethodConfig
from drift_exp.methods.protocol import ULTRAFEEDBACK, WILDFEEDBACK, Needs, PairBuilder, data_family
from drift_exp.names import method_kinds
from drift_exp.records import FeedbackRecord, PreferencePair

__all__ = ["ULTRAFEEDBACK", "WILDFEEDBACK", "Needs", "PairBuilder", "build_method", "data_family", "method_needs",
           "seed_pairs"]


def build_method(cfg: MethodConfig) -> PairBuilder:
    """The pair builder of method.kind: PAIR_BUILDER of drift_exp/methods/<kind>.py."""
    if cfg.kind not in method_kinds():
        raise ValueError(f"method.kind={cfg.kind!r} is not implemented")
    return import_module(f"{__name__}.{cfg.kind}").PAIR_BUILDER(cfg)  # imported on use: only the kind that runs


def method_needs(method: MethodConfig, data_format: str) -> Needs:
    """What the configured method needs on the configured data (its family read from data.format)."""
    return build_method(method).needs(data_family(data_format))


def seed_pairs(records: list[FeedbackRecord]) -> list[PreferencePair]:
    """The warm start's data (iteration 0, every method): DSAT reply rejected, its SAT revision chosen."""
    return [
        PreferencePair(id=r.id, prompt=[dict(m) for m in r.prompt], chosen=r.chosen, rejected=r.rejected,
                       meta={"record_id": r.id, "chosen_from": "sat_revision", "rejected_from": "dsat_reply"})
        for r in records if r.kind == "seed"
    ]
