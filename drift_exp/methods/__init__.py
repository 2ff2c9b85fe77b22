"""Pair construction. A method is two pure halves (DESIGN.md), so generation can run elsewhere:
`requests(records, iteration)` says what to sample; `pairs(records, completions, scorer)` builds
the DPO pairs from what came back. Table 2 of the paper is the specification."""

from __future__ import annotations

from collections import Counter
from typing import Protocol

from drift_exp.config import MethodConfig
from drift_exp.records import Completion, FeedbackRecord, GenRequest, PreferencePair


class PairBuilder(Protocol):
    stats: Counter  # what the last pairs() call built and skipped, by reason

    def requests(self, records: list[FeedbackRecord], iteration: int) -> list[GenRequest]: ...

    def pairs(self, records: list[FeedbackRecord], completions: list[Completion],
              scorer=None) -> list[PreferencePair]: ...


def build_method(cfg: MethodConfig) -> PairBuilder:
    if cfg.kind == "drift":
        from drift_exp.methods.drift import Drift

        return Drift(cfg)
    raise ValueError(f"method.kind={cfg.kind!r} is not implemented")


def seed_pairs(records: list[FeedbackRecord]) -> list[PreferencePair]:
    """The warm start's data (iteration 0, every method): DSAT reply rejected, its SAT revision chosen."""
    return [
        PreferencePair(id=r.id, prompt=[dict(m) for m in r.prompt], chosen=r.chosen, rejected=r.rejected,
                       meta={"record_id": r.id, "chosen_from": "sat_revision", "rejected_from": "dsat_reply"})
        for r in records if r.kind == "seed"
    ]
