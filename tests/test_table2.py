"""Paper Table 2, cell by cell: where each method's prompt, chosen and rejected come from,
on WildFeedback-style records (dsat / sat) and UltraFeedback-style records (pref)."""

import pytest

from drift_exp.config import MethodConfig, PromptFormat, ScorerConfig
from drift_exp.methods import build_method
from drift_exp.methods.prompts import plain_guided_text
from drift_exp.records import Completion, FeedbackRecord
from drift_exp.scoring import RewardScorer, question_text

CONTEXT = [{"role": "user", "content": "Summarise the plot of Hamlet in two sentences."}]
DSAT = FeedbackRecord(id="wf-dsat", prompt=CONTEXT, rejected="Hamlet is a play by Shakespeare.  \n",
                      feedback="That is one sentence and says nothing about the plot.",
                      meta={"kind": "dsat"})
SAT = FeedbackRecord(id="wf-sat", prompt=CONTEXT, chosen="Prince Hamlet avenges his father. Nearly all die.",
                     feedback="perfect, thanks", meta={"kind": "sat"})
PREF = FeedbackRecord(id="uf-0", prompt=[{"role": "user", "content": "Name three prime numbers."}],
                      chosen="2, 3 and 5.", rejected="4, 6, 8", meta={"kind": "pref"})


def method(kind: str, guided: bool = True, **kw) -> object:
    return build_method(MethodConfig(name=kind, kind=kind, guided=guided, **kw))


def done(request, *outputs: str) -> Completion:
    return Completion(record_id=request.record_id, slot=request.slot, outputs=list(outputs))


class LengthScorer:
    """A scorer with known scores (the answer's length), to check the ranking rule exactly."""

    def score(self, questions, answers):
        return [float(len(a)) for a in answers]


# --- DRIFT ---------------------------------------------------------------------------------------

def test_drift_wildfeedback():
    m = method("drift")
    assert m.record_kind([DSAT, SAT]) == "dsat"
    (req,) = m.requests([DSAT], 1)
    assert req.slot == "chosen" and req.text == plain_guided_text(CONTEXT, DSAT.rejected, DSAT.feedback,
                                                                   MethodConfig.instruction)
    (p,) = m.pairs([DSAT], [done(req, "Sample A")])
    assert p.prompt == CONTEXT  # the context, without the feedback turn
    assert p.chosen == "Sample A"  # the chosen slot's generation
    assert p.rejected == DSAT.rejected  # the real DSAT reply, byte for byte
    assert (p.meta["chosen_from"], p.meta["rejected_from"]) == ("policy", "dsat_reply")


def test_drift_ultrafeedback():
    m = method("drift")
    assert m.record_kind([PREF]) == "pref"
    (req,) = m.requests([PREF], 1)
    assert req.slot == "chosen" and req.text is None and req.messages == PREF.prompt  # no feedback to guide by
    (p,) = m.pairs([PREF], [done(req, "Sample A")])
    assert (p.prompt, p.chosen, p.rejected) == (PREF.prompt, "Sample A", PREF.rejected)
    assert p.meta["rejected_from"] == "dataset_rejected"


# --- SPIN ----------------------------------------------------------------------------------------

def test_spin_wildfeedback():
    m = method("spin", guided=False)
    assert m.record_kind([DSAT, SAT]) == "sat"
    (req,) = m.requests([SAT], 1)
    assert req.slot == "rejected" and req.messages == CONTEXT and req.text is None  # context before the SAT reply
    (p,) = m.pairs([SAT], [done(req, "Sample R")])
    assert (p.prompt, p.chosen, p.rejected) == (CONTEXT, SAT.chosen, "Sample R")
    assert (p.meta["chosen_from"], p.meta["rejected_from"]) == ("sat_reply", "policy")


def test_spin_ultrafeedback():
    m = method("spin", guided=False)
    (req,) = m.requests([PREF], 1)
    assert req.slot == "rejected" and req.messages == PREF.prompt
    (p,) = m.pairs([PREF], [done(req, "Sample R")])
    assert (p.prompt, p.chosen, p.rejected) == (PREF.prompt, PREF.chosen, "Sample R")
    assert p.meta["chosen_from"] == "dataset_chosen"


# --- IterDPO -------------------------------------------------------------------------------------

