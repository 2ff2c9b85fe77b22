"""DRIFT's two halves: what it asks the policy for (requests) and the DPO pairs it builds (pairs)."""

from __future__ import annotations

from drift_exp.config import MethodConfig, PromptFormat
from drift_exp.methods import build_method, seed_pairs
from drift_exp.methods.drift import Drift
from drift_exp.records import Completion, FeedbackRecord, GenRequest, PreferencePair

INSTRUCTION = ("Based on the user's latest feedback, please provide an improved response that addresses their "
               "concerns.")
REJECTED = "Voilà la réponse — 3 € 😊  \n\n"  # trailing spaces/newlines and unicode must survive byte for byte
FEEDBACK = "Trop long, s'il te plaît !"

PROMPT = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "Résume ce texte."},
    {"role": "assistant", "content": "De quel texte parles-tu ?"},
    {"role": "user", "content": "Celui-ci : le café coûte 3 €."},
]


def dsat_record(rid: str = "wf-c0-u3-dsat", prompt=None) -> FeedbackRecord:
    return FeedbackRecord(id=rid, prompt=[dict(m) for m in (prompt or PROMPT)], rejected=REJECTED,
                          feedback=FEEDBACK, meta={"source": "wf", "kind": "dsat", "conversation": 0,
                                                   "utterance": 3, "turn": 2})


def drift(**kw) -> Drift:
    return Drift(MethodConfig(name="drift", kind="drift", **kw))


def test_default_instruction_is_the_authors():
    assert MethodConfig(name="drift", kind="drift").instruction == INSTRUCTION


def test_build_method_gives_drift():
    assert isinstance(build_method(MethodConfig(name="drift", kind="drift")), Drift)


def test_guided_plain_request_text_exact():
    reqs = drift().requests([dsat_record()], iteration=1)
    expected = (
        "You are a helpful assistant.\n\n"
        "User: Résume ce texte.\n"
        "Assistant: De quel texte parles-tu ?\n"
        "User: Celui-ci : le café coûte 3 €.\n"
        "Assistant: Voilà la réponse — 3 € 😊  \n\n\n"
        "User: Trop long, s'il te plaît !\n"
        "System: Based on the user's latest feedback, please provide an improved response that addresses their "
        "concerns.\n"
        "Assistant: "
    )
    assert reqs == [GenRequest(record_id="wf-c0-u3-dsat", slot="chosen", messages=[], n=1, text=expected)]


def test_guided_plain_request_without_system_message():
    rec = dsat_record(prompt=[{"role": "user", "content": "hi"}])
    (req,) = drift(prompt_format=PromptFormat.plain).requests([rec], iteration=2)
    assert req.text == (
        "User: hi\n"
        "Assistant: Voilà la réponse — 3 € 😊  \n\n\n"
        "User: Trop long, s'il te plaît !\n"
        f"System: {INSTRUCTION}\n"
        "Assistant: "
    )
    assert req.messages == []


def test_guided_chat_request_messages():
    (req,) = drift(prompt_format=PromptFormat.chat, n_samples=3).requests([dsat_record()], iteration=1)
    assert req.text is None
    assert req.slot == "chosen" and req.n == 3 and req.record_id == "wf-c0-u3-dsat"
    assert req.messages == PROMPT + [
        {"role": "assistant", "content": REJECTED},
        {"role": "user", "content": FEEDBACK + "\n\n" + INSTRUCTION},
    ]


def test_guided_chat_request_custom_instruction():
    (req,) = drift(prompt_format=PromptFormat.chat, instruction="Fix it.").requests([dsat_record()], iteration=1)
    assert req.messages[-1] == {"role": "user", "content": "Trop long, s'il te plaît !\n\nFix it."}


def test_unguided_request_is_the_context_alone():
    (req,) = drift(guided=False).requests([dsat_record()], iteration=1)
    assert req.messages == PROMPT
    assert req.text is None
    assert req.slot == "chosen" and req.n == 1


def test_requests_do_not_alias_record_prompt():
    rec = dsat_record()
    (req,) = drift(prompt_format=PromptFormat.chat).requests([rec], iteration=1)
    req.messages[1]["content"] = "changed"
    assert rec.prompt == PROMPT


