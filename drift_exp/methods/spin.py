"""SPIN (Chen et al. 2024; paper Table 2): chosen = the real SAT reply (WildFeedback) or the data
set's chosen (UltraFeedback); rejected = a policy sample from the context before that reply."""

from __future__ import annotations

from collections import Counter

from drift_exp.methods.prompts import plain_request
from drift_exp.methods.protocol import Builder, each_sample, pair
from drift_exp.records import Completion, FeedbackRecord, GenRequest, PreferencePair


class Spin(Builder):
    iterates_on = "sat"

    def requests(self, records: list[FeedbackRecord], iteration: int) -> list[GenRequest]:
        return [plain_request(r, "rejected", self.cfg.n_samples) for r in records]

    def pairs(self, records: list[FeedbackRecord], completions: list[Completion],
              scorer=None) -> list[PreferencePair]:
        self.stats = Counter(skipped_empty_sample=0)  # always reported, 0 included (the preview shows it)
        out = [pair(rec, f"s{i}", chosen=rec.chosen, rejected=text, sampled="rejected", sample_index=i,
                    rejected_from="policy", chosen_from="sat_reply" if rec.kind == "sat" else "dataset_chosen")
               for rec, i, text in each_sample(records, completions, self.stats)]
        self.stats["pairs"] = len(out)
        return out


PAIR_BUILDER = Spin  # build_method's entry point for method.kind=spin
