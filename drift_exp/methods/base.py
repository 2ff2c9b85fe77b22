"""What every method shares: the `PairBuilder` protocol (a method is two pure halves, `requests` and `pairs`;
see drift_exp.methods) and the helpers the method modules build pairs with. The method modules import from
here, never from the package's __init__ (which imports them: that would be an import cycle)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Protocol

from drift_exp.config import MethodConfig
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


class Builder:
    """What the three methods' pair builders share: the config, the last pairs() call's counts, and the
    records they iterate on (`iterates_on` on WildFeedback, every prompt on UltraFeedback)."""

    iterates_on = "dsat"

    def __init__(self, cfg: MethodConfig):
        self.cfg = cfg
        self.stats: Counter = Counter()

    def record_kind(self, records: list[FeedbackRecord]) -> str:
        return "pref" if is_ultrafeedback(records) else self.iterates_on

    def needs_scorer(self, records: list[FeedbackRecord]) -> bool:
        return False


def is_ultrafeedback(records: list[FeedbackRecord]) -> bool:
    """UltraFeedback-style data: every prompt comes with the data set's chosen and rejected."""
    return any(r.kind == "pref" for r in records)


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
