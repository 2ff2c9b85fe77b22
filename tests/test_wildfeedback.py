"""WildFeedback annotation file -> FeedbackRecords: exact counts and records on a hand-written fixture,
the bundled sample, and malformed files. Every expected value here was worked out by hand."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from drift_exp.config import DataConfig, OnInvalid
from drift_exp.data import SAMPLE_DIR
from drift_exp.data.load import load_records
from drift_exp.errors import DataError

FIXTURE = Path(__file__).parent / "fixtures" / "wildfeedback_small.json"
SOURCE = "wf"


def U(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


def A(text: str) -> dict[str, str]:
    return {"role": "assistant", "content": text}


def load_fixture():
    return load_records(DataConfig(name=SOURCE, source=str(FIXTURE), format="annotation"))


def meta(kind: str, conversation: int, utterance: int) -> dict:
    return {"source": SOURCE, "kind": kind, "conversation": conversation, "utterance": utterance,
            "turn": utterance // 2 + 1}


# Conversation texts of the fixture (the judged replies carry trailing whitespace and non-ASCII on purpose).
C0_U0 = "Résume ce paragraphe en une phrase : « Le café coûte 3 € à Paris. »"
C0_A1 = "Voici un résumé très détaillé : à Paris, le café coûte 3 € — c’est « raisonnable » 😊  \n\n"
C0_U2 = "Trop long ! Une phrase, s'il te plaît. "
C1_U0 = "用一句话介绍长城。"
C1_A1 = "长城是中国古代修建的防御工事，全长两万多公里。\n"
C1_U2 = "谢谢，很好！"
C3 = ["Give me a synonym for happy.", "Sad.", 'No, that\'s an antonym. I asked for a "synonym".', "Joyful. \n",
      "Perfect, thanks!"]
C4 = ["Translate 'good morning' to German.", "Guten Morgen.", "Now to Italian, please.\t", "Bonjour.",
      "That's French, not Italian.", "Buongiorno.", "Great, that's right.", "Glad I could help!"]
C5 = ["Name a prime number greater than 10.", "9", "9 is not prime and not greater than 10.", "15",
      "Still wrong, 15 = 3 × 5.", "11", "Yes, 11 works."]
C6 = ["What's the capital of Canada?", "Ottawa.", "Thanks! And the capital of Australia?", "Sydney.",
      "Wrong, it's Canberra."]
C8 = ["Convert 100 °F to Celsius.", "100 °F is 212 °C.", "That's backwards, 212 °F is 100 °C.",
      "100 °F is about 37.8 °C.", "OK, but you could have shown the formula.",
      "C = (F − 32) × 5/9, so (100 − 32) × 5/9 ≈ 37.8 °C.", "Now that's clear, thanks."]

# (id, kind, prompt, rejected, chosen, feedback, meta), in file order; seed right after its dsat.
EXPECTED = [
    # c0: single-turn DSAT; the conversation ends on the flagged User row and c1 starts right after.
    ("wf-c0-u1-dsat", [U(C0_U0)], C0_A1, None, C0_U2, meta("dsat", 0, 1)),
    # c1: single-turn SAT (had c0 and c1 been joined, c0's DSAT would wrongly form a seed with c1's reply).
    ("wf-c1-u1-sat", [U(C1_U0)], None, C1_A1, C1_U2, meta("sat", 1, 1)),
    # c2: neutral, ends on an Agent row -> nothing.
    # c3: DSAT -> SAT seed.
    ("wf-c3-u1-dsat", [U(C3[0])], C3[1], None, C3[2], meta("dsat", 3, 1)),
    ("wf-c3-u1-seed", [U(C3[0])], C3[1], C3[3], C3[2], meta("seed", 3, 1)),
    ("wf-c3-u3-sat", [U(C3[0]), A(C3[1]), U(C3[2])], None, C3[3], C3[4], meta("sat", 3, 3)),
    # c4: the seed comes later, so its prompt is multi-turn; ends on an Agent row.
    ("wf-c4-u3-dsat", [U(C4[0]), A(C4[1]), U(C4[2])], C4[3], None, C4[4], meta("dsat", 4, 3)),
    ("wf-c4-u3-seed", [U(C4[0]), A(C4[1]), U(C4[2])], C4[3], C4[5], C4[4], meta("seed", 4, 3)),
    ("wf-c4-u5-sat", [U(C4[0]), A(C4[1]), U(C4[2]), A(C4[3]), U(C4[4])], None, C4[5], C4[6], meta("sat", 4, 5)),
    # c5: DSAT, DSAT, SAT -> only the last revision is a seed.
    ("wf-c5-u1-dsat", [U(C5[0])], C5[1], None, C5[2], meta("dsat", 5, 1)),
    ("wf-c5-u3-dsat", [U(C5[0]), A(C5[1]), U(C5[2])], C5[3], None, C5[4], meta("dsat", 5, 3)),
    ("wf-c5-u3-seed", [U(C5[0]), A(C5[1]), U(C5[2])], C5[3], C5[5], C5[4], meta("seed", 5, 3)),
    ("wf-c5-u5-sat", [U(C5[0]), A(C5[1]), U(C5[2]), A(C5[3]), U(C5[4])], None, C5[5], C5[6], meta("sat", 5, 5)),
    # c6: SAT then DSAT -> no seed (a SAT followed by a DSAT is not a revision).
    ("wf-c6-u1-sat", [U(C6[0])], None, C6[1], C6[2], meta("sat", 6, 1)),
    ("wf-c6-u3-dsat", [U(C6[0]), A(C6[1]), U(C6[2])], C6[3], None, C6[4], meta("dsat", 6, 3)),
    # c7: a flag on UtterranceId 0 (flag_without_reply) and a DSAT on a whitespace-only reply (empty_reply).
    # c8: DSAT, then both flags (contradictory_flags: neither a record nor a seed), then SAT.
    ("wf-c8-u1-dsat", [U(C8[0])], C8[1], None, C8[2], meta("dsat", 8, 1)),
    ("wf-c8-u5-sat", [U(C8[0]), A(C8[1]), U(C8[2]), A(C8[3]), U(C8[4])], None, C8[5], C8[6], meta("sat", 8, 5)),
]


def test_fixture_stats():
    _, stats = load_fixture()
    assert stats == {
        "source": str(FIXTURE),
        "utterances": 45,
        "conversations": 9,
        "duplicate_conversations": 0,
        "dsat": 7,
        "sat": 6,
        "seed_pairs": 3,
        "dsat_conversations": 6,  # c0 c3 c4 c5 c6 c8
        "sat_conversations": 6,  # c1 c3 c4 c5 c6 c8
        "skipped": {"contradictory_flags": 1, "empty_reply": 1, "flag_without_reply": 1},
    }


def test_fixture_record_ids_in_order():
    records, _ = load_fixture()
    assert [r.id for r in records] == [e[0] for e in EXPECTED]


@pytest.mark.parametrize("expected", EXPECTED, ids=[e[0] for e in EXPECTED])
def test_fixture_records_exact(expected):
    rid, prompt, rejected, chosen, feedback, rmeta = expected
    records = {r.id: r for r in load_fixture()[0]}
    rec = records[rid]
    assert rec.kind == rmeta["kind"]
    assert rec.prompt == prompt
    assert rec.rejected == rejected
    assert rec.chosen == chosen
    assert rec.feedback == feedback
    assert rec.meta == rmeta
    assert rec.prompt[-1]["role"] == "user"


def test_fixture_text_survives_byte_for_byte():
    records = {r.id: r for r in load_fixture()[0]}
    raw = json.loads(FIXTURE.read_text(encoding="utf-8"))
    assert records["wf-c0-u1-dsat"].rejected.encode("utf-8") == raw[1]["Content"].encode("utf-8")
    assert records["wf-c0-u1-dsat"].rejected.endswith("😊  \n\n")
    assert records["wf-c0-u1-dsat"].feedback.endswith(". ")
    assert records["wf-c1-u1-sat"].chosen == "长城是中国古代修建的防御工事，全长两万多公里。\n"
    assert records["wf-c3-u1-seed"].chosen == "Joyful. \n"
    assert records["wf-c4-u3-dsat"].prompt[2]["content"] == "Now to Italian, please.\t"


def test_fixture_prompts_are_copies():
    records = {r.id: r for r in load_fixture()[0]}
    dsat, seed = records["wf-c3-u1-dsat"], records["wf-c3-u1-seed"]
    dsat.prompt[0]["content"] = "changed"
    assert seed.prompt == [U(C3[0])]


# --- the bundled sample ---------------------------------------------------------------------------------

def _recount(rows: list[dict]) -> dict:
    """An independent count of the sample with plain json (the sample has no skipped judgements)."""
    convs: list[list[dict]] = []
    for row in rows:
        if row["UtterranceId"] == 0:
            convs.append([])
        convs[-1].append(row)
    n = {"conversations": len(convs), "dsat": 0, "sat": 0, "seed_pairs": 0, "dsat_conversations": 0,
         "sat_conversations": 0}
    for conv in convs:
        d = [i for i, r in enumerate(conv) if r["Role"] == "User" and i > 0 and r["Disatisfaction"]]
        s = [i for i, r in enumerate(conv) if r["Role"] == "User" and i > 0 and r["Satisfaction"]]
        n["dsat"] += len(d)
        n["sat"] += len(s)
        n["seed_pairs"] += sum(1 for i in d if i + 2 in s)
        n["dsat_conversations"] += bool(d)
        n["sat_conversations"] += bool(s)
    return n


def test_sample_counts():
    records, stats = load_records(DataConfig(name="sample", source="sample", format="annotation"))
    raw = json.loads((SAMPLE_DIR / "sat_dsat_annotation.json").read_text(encoding="utf-8"))
    expected = {"conversations": 68, "dsat": 38, "sat": 37, "seed_pairs": 20, "dsat_conversations": 34,
                "sat_conversations": 35}
    assert _recount(raw) == expected
    assert {k: stats[k] for k in expected} == expected
    assert stats["duplicate_conversations"] == 0  # the sample has no repeated conversation
    assert stats["skipped"] == {}
    assert stats["utterances"] == len(raw)
    assert "cache" not in stats and "warnings" not in stats and "skipped_rows" not in stats
    assert len(records) == 38 + 37 + 20


def test_sample_records_are_well_formed():
    records, _ = load_records(DataConfig(name="sample", source="sample", format="annotation"))
    raw = json.loads((SAMPLE_DIR / "sat_dsat_annotation.json").read_text(encoding="utf-8"))
    convs: list[list[dict]] = []
    for row in raw:
        if row["UtterranceId"] == 0:
            convs.append([])
        convs[-1].append(row)
    assert records
    for rec in records:
        assert rec.prompt and rec.prompt[-1]["role"] == "user", rec.id
        conv = convs[rec.meta["conversation"]]
        agent = conv[rec.meta["utterance"]]
        assert agent["Role"] == "Agent"
        assert rec.prompt == [{"role": "user" if r["Role"] == "User" else "assistant", "content": r["Content"]}
                              for r in conv[:rec.meta["utterance"]]]
        if rec.kind == "dsat":
            assert rec.rejected.encode("utf-8") == agent["Content"].encode("utf-8"), rec.id
            assert rec.feedback == conv[rec.meta["utterance"] + 1]["Content"]
            assert conv[rec.meta["utterance"] + 1]["Disatisfaction"] is True
        elif rec.kind == "sat":
            assert rec.chosen == agent["Content"]
            assert conv[rec.meta["utterance"] + 1]["Satisfaction"] is True
        else:
            assert rec.rejected == agent["Content"]
            assert rec.chosen == conv[rec.meta["utterance"] + 2]["Content"]


# --- duplicate conversations (paper §4.1: Table 1 counts unique conversations) --------------------------

DUPLICATES = Path(__file__).parent / "fixtures" / "wildfeedback_duplicates.json"


def test_duplicate_conversations_are_dropped_first_copy_kept():
    """The fixture: c0 (DSAT) and c1 (SAT); c2 = c0 and c7 = c1 exactly; c3 = c1's turns with other flags; c4 = c0
    with a trailing space in the reply and c8 = c4; c5 = c0's first two turns; c6 = c0's characters cut at
    another turn boundary. Dropped: c2, c3, c7, c8."""
    records, stats = load_records(DataConfig(name=SOURCE, source=str(DUPLICATES), format="annotation"))
    raw = json.loads(DUPLICATES.read_text(encoding="utf-8"))
    assert _recount(raw) == {"conversations": 9, "dsat": 5, "sat": 2, "seed_pairs": 0, "dsat_conversations": 5,
                             "sat_conversations": 2}  # what extraction gave before de-duplication
    assert [r.id for r in records] == ["wf-c0-u1-dsat", "wf-c1-u1-sat", "wf-c4-u1-dsat"]
    assert records[2].rejected == "5 " and records[0].rejected == "5"
    assert stats == {
        "source": str(DUPLICATES), "utterances": 25, "conversations": 5, "duplicate_conversations": 4,
        "dsat": 2, "sat": 1, "seed_pairs": 0, "dsat_conversations": 2, "sat_conversations": 1, "skipped": {},
    }


def test_a_broken_copy_is_skipped_not_counted_as_duplicate(tmp_path):
    rows = [row(0, "User", "q"), row(1, "Agent", "a"), row(2, "User", "no", dsat=True),
            row(0, "User", "q"), row(1, "Bot", "a"), row(2, "User", "no", dsat=True),  # same text, a bad role
            row(0, "User", "q"), row(1, "Agent", "a"), row(2, "User", "no", sat=True)]  # a valid copy
    path = _write(tmp_path, rows)
    records, stats = load_records(DataConfig(name=SOURCE, source=str(path), format="annotation",
                                             on_invalid=OnInvalid.skip))
    assert [r.id for r in records] == ["wf-c0-u1-dsat"]
    assert stats["conversations"] == 2 and stats["duplicate_conversations"] == 1
    assert stats["skipped"] == {"conversation_with_unknown_role": 1}


def test_conversation_key_separates_turns():
    from drift_exp.data.wildfeedback import conversation_key
    assert conversation_key(["ab", "c"]) != conversation_key(["a", "bc"])
    assert conversation_key(["a", ""]) != conversation_key(["a"])
    assert conversation_key(["\ud83d"]) != conversation_key(["?"])  # a lone surrogate is not its replacement


# --- malformed files ------------------------------------------------------------------------------------

def row(uid: int, role: str, content: str, sat: bool = False, dsat: bool = False) -> dict:
    return {"UtterranceId": uid, "TurnId": uid // 2 + 1, "Role": role, "Content": content, "State": "",
            "Preceeding": "YES", "Satisfaction": sat, "Satisfaction-Justificiation": "", "Disatisfaction": dsat,
            "Dissatisfaction-Justificiation": ""}


BOT_ROWS = [
    row(0, "User", "q0"), row(1, "Agent", "a0"), row(2, "User", "bad", dsat=True),  # rows 0-2: conversation 0
    row(0, "User", "q1"), row(1, "Bot", "a1"), row(2, "User", "ok", sat=True),  # rows 3-5: row 4 is broken
    row(0, "User", "q2"), row(1, "Agent", "a2"), row(2, "User", "thanks", sat=True),  # rows 6-8
]


def _write(tmp_path: Path, obj) -> Path:
    path = tmp_path / "ann.json"
    path.write_text(obj if isinstance(obj, str) else json.dumps(obj), encoding="utf-8")
    return path


def test_unknown_role_is_an_error_naming_file_row_and_field(tmp_path):
    path = _write(tmp_path, BOT_ROWS)
    with pytest.raises(DataError) as err:
        load_records(DataConfig(name=SOURCE, source=str(path), format="annotation"))
    msg = str(err.value)
    assert str(path) in msg
    assert "utterance 4" in msg
    assert "'Role'" in msg


def test_unknown_role_skipped_with_on_invalid_skip(tmp_path):
    path = _write(tmp_path, BOT_ROWS)
    records, stats = load_records(DataConfig(name=SOURCE, source=str(path), format="annotation",
                                             on_invalid=OnInvalid.skip))
    assert [r.id for r in records] == ["wf-c0-u1-dsat", "wf-c2-u1-sat"]
    assert stats["skipped"] == {"conversation_with_unknown_role": 1}
    assert stats["skipped_rows"] == 3  # the three rows of conversation 1
    assert stats["dsat"] == 1 and stats["sat"] == 1 and stats["seed_pairs"] == 0
    assert stats["dsat_conversations"] == 1 and stats["sat_conversations"] == 1


def test_empty_array_is_an_error(tmp_path):
    path = _write(tmp_path, [])
    with pytest.raises(DataError) as err:
        load_records(DataConfig(name=SOURCE, source=str(path), format="annotation"))
    assert str(path) in str(err.value)


def test_invalid_json_is_an_error_naming_the_file(tmp_path):
    path = _write(tmp_path, '[{"UtterranceId": 0, "Role": "User",')
    with pytest.raises(DataError) as err:
        load_records(DataConfig(name=SOURCE, source=str(path), format="annotation"))
    assert str(path) in str(err.value)
    assert "utterance 0" in str(err.value) and "truncated" in str(err.value)


def test_missing_path_is_an_error(tmp_path):
    path = tmp_path / "does-not-exist.json"
    with pytest.raises(DataError) as err:
        load_records(DataConfig(name=SOURCE, source=str(path), format="annotation"))
    assert str(path) in str(err.value)