def test_pairs_exact():
    rec = dsat_record()
    method = drift()
    out = method.pairs([rec], [Completion(record_id=rec.id, slot="chosen", outputs=["Le café coûte 3 €.\n"])])
    assert out == [PreferencePair(
        id="wf-c0-u3-dsat-s0",
        prompt=PROMPT,  # the context WITHOUT the rejected reply and the feedback turn
        chosen="Le café coûte 3 €.\n",
        rejected="Voilà la réponse — 3 € 😊  \n\n",
        meta={"record_id": "wf-c0-u3-dsat", "sampled": "chosen", "sample_index": 0, "chosen_from": "policy",
              "rejected_from": "dsat_reply"},
    )]
    assert out[0].rejected.encode("utf-8") == REJECTED.encode("utf-8")
    assert out[0].to_trl() == {
        "prompt": PROMPT,
        "chosen": [{"role": "assistant", "content": "Le café coûte 3 €.\n"}],
        "rejected": [{"role": "assistant", "content": REJECTED}],
    }
    assert method.stats["pairs"] == 1
    assert method.stats["skipped_empty_sample"] == 0


def test_pairs_skip_empty_samples():
    rec = dsat_record()
    method = drift()
    out = method.pairs([rec], [Completion(record_id=rec.id, slot="chosen", outputs=[" \n\t"])])
    assert out == []
    assert method.stats["skipped_empty_sample"] == 1
    assert method.stats["pairs"] == 0


def test_pairs_two_samples_per_record():
    a, b = dsat_record("wf-c0-u3-dsat"), dsat_record("wf-c5-u1-dsat", prompt=[{"role": "user", "content": "q"}])
    method = drift(n_samples=2)
    reqs = method.requests([a, b], iteration=1)
    assert [(r.record_id, r.n) for r in reqs] == [("wf-c0-u3-dsat", 2), ("wf-c5-u1-dsat", 2)]
    comps = [Completion(record_id=a.id, slot="chosen", outputs=["a0", "a1"]),
             Completion(record_id=b.id, slot="chosen", outputs=["b0", ""])]
    out = method.pairs([a, b], comps)
    assert [(p.id, p.chosen, p.rejected) for p in out] == [
        ("wf-c0-u3-dsat-s0", "a0", REJECTED),
        ("wf-c0-u3-dsat-s1", "a1", REJECTED),
        ("wf-c5-u1-dsat-s0", "b0", REJECTED),
    ]
    assert [p.prompt for p in out] == [PROMPT, PROMPT, [{"role": "user", "content": "q"}]]
    assert [p.meta["sample_index"] for p in out] == [0, 1, 0]
    assert method.stats["pairs"] == 3
    assert method.stats["skipped_empty_sample"] == 1


def test_pairs_do_not_alias_record_prompt():
    rec = dsat_record()
    (pair,) = drift().pairs([rec], [Completion(record_id=rec.id, slot="chosen", outputs=["x"])])
    pair.prompt[0]["content"] = "changed"
    assert rec.prompt == PROMPT


def test_seed_pairs():
    seed = FeedbackRecord(id="wf-c3-u1-seed", prompt=[{"role": "user", "content": "Give me a synonym for happy."}],
                          rejected="Sad.", chosen="Joyful. \n", feedback="No, that's an antonym.",
                          meta={"source": "wf", "kind": "seed", "conversation": 3, "utterance": 1, "turn": 1})
    sat = FeedbackRecord(id="wf-c3-u3-sat", prompt=[{"role": "user", "content": "x"}], chosen="y",
                         meta={"kind": "sat"})
    out = seed_pairs([dsat_record(), seed, sat])
    assert out == [PreferencePair(
        id="wf-c3-u1-seed",
        prompt=[{"role": "user", "content": "Give me a synonym for happy."}],
        chosen="Joyful. \n",
        rejected="Sad.",
        meta={"record_id": "wf-c3-u1-seed", "chosen_from": "sat_revision", "rejected_from": "dsat_reply"},
    )]
    out[0].prompt[0]["content"] = "changed"
    assert seed.prompt == [{"role": "user", "content": "Give me a synonym for happy."}]
