"""What every method shares: the `PairBuilder` protocol (a method is two pure halves, `requests` and `pairs`;
see drift_exp.methods), its declaration of what it needs (`Needs`, from the config alone), and the helpers the
method modules build pairs with. The method modules import from here, never from the package's __init__
(which imports them: that would be an import cycle)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from drift_exp.config import MethodConfig
from drift_exp.records import Completion, FeedbackRecord, GenRequest, PreferencePair

if TYPE_CHECKING:
    from drift_exp.config import GenerationConfig

# The two data families a method tells apart (paper Table 2): WildFeedback-style conversations with a DSAT
# reply and the user's feedback (data.format auto, annotation, released), or UltraFeedback-style prompts that
# come with the data set's chosen and rejected (data.format ultrafeedback_*).
WILDFEEDBACK = "wildfeedback"
ULTRAFEEDBACK = "ultrafeedback"


def data_family(data_format: str) -> str:
    """The family of a data.format value (config only; no record is read)."""
    return ULTRAFEEDBACK if data_format.startswith("ultrafeedback") else WILDFEEDBACK


def records_family(records: list[FeedbackRecord]) -> str:
    """The family of records already read: UltraFeedback's prompts are kind 'pref'."""
    return ULTRAFEEDBACK if any(r.kind == "pref" for r in records) else WILDFEEDBACK


@dataclass(frozen=True)
class Needs:
    """What a method needs on one data family, known from the config alone; the config check, the hub check,
    the preflight and its cost estimate read this instead of knowing the methods."""

    record_kind: str  # the records it iterates on: dsat | sat (WildFeedback) or pref (UltraFeedback)
    samples_per_record: int  # policy samples drawn per record and iteration, over all its requests
    samples_per_request: int  # the largest n of one request (greedy decoding would make them identical)
    pairs_per_record: int  # at most, per iteration
    reward_model: bool = False  # pairs() ranks samples with the reward model (scorer.path is loaded)


class PairBuilder(Protocol):
    stats: Counter  # what the last pairs() call built and skipped, by reason

    def needs(self, family: str) -> Needs:
        """What the method needs on `family` (WILDFEEDBACK or ULTRAFEEDBACK), from its config alone."""

    def config_problems(self, family: str, generation: GenerationConfig) -> list[tuple[str, str]]:
        """(key, why) of settings this method cannot work with (checked with the config, before any run)."""

    def record_kind(self, records: list[FeedbackRecord]) -> str:
        """Which records the method iterates on (dsat, sat or pref)."""

    def needs_scorer(self, records: list[FeedbackRecord]) -> bool:
        """Whether pairs() ranks samples with the reward model."""

    def requests(self, records: list[FeedbackRecord], iteration: int) -> list[GenRequest]: ...

    def pairs(self, records: list[FeedbackRecord], completions: list[Completion],
              scorer=None) -> list[PreferencePair]: ...


class Builder:
    """What the methods' pair builders share: the config, the last pairs() call's counts, and the answers to
    record_kind / needs_scorer read from the method's own `needs` (so run time and config time agree)."""

    iterates_on = "dsat"  # the WildFeedback records of a method that samples one reply per record

    def __init__(self, cfg: MethodConfig):
        self.cfg = cfg
        self.stats: Counter = Counter()

    def needs(self, family: str) -> Needs:
        """The default: one policy sample per pair, no reward model."""
        n = self.cfg.n_samples
        return Needs(record_kind="pref" if family == ULTRAFEEDBACK else self.iterates_on, samples_per_record=n,
                     samples_per_request=n, pairs_per_record=n)

    def config_problems(self, family: str, generation: GenerationConfig) -> list[tuple[str, str]]:
        """Greedy decoding gives one answer per prompt: more than one sample of a request would be copies."""
        n = self.cfg.n_samples
        if generation.temperature == 0 and n > 1:
            return [("generation.temperature", f"is 0 (greedy), so the method.n_samples={n} samples of a request "
                     "would be identical; sample with a temperature > 0 or set method.n_samples=1")]
        return []

    def record_kind(self, records: list[FeedbackRecord]) -> str:
        return self.needs(records_family(records)).record_kind

    def needs_scorer(self, records: list[FeedbackRecord]) -> bool:
        return self.needs(records_family(records)).reward_model


def is_ultrafeedback(records: list[FeedbackRecord]) -> bool:
    """UltraFeedback-style data: every prompt comes with the data set's chosen and rejected."""
    return records_family(records) == ULTRAFEEDBACK


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