def test_iterdpo_wildfeedback_guided():
    m = method("iterdpo")
    assert not m.needs_scorer([DSAT])
    chosen_req, rejected_req = m.requests([DSAT], 1)
    assert chosen_req.slot == "chosen"
    assert chosen_req.text == plain_guided_text(CONTEXT, DSAT.rejected, DSAT.feedback, MethodConfig.instruction)
    assert rejected_req.slot == "rejected" and rejected_req.messages == CONTEXT  # never sees the feedback
    (p,) = m.pairs([DSAT], [done(chosen_req, "Guided"), done(rejected_req, "Unguided")])
    assert (p.prompt, p.chosen, p.rejected) == (CONTEXT, "Guided", "Unguided")
    assert DSAT.rejected not in (p.chosen, p.rejected)  # both sides are policy samples


def test_iterdpo_wildfeedback_guided_chat_format():
    m = method("iterdpo", prompt_format=PromptFormat.chat)
    chosen_req, _ = m.requests([DSAT], 1)
    assert chosen_req.messages[-2:] == [{"role": "assistant", "content": DSAT.rejected},
                                        {"role": "user", "content": f"{DSAT.feedback}\n\n{MethodConfig.instruction}"}]


@pytest.mark.parametrize("record,guided", [(PREF, True), (DSAT, False)], ids=["ultrafeedback", "unguided"])
def test_iterdpo_ranked_by_reward_model(record, guided):
    m = method("iterdpo", guided=guided)
    assert m.needs_scorer([record])
    (req,) = m.requests([record], 1)
    assert req.slot == "candidate" and req.n == 2 and req.messages == record.prompt
    (p,) = m.pairs([record], [done(req, "short", "much longer answer")], LengthScorer())
    assert (p.prompt, p.chosen, p.rejected) == (record.prompt, "much longer answer", "short")
    assert (p.meta["score_chosen"], p.meta["score_rejected"]) == (18.0, 5.0)
    assert (p.meta["chosen_index"], p.meta["rejected_index"]) == (1, 0)
    (p,) = m.pairs([record], [done(req, "much longer answer", "short")], LengthScorer())
    assert (p.chosen, p.rejected) == ("much longer answer", "short")


def test_iterdpo_ties_are_skipped_and_counted():
    m = method("iterdpo", guided=False)
    reqs = m.requests([PREF, DSAT], 1)
    pairs = m.pairs([PREF, DSAT], [done(reqs[0], "same", "size"), done(reqs[1], "a", "bb")], LengthScorer())
    assert [p.meta["record_id"] for p in pairs] == ["wf-dsat"]
    assert m.stats["skipped_tie"] == 1 and m.stats["pairs"] == 1


def test_iterdpo_with_the_tiny_reward_model(model_cache):
    scorer = RewardScorer(ScorerConfig(path="tiny"))
    texts = ["Two, three, five.", "Four is prime.", "I refuse.", "2 3 5 7 11"]
    q = question_text(PREF.prompt)
    scores = scorer.score([q] * 4, texts)
    assert len(set(scores)) == 4  # a random head still separates different answers
    m = method("iterdpo", guided=False)
    (req,) = m.requests([PREF], 1)
    completions = [done(req, texts[0], texts[1]), Completion(record_id=PREF.id, slot="candidate",
                                                             outputs=[texts[2], texts[3]])]
    pairs = m.pairs([PREF], completions, scorer)
    for p, (a, b) in zip(pairs, [(0, 1), (2, 3)], strict=True):
        hi, lo = (a, b) if scores[a] > scores[b] else (b, a)
        assert (p.chosen, p.rejected) == (texts[hi], texts[lo])
        assert p.meta["score_chosen"] == pytest.approx(scores[hi], abs=1e-5)
    # identical answers get identical scores: a tie, skipped
    tie = m.pairs([PREF], [done(req, "same text", "same text")], scorer)
    assert tie == [] and m.stats["skipped_tie"] == 1


def test_reward_scorer_truncates_and_batches(model_cache):
    scorer = RewardScorer(ScorerConfig(path="tiny", batch_size=2, max_length=64))
    long_answer = "word " * 500
    one = scorer.score(["q"], [long_answer])
    many = scorer.score(["q", "q", "q"], ["short", long_answer, "other"])
    assert many[1] == pytest.approx(one[0], abs=1e-5)  # batching and order do not change a score
