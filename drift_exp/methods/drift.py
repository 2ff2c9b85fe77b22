"""DRIFT (paper §3, Table 2): chosen = a fresh policy sample, rejected = the real DSAT reply."""

from __future__ import annotations

from collections import Counter

from drift_exp.config import MethodConfig
from drift_exp.methods.prompts import guided_request, plain_request
from drift_exp.records import Completion, FeedbackRecord, GenRequest, PreferencePair


class Drift:
    """Guided (default): sample the chosen from context + DSAT reply + feedback + instruction.
    Unguided (Table 6): sample it from the context alone. The pair's prompt is always the
    context without the feedback, and the rejected is the DSAT reply byte for byte."""

    def __init__(self, cfg: MethodConfig):
        self.cfg = cfg
        self.stats: Counter = Counter()

    def requests(self, records: list[FeedbackRecord], iteration: int) -> list[GenRequest]:
        out = []
        for rec in records:
            if self.cfg.guided:
                out.append(guided_request(rec, "chosen", self.cfg.prompt_format, self.cfg.instruction,
                                          self.cfg.n_samples))
            else:
                out.append(plain_request(rec, "chosen", self.cfg.n_samples))
        return out

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
                out.append(PreferencePair(
                    id=f"{rec.id}-s{i}",
                    prompt=[dict(m) for m in rec.prompt],
                    chosen=text,
                    rejected=rec.rejected,
                    meta={"record_id": rec.id, "sampled": "chosen", "sample_index": i,
                          "chosen_from": "policy", "rejected_from": "dsat_reply"},
                ))
        self.stats["pairs"] = len(out)
        return out
