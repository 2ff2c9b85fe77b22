"""Pair construction. A method is two pure halves (DESIGN.md), so generation can run elsewhere:
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

from collections import Counter
from collections.abc import Iterator
from importlib import import_module
from typing import Protocol

from drift_exp.config import MethodConfig
from drift_exp.names import METHOD_KINDS
from drift_exp.records import Completion, FeedbackRecord, GenRequest, PreferencePair


class PairBuilder(Protocol):
    stats: Counter  # what the last pairs() call built and skipped, by reason

    def record_kind(self, records: list[FeedbackRecord]) -> str:
        """Which records the method iterates on (dsat, sat or pref)."""

    def needs_scorer(self, records: list[FeedbackRecord]) -> bool:
        """Whether pairs() ranks samples with the reward model."""

    def requests(self, records: list[FeedbackRecord], iteration: int) -> list[GenRequest]: ...

    def pairs(self, records: list[FeedbackRecord], completions: list[Completion],
              scorer=None) -> list[PreferencePair]: ...


def is_ultrafeedback(records: list[FeedbackRecord]) -> bool:
    """UltraFeedback-style data: every prompt comes with the data set's chosen and rejected."""
    return any(r.kind == "pref" for r in records)


def build_method(cfg: MethodConfig) -> PairBuilder:
    """The pair builder of method.kind: PAIR_BUILDER of drift_exp/methods/<kind>.py (the kinds: drift_exp.names)."""
    if cfg.kind not in METHOD_KINDS:
        raise ValueError(f"method.kind={cfg.kind!r} is not implemented")
    return import_module(f"{__name__}.{cfg.kind}").PAIR_BUILDER(cfg)  # imported on use: they import this package


def seed_pairs(records: list[FeedbackRecord]) -> list[PreferencePair]:
    """The warm start's data (iteration 0, every method): DSAT reply rejected, its SAT revision chosen."""
    return [
        PreferencePair(id=r.id, prompt=[dict(m) for m in r.prompt], chosen=r.chosen, rejected=r.rejected,
                       meta={"record_id": r.id, "chosen_from": "sat_revision", "rejected_from": "dsat_reply"})
        for r in records if r.kind == "seed"
    ]


def each_sample(records: list[FeedbackRecord], completions: list[Completion],
                stats: Counter) -> Iterator[tuple[FeedbackRecord, int, str]]:
    """(record, sample index, text) for every non-empty policy sample; empty ones are counted, not paired."""
    by_id = {r.id: r for r in records}
    for comp in completions:
        rec = by_id[comp.record_id]
        for i, text in enumerate(comp.outputs):
            if not text.strip():
                stats["skipped_empty_sample"] += 1
                continue
            yield rec, i, text


def pair(rec: FeedbackRecord, suffix: str, chosen: str, rejected: str, **meta) -> PreferencePair:
    """A pair on the record's context (never the feedback turn), with provenance in meta."""
    return PreferencePair(id=f"{rec.id}-{suffix}", prompt=[dict(m) for m in rec.prompt], chosen=chosen,
                          rejected=rejected, meta={"record_id": rec.id, **meta})
