"""Dirty input, one case per class, for the WildFeedback annotation file and the authors' released JSONL files.

Each case mutates a valid base file. With data.on_invalid=error the DataError must name the file, the row
(utterance index / line number) and the field; with skip the counts must be exact and every record of the
untouched conversations (lines) must still be there, unchanged.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pytest

from drift_exp.config import DataConfig, OnInvalid
from drift_exp.data.load import load_records
from drift_exp.errors import DataError


def row(uid: int, role: str, content: Any, sat: bool = False, dsat: bool = False) -> dict:
    return {"UtterranceId": uid, "TurnId": uid // 2 + 1, "Role": role, "Content": content, "State": "",
            "Preceeding": "YES", "Satisfaction": sat, "Satisfaction-Justificiation": "", "Disatisfaction": dsat,
            "Dissatisfaction-Justificiation": ""}


def base_rows() -> list[dict]:
    return [
        row(0, "User", "q0"), row(1, "Agent", "a0"), row(2, "User", "no", dsat=True),  # c0: rows 0-4
        row(3, "Agent", "a0b"), row(4, "User", "yes", sat=True),
        row(0, "User", "q1"), row(1, "Agent", "a1"), row(2, "User", "thanks", sat=True),  # c1: rows 5-7
        row(0, "User", "q2"), row(1, "Agent", "a2"), row(2, "User", "wrong", dsat=True),  # c2: rows 8-11
        row(3, "Agent", "a2b"),
        row(0, "User", "q3"), row(1, "Agent", "a3"), row(2, "User", "more"), row(3, "Agent", "a3b"),  # c3: 12-16
        row(4, "User", "bad", dsat=True),
    ]


BASE_IDS = ["wf-c0-u1-dsat", "wf-c0-u1-seed", "wf-c0-u3-sat", "wf-c1-u1-sat", "wf-c2-u1-dsat", "wf-c3-u3-dsat"]
C1 = {"wf-c1-u1-sat"}


def dumps(rows: list) -> bytes:
    return ("[" + ",\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "]").encode("utf-8")


def at_row(rows: list, i: int) -> int:
    """Byte offset of row i in dumps(rows)."""
    return len(dumps(rows[:i])) - 1 + (2 if i else 0)


def edit(i: int, **changes: Any) -> Callable[[list], list]:
    """Set (or with value ... delete) fields of row i; a key 'rename' renames {old: new}."""
    def mutate(rows: list) -> list:
        for key, value in changes.items():
            if key == "rename":
                for old, new in value.items():
                    rows[i] = {new if k == old else k: v for k, v in rows[i].items()}
            elif value is ...:
                del rows[i][key]
            else:
                rows[i][key] = value
        return rows
    return mutate


@dataclass
class Case:
    name: str
    mutate: Callable[[list], list | bytes]
    row: int | None = None  # in the error message: 'utterance N' (annotation) / 'line N' (released)
    field: str | None = None  # in the error message: "'field'"
    says: tuple[str, ...] = ()  # more text the error message must contain
    error: bool = True  # False: tolerated in error mode too (counted only)
    skip_error: bool = False  # an error even with on_invalid=skip (whole-file problems)
    skip_says: tuple[str, ...] | None = None  # what that error says (default: `says`)
    skipped: dict = dataclasses.field(default_factory=dict)
    skipped_rows: int = 0
    warnings: dict = dataclasses.field(default_factory=dict)
    dropped: set = dataclasses.field(default_factory=set)  # base record ids that must be gone
    ids: list | None = None  # the exact record ids when conversation numbers shift
    check: Callable[[dict], bool] | None = None  # more checks on {id: record}
    changed: set = dataclasses.field(default_factory=set)  # kept records that differ from the base (checked)


def c1_skipped(reason: str) -> dict:
    return {"skipped": {f"conversation_with_{reason}": 1}, "skipped_rows": 3, "dropped": C1}


LFS = b"version https://git-lfs.github.com/spec/v1\noid sha256:2caea836\nsize 1615402501\n"


def _bytes_edit(fn: Callable[[list, bytes], bytes]) -> Callable[[list], bytes]:
    return lambda rows: fn(rows, dumps(rows))


ANNOTATION = [
    Case("missing_field", edit(6, Role=...), 6, "Role", ("missing",), **c1_skipped("missing_field")),
    Case("misspelled_id", edit(6, rename={"UtterranceId": "UtteranceId"}), 6, "UtterranceId",
         ("did you mean 'UtterranceId'",), **c1_skipped("misspelled_field")),
    Case("misspelled_flag", edit(7, rename={"Disatisfaction": "Dissatisfaction"}), 7, "Disatisfaction",
         ("found 'Dissatisfaction'", "did you mean"), **c1_skipped("misspelled_field")),
    Case("flag_as_string", edit(7, Satisfaction="true"), 7, "Satisfaction", ("expected true or false",
         "the string 'true'"), **c1_skipped("wrong_type")),
    Case("float_id", edit(6, UtterranceId=1.0), 6, "UtterranceId", ("expected an integer, got 1.0",),
         **c1_skipped("wrong_type")),
    Case("content_not_a_string", edit(6, Content=["a1"]), 6, "Content", ("expected a string, got an array",),
         **c1_skipped("wrong_type")),
    Case("unknown_role", edit(6, Role="Bot"), 6, "Role", ("expected 'User' or 'Agent'", "'Bot'"),
         **c1_skipped("unknown_role")),
    Case("role_in_lower_case", edit(6, Role="agent"), 6, "Role", ("did you mean 'Agent'",),
         **c1_skipped("unknown_role")),
    Case("two_agent_turns_in_a_row", edit(7, Role="Agent"), 7, "Role", ("two Agent turns in a row",),
         **c1_skipped("roles_not_alternating")),
    Case("starts_with_agent", edit(5, Role="Agent"), 5, "Role", ("start with a User turn",),
         **c1_skipped("starts_with_agent")),
    Case("flag_on_agent_row", edit(6, Disatisfaction=True), 6, "Disatisfaction", ("Agent row",),
         **c1_skipped("flag_on_agent_row")),
    Case("duplicate_id", edit(7, UtterranceId=1), 7, "UtterranceId", ("got 1 again",),
         **c1_skipped("duplicate_utterance_id")),
    Case("id_gap", edit(7, UtterranceId=3), 7, "UtterranceId", ("expected 2, got 3",),
         **c1_skipped("utterance_id_gap")),
    Case("negative_id", edit(6, UtterranceId=-1), 6, "UtterranceId", ("expected 1",),
         **c1_skipped("bad_utterance_id")),
    Case("row_not_an_object", lambda r: r[:6] + ["Agent: a1"] + r[7:], 6, None, ("expected a JSON object",
         "got the string"), **c1_skipped("not_an_object")),
    # A first row without a usable UtterranceId 0 cannot be told from a bad row of the conversation before it.
    Case("first_row_without_id", edit(5, UtterranceId=...), 5, "UtterranceId", ("missing",),
         skipped={"conversation_with_missing_field": 1}, skipped_rows=8,
         ids=["wf-c1-u1-dsat", "wf-c2-u3-dsat"]),
    Case("null_content_on_judged_reply", edit(6, Content=None), error=False, skipped={"empty_reply": 1},
         warnings={"null_content": 1}, dropped=C1),
    Case("null_content_elsewhere", edit(12, Content=None), error=False, warnings={"null_content": 1},
         check=lambda recs: recs["wf-c3-u3-dsat"].prompt[0] == {"role": "user", "content": ""},
         changed={"wf-c3-u3-dsat"}),
    # A blank prompt turn or feedback makes the judgement unusable: counted in both modes, like empty_reply.
    Case("null_content_on_prompt_turn", edit(5, Content=None), error=False, skipped={"empty_prompt": 1},
         warnings={"null_content": 1}, dropped=C1),
    Case("blank_prompt_turn", edit(5, Content=" \n\t"), error=False, skipped={"empty_prompt": 1}, dropped=C1),
    Case("blank_feedback", edit(7, Content="   "), error=False, skipped={"empty_feedback": 1}, dropped=C1),
    Case("turn_id_inconsistent", lambda r: edit(7, TurnId=7)(edit(6, TurnId="1")(r)), error=False,
         warnings={"turn_id_mismatch": 2}),
    Case("contradictory_flags", edit(7, Disatisfaction=True), error=False, skipped={"contradictory_flags": 1},
         dropped=C1),
    Case("utf8_bom", lambda r: b"\xef\xbb\xbf" + dumps(r), error=False),
    # Valid JSON that is not text: kept as U+FFFD and counted in both modes, never stopping the file.
    Case("lone_surrogate", _bytes_edit(lambda r, b: b.replace(b'"a1"', b'"a\\ud83d1"')), error=False,
         warnings={"lone_surrogates_replaced": 1}, check=lambda recs: recs["wf-c1-u1-sat"].chosen == "a\ufffd1",
         changed=C1),
    Case("lone_low_surrogate", _bytes_edit(lambda r, b: b.replace(b'"a1"', b'"a\\udc001"')), error=False,
         warnings={"lone_surrogates_replaced": 1}, check=lambda recs: recs["wf-c1-u1-sat"].chosen == "a\ufffd1",
         changed=C1),
    Case("non_utf8_bytes", _bytes_edit(lambda r, b: b.replace(b'"a1"', b'"a\xff1"')), 6, None,
         ("not UTF-8", "byte "), skipped={}, warnings={"invalid_utf8_replaced": 1},
         check=lambda recs: recs["wf-c1-u1-sat"].chosen == "a\ufffd1", changed=C1),
    Case("truncated_inside_a_row", _bytes_edit(lambda r, b: b[:at_row(r, 14) + 20]), 14, None, ("truncated",),
         skipped={"truncated_file": 1, "conversation_cut_short": 1}, skipped_rows=2, dropped={"wf-c3-u3-dsat"}),
    Case("array_not_closed", _bytes_edit(lambda r, b: b[:-1]), 17, None, ("truncated",),
         skipped={"truncated_file": 1, "conversation_cut_short": 1}, skipped_rows=5, dropped={"wf-c3-u3-dsat"}),
    Case("invalid_json_syntax", _bytes_edit(lambda r, b: b[:at_row(r, 9)] + b[at_row(r, 9):].replace(b":", b"", 1)),
         9, None, ("not valid JSON",), skipped={"invalid_json": 1, "conversation_cut_short": 1}, skipped_rows=1,
         dropped={"wf-c2-u1-dsat", "wf-c3-u3-dsat"}),
    Case("data_after_the_array", _bytes_edit(lambda r, b: b + b"\n[]"), 17, None, ("after the closing",),
         skipped={"trailing_garbage": 1}),
    Case("empty_file", lambda r: b"", None, None, ("empty",), skip_error=True),
    Case("empty_array", lambda r: b"[ ]", None, None, ("no utterances",), skip_error=True),
    Case("top_level_object", lambda r: json.dumps({"rows": r}).encode(), None, None, ("expected one JSON array",
         "got an object"), skip_error=True),
    Case("json_lines_instead", lambda r: b"\n".join(json.dumps(x).encode() for x in r), None, None,
         ("JSON Lines",), skip_error=True),
    Case("git_lfs_pointer", lambda r: LFS, None, None, ("Git-LFS pointer",), skip_error=True),
    Case("every_conversation_bad", lambda r: [{("UtteranceId" if k == "UtterranceId" else k): v
                                              for k, v in x.items()} for x in r], 0, "UtterranceId",
         ("did you mean",), skip_error=True,
         skip_says=("all 1 conversations were skipped", "conversation_with_misspelled_field")),
]


def _write_annotation(tmp_path: Path, case: Case) -> Path:
    out = case.mutate(base_rows())
    path = tmp_path / "sat_dsat_annotation.json"
    path.write_bytes(out if isinstance(out, bytes) else dumps(out))
    return path


def _load(path: Path, fmt: str, on_invalid: OnInvalid):
    return load_records(DataConfig(name="wf", source=str(path), format=fmt, on_invalid=on_invalid))


def _base(tmp_path: Path, write: Callable, fmt: str) -> dict:
    base = tmp_path / "base"
    base.mkdir()
    return {r.id: asdict(r) for r in _load(write(base, Case("base", lambda r: r)), fmt, OnInvalid.error)[0]}


def _check_error(err: DataError, path: Path, case: Case, row_word: str) -> None:
    msg = str(err)
    assert str(path) in msg, msg
    if case.row is not None:
        assert re.search(rf"\b{row_word} {case.row}\b", msg), msg
    if case.field is not None:
        assert f"'{case.field}'" in msg, msg
    for text in case.says:
        assert text in msg, msg


def _check_kept(records: list, stats: dict, case: Case, base: dict, skip: bool) -> None:
    assert stats["skipped"] == case.skipped
    assert stats.get("warnings", {}) == case.warnings
    if skip:
        assert stats["skipped_rows"] == case.skipped_rows
    else:
        assert "skipped_rows" not in stats
    ids = [r.id for r in records]
    assert ids == (case.ids if case.ids is not None else [i for i in base if i not in case.dropped])
    if case.ids is None:  # the good records are all there, unchanged (but those `check` looks at)
        changed = case.changed
        assert {r.id: asdict(r) for r in records if r.id not in changed} == {i: base[i] for i in ids
                                                                            if i not in changed}
    if case.check is not None:
        assert case.check({r.id: r for r in records})


@pytest.mark.parametrize("case", ANNOTATION, ids=[c.name for c in ANNOTATION])
def test_annotation_on_invalid_error(tmp_path, case):
    path = _write_annotation(tmp_path, case)
    if not case.error:
        _check_kept(*_load(path, "annotation", OnInvalid.error), case, _base(tmp_path, _write_annotation,
                    "annotation"), skip=False)
        return
    with pytest.raises(DataError) as err:
        _load(path, "annotation", OnInvalid.error)
    _check_error(err.value, path, case, "utterance")


@pytest.mark.parametrize("case", ANNOTATION, ids=[c.name for c in ANNOTATION])
def test_annotation_on_invalid_skip(tmp_path, case):
    path = _write_annotation(tmp_path, case)
    if case.skip_error:
        with pytest.raises(DataError) as err:
            _load(path, "annotation", OnInvalid.skip)
        says = case.skip_says or case.says
        _check_error(err.value, path, Case(case.name, case.mutate, says=says), "utterance")
        return
    records, stats = _load(path, "annotation", OnInvalid.skip)
    _check_kept(records, stats, case, _base(tmp_path, _write_annotation, "annotation"), skip=True)


# --- the authors' released JSONL files -------------------------------------------------------------------

def U(text: Any) -> dict:
    return {"role": "user", "content": text}


def A(text: Any) -> dict:
    return {"role": "assistant", "content": text}


def base_released() -> dict[str, list]:
    return {
        "dsat_data.jsonl": [
            {"prompt": [U("hi")], "rejected": [A("yo")], "user_preference": U("rude")},
            {"prompt": [{"role": "system", "content": "Be brief."}, U("2+2?")], "rejected": [A("5")],
             "user_preference": U("wrong")},
            {"prompt": [U("cat in French?"), A("Chat."), U("in Spanish?")], "rejected": [A("Gâteau")],
             "user_preference": U("that's cake")},
        ],
        "sat_data.jsonl": [{"prompt": [U("7*6?")], "chosen": [A("42")]}],
        "seed-data/train.jsonl": [{"prompt": [U("fast?")], "chosen": "Quick.", "rejected": "Slow."}],
    }


def line_edit(i: int, fn: Callable[[dict], Any]) -> Callable[[dict], dict]:
    """Replace line i (0-based) of dsat_data.jsonl with fn(its object) (a str/bytes is written as is)."""
    def mutate(files: dict) -> dict:
        files["dsat_data.jsonl"][i] = fn(files["dsat_data.jsonl"][i])
        return files
    return mutate


def with_(obj: dict, **kw: Any) -> dict:
    """obj with the fields in kw set (or deleted, for the value ...)."""
    out = {**obj, **kw}
    return {k: v for k, v in out.items() if v is not ...}


def dsat_bytes(fn: Callable[[bytes], bytes]) -> Callable[[dict], dict]:
    def mutate(files: dict) -> dict:
        files["dsat_data.jsonl"] = fn(_jsonl(files["dsat_data.jsonl"]))
        return files
    return mutate


def _jsonl(lines: list) -> bytes:
    return b"".join((x if isinstance(x, bytes) else (x if isinstance(x, str) else json.dumps(x, ensure_ascii=False))
                     .encode("utf-8")) + b"\n" for x in lines)


DSAT2 = {"wf-dsat-l2"}


def dsat2_skipped(reason: str) -> dict:
    return {"skipped": {reason: 1}, "skipped_rows": 1, "dropped": DSAT2}


RELEASED = [
    Case("missing_field", line_edit(1, lambda o: with_(o, user_preference=...)), 2, "user_preference",
         ("missing",), **dsat2_skipped("missing_field")),
    Case("misspelled_field", line_edit(1, lambda o: with_(o, user_preference=..., user_preferences=U("x"))), 2,
         "user_preference", ("did you mean 'user_preference'",), **dsat2_skipped("misspelled_field")),
    Case("misspelled_message_key", line_edit(1, lambda o: with_(o, prompt=[{"role": "user", "Content": "2+2?"}])),
         2, "prompt[0].content", ("did you mean 'content'",), **dsat2_skipped("misspelled_field")),
    Case("prompt_is_a_string", line_edit(1, lambda o: with_(o, prompt="2+2?")), 2, "prompt",
         ("expected a list", "the string"), **dsat2_skipped("wrong_type")),
    Case("content_is_a_number", line_edit(1, lambda o: with_(o, prompt=[U(4)])), 2, "prompt[0].content",
         ("expected a string, got 4",), **dsat2_skipped("wrong_type")),
    Case("preference_is_a_string", line_edit(1, lambda o: with_(o, user_preference="wrong")), 2, "user_preference",
         ("expected {'role': 'user'",), **dsat2_skipped("wrong_type")),
    Case("sharegpt_role", line_edit(1, lambda o: with_(o, prompt=[{"role": "human", "content": "2+2?"}])), 2,
         "prompt[0].role", ("did you mean 'user'",), **dsat2_skipped("unknown_role")),
    Case("prompt_not_ending_with_user", line_edit(1, lambda o: with_(o, prompt=[U("2+2?"), A("4")])), 2, "prompt",
         ("end with the user's turn",), **dsat2_skipped("bad_prompt")),
    Case("reply_not_ending_with_assistant", line_edit(1, lambda o: with_(o, rejected=[U("5")])), 2, "rejected",
         ("the assistant's",), **dsat2_skipped("bad_reply")),
    Case("empty_reply", line_edit(1, lambda o: with_(o, rejected=[A("  ")])), error=False,
         skipped={"empty_reply": 1}, skipped_rows=1, dropped=DSAT2),
    Case("null_content", line_edit(1, lambda o: with_(o, prompt=[{"role": "system", "content": None}, U("2+2?")])),
         error=False, warnings={"null_content": 1},
         check=lambda recs: recs["wf-dsat-l2"].prompt == [{"role": "system", "content": ""}, U("2+2?")],
         changed=DSAT2),
    Case("null_prompt_turn", line_edit(1, lambda o: with_(o, prompt=[U(None)])), error=False,
         skipped={"empty_prompt": 1}, skipped_rows=1, warnings={"null_content": 1}, dropped=DSAT2),
    Case("blank_prompt_turn", line_edit(1, lambda o: with_(o, prompt=[U(" \n ")])), error=False,
         skipped={"empty_prompt": 1}, skipped_rows=1, dropped=DSAT2),
    Case("blank_feedback", line_edit(1, lambda o: with_(o, user_preference=U("\t"))), error=False,
         skipped={"empty_feedback": 1}, skipped_rows=1, dropped=DSAT2),
    Case("duplicate_line", line_edit(1, lambda o: base_released()["dsat_data.jsonl"][0]), error=False,
         warnings={"duplicate_line": 1}, check=lambda recs: recs["wf-dsat-l2"].feedback == "rude",
         changed=DSAT2),
    Case("invalid_json", line_edit(1, lambda o: json.dumps(o)[:-5] + ' x}'), 2, None, ("invalid JSON",),
         **dsat2_skipped("invalid_json")),
    Case("not_an_object", line_edit(1, lambda o: [o]), 2, None, ("got an array",), **dsat2_skipped("not_an_object")),
    Case("non_utf8_bytes", line_edit(1, lambda o: json.dumps(o).encode().replace(b"wrong", b"wr\xffong")), 2, None,
         ("expected UTF-8", "0xff"), **dsat2_skipped("invalid_utf8")),
    Case("truncated_last_line", dsat_bytes(lambda b: b[:-10]), 3, None, ("truncated",),
         skipped={"truncated_line": 1}, skipped_rows=1, dropped={"wf-dsat-l3"}),
    Case("utf8_bom", dsat_bytes(lambda b: b"\xef\xbb\xbf" + b), error=False),
    Case("blank_lines_and_crlf", dsat_bytes(lambda b: b"\n" + b.replace(b"\n", b"\r\n\r\n")), error=False,
         ids=["wf-dsat-l2", "wf-dsat-l4", "wf-dsat-l6", "wf-sat-l1", "wf-seed-l1"]),
    Case("empty_file", dsat_bytes(lambda b: b""), None, None, ("empty",), skip_error=True),
    Case("git_lfs_pointer", dsat_bytes(lambda b: LFS), None, None, ("Git-LFS pointer",), skip_error=True),
    Case("every_line_bad", dsat_bytes(lambda b: b.replace(b'"prompt"', b'"Prompt"')), 1, "prompt",
         ("did you mean",), skip_error=True, skip_says=("all 3 lines were skipped", "misspelled_field")),
]


def _write_released(tmp_path: Path, case: Case) -> Path:
    folder = tmp_path / "released"
    for name, lines in case.mutate(base_released()).items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(lines if isinstance(lines, bytes) else _jsonl(lines))
    return folder


@pytest.mark.parametrize("case", RELEASED, ids=[c.name for c in RELEASED])
def test_released_on_invalid_error(tmp_path, case):
    folder = _write_released(tmp_path, case)
    if not case.error:
        _check_kept(*_load(folder, "released", OnInvalid.error), case, _base(tmp_path, _write_released,
                    "released"), skip=False)
        return
    with pytest.raises(DataError) as err:
        _load(folder, "released", OnInvalid.error)
    _check_error(err.value, folder / "dsat_data.jsonl", case, "line")


@pytest.mark.parametrize("case", RELEASED, ids=[c.name for c in RELEASED])
def test_released_on_invalid_skip(tmp_path, case):
    folder = _write_released(tmp_path, case)
    if case.skip_error:
        with pytest.raises(DataError) as err:
            _load(folder, "released", OnInvalid.skip)
        says = case.skip_says or case.says
        _check_error(err.value, folder / "dsat_data.jsonl", Case(case.name, case.mutate, says=says), "line")
        return
    records, stats = _load(folder, "released", OnInvalid.skip)
    _check_kept(records, stats, case, _base(tmp_path, _write_released, "released"), skip=True)


def test_released_base_ids(tmp_path):
    """The base set the cases mutate, for reference."""
    records, _ = _load(_write_released(tmp_path, Case("base", lambda f: f)), "released", OnInvalid.error)
    assert [r.id for r in records] == ["wf-dsat-l1", "wf-dsat-l2", "wf-dsat-l3", "wf-sat-l1", "wf-seed-l1"]


def test_annotation_base_ids(tmp_path):
    records, stats = _load(_write_annotation(tmp_path, Case("base", lambda r: r)), "annotation", OnInvalid.skip)
    assert [r.id for r in records] == BASE_IDS
    assert stats["skipped"] == {} and stats["skipped_rows"] == 0 and "warnings" not in stats


def test_conversation_too_long(tmp_path, monkeypatch):
    """UtterranceId never restarting (MAX_UTTERANCES lowered to 4 here) ends the conversation's reading."""
    from drift_exp.data import wildfeedback

    monkeypatch.setattr(wildfeedback, "MAX_UTTERANCES", 4)
    path = _write_annotation(tmp_path, Case("base", lambda r: r))
    with pytest.raises(DataError) as err:
        _load(path, "annotation", OnInvalid.error)
    _check_error(err.value, path, Case("too_long", lambda r: r, 4, "UtterranceId", ("restart at 0",)), "utterance")
    records, stats = _load(path, "annotation", OnInvalid.skip)
    assert stats["skipped"] == {"conversation_with_conversation_too_long": 2} and stats["skipped_rows"] == 5 + 5
    assert [r.id for r in records] == ["wf-c1-u1-sat", "wf-c2-u1-dsat"]
