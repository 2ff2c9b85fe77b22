"""DRIFT (paper §3, Table 2): chosen = a fresh policy sample, rejected = the real DSAT reply
(WildFeedback) or the data set's rejected (UltraFeedback)."""

from __future__ import annotations

from collections import Counter

from drift_exp.methods.prompts import guided_request, plain_request
from drift_exp.methods.protocol import Builder, each_sample, pair
from drift_exp.records import Completion, FeedbackRecord, GenRequest, PreferencePair


class Drift(Builder):
    """Guided (default, WildFeedback): sample the chosen from context + DSAT reply + feedback +
    instruction. Unguided (Table 6) and UltraFeedback (no feedback turn): from the context alone.
    The pair's prompt is always the context without the feedback; the rejected is kept byte for byte."""

    def requests(self, records: list[FeedbackRecord], iteration: int) -> list[GenRequest]:
        n = self.cfg.n_samples
        return [guided_request(r, "chosen", self.cfg.prompt_format, self.cfg.instruction, n)
                if self.cfg.guided and r.kind == "dsat" else plain_request(r, "chosen", n) for r in records]

    def pairs(self, records: list[FeedbackRecord], completions: list[Completion],
              scorer=None) -> list[PreferencePair]:
        self.stats = Counter(skipped_empty_sample=0)  # always reported, 0 included (the preview shows it)
        out = [pair(rec, f"s{i}", chosen=text, rejected=rec.rejected, sampled="chosen", sample_index=i,
                    chosen_from="policy", rejected_from="dsat_reply" if rec.kind == "dsat" else "dataset_rejected")
               for rec, i, text in each_sample(records, completions, self.stats)]
        self.stats["pairs"] = len(out)
        return out


PAIR_BUILDER = Drift  # build_method's entry point for method.kind=drift
