"""SPIN (Chen et al. 2024; paper Table 2): chosen = the real SAT reply (WildFeedback) or the data
set's chosen (UltraFeedback); rejected = a policy sample from the context before that reply."""

from __future__ import annotations

from collections import Counter

from drift_exp.config import MethodConfig
from drift_exp.methods import is_ultrafeedback, pair
from drift_exp.methods.prompts import plain_request
from drift_exp.records import Completion, FeedbackRecord, GenRequest, PreferencePair


class Spin:
    def __init__(self, cfg: MethodConfig):
        self.cfg = cfg
        self.stats: Counter = Counter()

    def record_kind(self, records: list[FeedbackRecord]) -> str:
        return "pref" if is_ultrafeedback(records) else "sat"

    def needs_scorer(self, records: list[FeedbackRecord]) -> bool:
        return False

    def requests(self, records: list[FeedbackRecord], iteration: int) -> list[GenRequest]:
        return [plain_request(r, "rejected", self.cfg.n_samples) for r in records]

    def pairs(self, records: list[FeedbackRecord], completions: list[Completion],
              scorer=None) -> list[PreferencePair]:
        by_id = {r.id: r for r in records}
        self.stats = Counter()
        out = []
        for comp in completions:
            rec = by_id[comp.record_id]
            for i, text in enumerate(comp.outputs):
                if not text.strip():
                    self.stats["skipped_empty_sample"] += 1
                    continue
                out.append(pair(rec, f"s{i}", chosen=rec.chosen, rejected=text, sampled="rejected",
                                sample_index=i, rejected_from="policy",
                                chosen_from="sat_reply" if rec.kind == "sat" else "dataset_chosen"))
        self.stats["pairs"] = len(out)
        return out
