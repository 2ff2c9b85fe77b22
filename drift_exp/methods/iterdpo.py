"""Iterative DPO (Xiong et al. 2024; paper Table 2): both responses are policy samples.

WildFeedback, guided (default): chosen from context + DSAT reply + feedback + instruction,
rejected from the context alone (it never sees what the user wanted). Unguided (Table 6) and
UltraFeedback: two samples of the same prompt, ranked by the reward model; ties are skipped.
"""

from __future__ import annotations

from collections import Counter

from drift_exp.methods.prompts import guided_request, plain_request
from drift_exp.methods.protocol import ULTRAFEEDBACK, Builder, Needs, pair, records_family
from drift_exp.records import Completion, FeedbackRecord, GenRequest, PreferencePair
from drift_exp.scoring import question_text


class IterDPO(Builder):
    def ranks(self, family: str) -> bool:
        """Unguided, or on UltraFeedback (no feedback turn to guide with): two samples ranked by the reward model."""
        return not self.cfg.guided or family == ULTRAFEEDBACK

    def needs(self, family: str) -> Needs:
        n = self.cfg.n_samples
        if self.ranks(family):  # one request of 2n samples per record, paired two by two
            return Needs(record_kind="pref" if family == ULTRAFEEDBACK else "dsat", samples_per_record=2 * n,
                         samples_per_request=2 * n, pairs_per_record=n, reward_model=True)
        # guided: a request for the chosen and one for the rejected, n samples each
        return Needs(record_kind="dsat", samples_per_record=2 * n, samples_per_request=n, pairs_per_record=n)

    def config_problems(self, family: str, generation) -> list[tuple[str, str]]:
        problems = super().config_problems(family, generation)
        if generation.temperature == 0 and self.ranks(family):
            which = "unguided IterDPO's" if not self.cfg.guided else "IterDPO's (UltraFeedback)"
            problems.append(("generation.temperature", f"is 0 (greedy), so {which} two samples of a prompt would "
                             "be identical (chosen == rejected)"))
        return problems

    def _ranked(self, records: list[FeedbackRecord]) -> bool:
        return self.ranks(records_family(records))

    def requests(self, records: list[FeedbackRecord], iteration: int) -> list[GenRequest]:
        if self._ranked(records):
            return [plain_request(r, "candidate", 2 * self.cfg.n_samples) for r in records]
        out = []
        for r in records:
            out.append(guided_request(r, "chosen", self.cfg.prompt_format, self.cfg.instruction, self.cfg.n_samples))
            out.append(plain_request(r, "rejected", self.cfg.n_samples))
        return out

    def pairs(self, records: list[FeedbackRecord], completions: list[Completion],
              scorer=None) -> list[PreferencePair]:
        by_id = {r.id: r for r in records}
        self.stats = Counter(skipped_empty_sample=0)  # always reported, 0 included (the preview shows it)
        if self._ranked(records):
            out = self._rank(by_id, completions, scorer)
        else:
            out = self._guided(by_id, completions)
        self.stats["pairs"] = len(out)
        return out

    def _guided(self, by_id: dict[str, FeedbackRecord], completions: list[Completion]) -> list[PreferencePair]:
        slots: dict[str, dict[str, list[str]]] = {}
        for comp in completions:
            slots.setdefault(comp.record_id, {})[comp.slot] = comp.outputs
        out = []
        for rid, got in slots.items():
            rec = by_id[rid]
            for i, (chosen, rejected) in enumerate(zip(got["chosen"], got["rejected"], strict=True)):
                if not chosen.strip() or not rejected.strip():
                    self.stats["skipped_empty_sample"] += 1
                    continue
                out.append(pair(rec, f"s{i}", chosen=chosen, rejected=rejected, sampled="both", sample_index=i,
                                chosen_from="policy_guided", rejected_from="policy_context_only"))
        return out

    def _rank(self, by_id: dict[str, FeedbackRecord], completions: list[Completion], scorer) -> list[PreferencePair]:
        if scorer is None:
            raise ValueError("IterDPO ranks its two samples with the reward model, but no scorer was given")
        usable = [c for c in completions if len(c.outputs) >= 2]
        questions, answers = [], []
        for comp in usable:
            q = question_text(by_id[comp.record_id].prompt)
            questions += [q] * len(comp.outputs)
            answers += comp.outputs
        scores = iter(scorer.score(questions, answers))
        out = []
        for comp in usable:
            rec = by_id[comp.record_id]
            got = [(text, next(scores)) for text in comp.outputs]
            for i in range(0, len(got) - 1, 2):
                (a, sa), (b, sb) = got[i], got[i + 1]
                if not a.strip() or not b.strip():
                    self.stats["skipped_empty_sample"] += 1
                    continue
                if sa == sb:
                    self.stats["skipped_tie"] += 1
                    continue
                (chosen, sc, ci), (rejected, sr, ri) = ((a, sa, i), (b, sb, i + 1)) if sa > sb else \
                    ((b, sb, i + 1), (a, sa, i))
                out.append(pair(rec, f"s{i // 2}", chosen=chosen, rejected=rejected, sampled="both",
                                chosen_from="policy_ranked_higher", rejected_from="policy_ranked_lower",
                                score_chosen=sc, score_rejected=sr, chosen_index=ci, rejected_index=ri))
        return out


PAIR_BUILDER = IterDPO  # build_method's entry point for method.kind=iterdpo
