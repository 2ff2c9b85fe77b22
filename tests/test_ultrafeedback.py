"""UltraFeedback (HuggingFaceH4 binarized and openbmb raw) -> 'pref' FeedbackRecords: exact records on
hand-written fixtures, the raw binarisation, the bundled samples, malformed input and the conf/data files.
Every expected value here was worked out by hand from tests/fixtures/ultrafeedback/."""

from __future__ import annotations

import copy
import hashlib
import json
import math
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from drift_exp.config import DataConfig, OnInvalid, register_configs
from drift_exp.data import SAMPLE_DIR, ultrafeedback
from drift_exp.data.load import load_records
from drift_exp.errors import DataError
from drift_exp.plan import validate

from .conftest import CONF

FIXTURES = Path(__file__).parent / "fixtures" / "ultrafeedback"
BIN, RAW = "ultrafeedback_binarized", "ultrafeedback_raw"


def U(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


def A(text: str) -> dict[str, str]:
    return {"role": "assistant", "content": text}


def load(source, fmt: str, seed: int = 42, skip: bool = False, name: str = "uf"):
    cfg = DataConfig(name=name, source=str(source), format=fmt,
                     on_invalid=OnInvalid.skip if skip else OnInvalid.error)
    return load_records(cfg, seed=seed)


# --- binarized fixture ----------------------------------------------------------------------------------

def test_binarized_fixture_records_exact():
    records, stats = load(FIXTURES / "binarized_small.jsonl", BIN)
    expected = [
        ("uf-0", [U("Name a primary colour.")], "Red is a primary colour.", "Green.", 0,
         "b6d0a5ef2b0d8ab6c2d1c44f8c0d7ae4a1e3a0c5cb1dd6b7c2f8a90e31e4c7d2", 8.5, 4.0),
        # multi-turn: the prompt is everything before the final reply, system message included
        ("uf-1", [{"role": "system", "content": "Be brief."}, U("Say hello."), A("Hello!"), U("And in French?")],
         "Bonjour !", "Hola.", 1, "p1", 9.0, 2.5),
        # the blank line is not a row; integer scores become floats; whitespace and non-ASCII kept exactly
        ("uf-2", [U("Résume « Le Petit Prince » en une phrase.")],
         "Un petit prince venu d’un astéroïde apprend, au fil de ses rencontres, que « l’essentiel est invisible "
         "pour les yeux ».  \n", "C'est un livre. 📚", 2, "p2", 7.0, 3.0),
        # no 'messages' field (unused), equal scores are kept as given
        ("uf-3", [U("2 + 2?")], "4", "5", 3, "p3", 6.0, 6.0),
    ]
    assert len(records) == len(expected)
    for rec, (rid, prompt, chosen, rejected, row, pid, sc, sr) in zip(records, expected, strict=True):
        assert (rec.id, rec.prompt, rec.chosen, rec.rejected, rec.feedback) == (rid, prompt, chosen, rejected, None)
        assert rec.meta == {"source": "uf", "kind": "pref", "row": row, "prompt_id": pid, "score_chosen": sc,
                            "score_rejected": sr}
        assert type(rec.meta["score_chosen"]) is float and rec.kind == "pref"
    assert stats == {"source": str(FIXTURES / "binarized_small.jsonl"), "format": BIN, "rows": 4, "prompts": 4,
                     "skipped": {}}


def test_binarized_prompt_is_a_copy():
    records, _ = load(FIXTURES / "binarized_small.jsonl", BIN)
    records[1].prompt[0]["content"] = "changed"
    assert records[1].prompt[1] == U("Say hello.")


def test_binarized_from_json_array_and_parquet(tmp_path):
    rows = [json.loads(line) for line in (FIXTURES / "binarized_small.jsonl").read_text("utf-8").splitlines()
            if line.strip()]
    want, _ = load(FIXTURES / "binarized_small.jsonl", BIN)
    array = tmp_path / "rows.json"
    array.write_text(json.dumps(rows, ensure_ascii=False, indent=1), encoding="utf-8")
    got, stats = load(array, BIN)
    assert got == want and stats["rows"] == 4
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist([{k: r[k] for k in ultrafeedback.BINARIZED_FIELDS} for r in rows]),
                   tmp_path / "train_prefs.parquet")
    got, stats = load(tmp_path / "train_prefs.parquet", BIN)
    assert got == want and stats["rows"] == 4
    rows[2]["chosen"] = "not a list"
    array.write_text(json.dumps(rows), encoding="utf-8")
    with pytest.raises(DataError, match=r"rows\.json: row 2: field 'chosen'"):
        load(array, BIN)


def test_hub_id_and_folder_are_read_with_datasets(monkeypatch, tmp_path):
    rows = [json.loads(line) for line in (FIXTURES / "binarized_small.jsonl").read_text("utf-8").splitlines()
            if line.strip()]
    calls = []

    def fake_load_dataset(name, split, revision):
        calls.append((name, split, revision))
        return rows

    import datasets

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    cfg = DataConfig(name="ultrafeedback", source="HuggingFaceH4/ultrafeedback_binarized", format=BIN,
                     split="test_prefs", revision="abc123")
    records, stats = load_records(cfg)
    assert calls == [("HuggingFaceH4/ultrafeedback_binarized", "test_prefs", "abc123")]
    assert [r.id for r in records] == [f"ultrafeedback-{i}" for i in range(4)]
    assert stats["source"] == "HuggingFaceH4/ultrafeedback_binarized"
    cfg = DataConfig(name="uf", source=str(tmp_path), format=BIN)
    assert len(load_records(cfg)[0]) == 4 and calls[-1] == (str(tmp_path), "train_prefs", None)

    def failing(name, split, revision):
        raise ConnectionError("offline")

    monkeypatch.setattr(datasets, "load_dataset", failing)
    with pytest.raises(DataError, match="could not load split 'train' with datasets"):
        load_records(DataConfig(name="r", source="openbmb/UltraFeedback", format=RAW, split="train"))


# --- raw fixture: the binarisation ----------------------------------------------------------------------

RAW_FIXTURE = FIXTURES / "raw_small.jsonl"
R0 = ["How about Smoky?", "Ash, Pebble or Earl Grey.", "Dog.", "Shadow."]
R1 = ["144, since 12 × 12 = 144.", "12 × 12 = 144.", "It is 144.", "124"]
R5 = ["No, it is far too narrow to be seen from the Moon.",
      "No. From the Moon, individual human structures are invisible to the naked eye; even from low Earth orbit "
      "the Wall is very hard to spot.",
      "Yes, it is the only man-made structure visible from the Moon.", "No."]
R0_SCORES, R1_SCORES, R5_SCORES = [6.0, 8.5, 3.0, 7.0], [7.5, 9.0, 9.0, 2.0], [7.0, 10.0, 4.0, 9.0]


def test_raw_fixture_records_exact():
    records, stats = load(RAW_FIXTURE, RAW)
    assert [r.id for r in records] == [f"uf-{i}" for i in range(6)]
    by_row = {r.meta["row"]: r for r in records}
    # (prompt, chosen, score_chosen, chosen index) -- chosen is the highest overall_score, the first on ties
    expected = {
        0: ("Suggest a name for a grey cat.", R0[1], 8.5, 1, "sharegpt", "llama-2-13b-chat"),
        1: ("What is 12 × 12?", R1[1], 9.0, 1, "evol_instruct", "starchat"),  # tie 9.0/9.0 -> the first
        2: ("Translate to Spanish: good night", "Buenas noches", 5.0, 1, "flan", "vicuna-33b"),  # NaN 1st, None 3rd
        3: ("Give one tip for staying focused.", "Work in 25-minute blocks with short breaks.", 7.0, 2, "ultrachat",
            "wizardlm-7b"),  # 8.0 has an empty response, "8" is a string: neither is eligible
        4: ("How many legs does a snake have?", "None: snakes are legless reptiles.", 4.0, 1, "false_qa", "gpt-4"),
        5: ("Can you see the Great Wall of China from the Moon with the naked eye?", R5[1], 10.0, 1, "truthful_qa",
            "llama-2-13b-chat"),
    }
    for row, (prompt, chosen, sc, ci, subset, model) in expected.items():
        rec = by_row[row]
        assert rec.prompt == [U(prompt)] and rec.chosen == chosen and rec.feedback is None
        assert rec.meta["score_chosen"] == sc and type(rec.meta["score_chosen"]) is float
        assert (rec.meta["completion_chosen"], rec.meta["subset"], rec.meta["model_chosen"]) == (ci, subset, model)
        assert rec.meta["prompt_id"] == hashlib.sha256(prompt.encode("utf-8")).hexdigest()
        assert rec.meta["source"] == "uf" and rec.kind == "pref" and rec.meta["row"] == row
    # only one eligible completion is left besides the top one, so rejected is fixed
    assert (by_row[2].rejected, by_row[2].meta["score_rejected"], by_row[2].meta["completion_rejected"]) == \
        ("Buena noche.", 4.5, 3)
    assert (by_row[3].rejected, by_row[3].meta["score_rejected"], by_row[3].meta["model_rejected"]) == \
        ("Put your phone in another room.", 6.0, "llama-2-70b-chat")
    assert (by_row[4].rejected, by_row[4].meta["score_rejected"]) == ("Snakes have four legs.", 3.0)
    # otherwise one of the rest (never the chosen one), with its own score
    for row, texts, scores in ((0, R0, R0_SCORES), (1, R1, R1_SCORES), (5, R5, R5_SCORES)):
        j = by_row[row].meta["completion_rejected"]
        assert j != 1 and by_row[row].rejected == texts[j] and by_row[row].meta["score_rejected"] == scores[j]
    assert stats == {"source": str(RAW_FIXTURE), "format": RAW, "rows": 6, "prompts": 6, "skipped": {},
                     "nan_scores": 1, "none_scores": 1, "non_numeric_scores": 1, "empty_responses": 1,
                     "top_score_ties": 1}
    json.dumps(stats, allow_nan=False)
    json.dumps([r.meta for r in records], allow_nan=False)


def _rejected(seed: int, source=RAW_FIXTURE, skip: bool = False) -> dict[int, str]:
    return {r.meta["row"]: r.rejected for r in load(source, RAW, seed=seed, skip=skip)[0]}


def test_raw_rejected_is_reproducible_and_seed_dependent():
    assert _rejected(42) == _rejected(42)
    # pinned for seed 42 (random.Random("ultrafeedback-42-<row>")): guards against silent changes of the draw
    assert _rejected(42) == PINNED_SEED_42
    per_seed = [_rejected(seed) for seed in range(10)]
    assert len({tuple(sorted(r.items())) for r in per_seed}) > 1
    assert len({r[0] for r in per_seed}) > 1  # row 0 alone already varies with the seed
    assert all(r[2] == "Buena noche." for r in per_seed)  # a forced choice does not


PINNED_SEED_42 = {0: R0[0], 1: R1[2], 2: "Buena noche.", 3: "Put your phone in another room.",
                  4: "Snakes have four legs.", 5: R5[3]}


def test_raw_draw_of_a_row_does_not_depend_on_other_rows(tmp_path):
    lines = RAW_FIXTURE.read_text("utf-8").splitlines(keepends=True)
    lines[4] = "{not json\n"  # row 3 (line 5) becomes unreadable; the other rows keep their index
    lines[0] = lines[0].replace('"How about Smoky?"', '"Smoky, maybe?"')  # and another row changes its text
    path = tmp_path / "raw.jsonl"
    path.write_text("".join(lines), encoding="utf-8")
    for seed in (0, 1, 42):
        before, after = _rejected(seed), _rejected(seed, path, skip=True)
        assert 3 not in after
        for row in (1, 2, 4, 5):
            assert after[row] == before[row]


# --- the bundled samples --------------------------------------------------------------------------------

def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text("utf-8").splitlines() if line.strip()]


def test_binarized_sample_loads_with_expected_counts():
    rows = _rows(SAMPLE_DIR / "ultrafeedback_binarized.jsonl")
    assert len(rows) == 40
    records, stats = load_records(DataConfig(name="uf_sample", source="sample", format=BIN))
    assert (stats["rows"], stats["prompts"], stats["skipped"]) == (40, 40, {})
    for n, (rec, row) in enumerate(zip(records, rows, strict=True)):
        assert rec.id == f"uf_sample-{n}" and rec.meta["row"] == n
        assert rec.prompt == [U(row["prompt"])] == row["chosen"][:-1] == row["rejected"][:-1]
        assert (rec.chosen, rec.rejected) == (row["chosen"][-1]["content"], row["rejected"][-1]["content"])
        assert row["messages"] == row["chosen"]
        assert row["prompt_id"] == hashlib.sha256(row["prompt"].encode("utf-8")).hexdigest() == rec.meta["prompt_id"]
        assert rec.meta["score_chosen"] == row["score_chosen"] >= row["score_rejected"] == rec.meta["score_rejected"]
    assert len({r["prompt"] for r in rows}) == 40


def test_raw_sample_loads_with_expected_counts():
    rows = _rows(SAMPLE_DIR / "ultrafeedback_raw.jsonl")  # Python's json reads the NaN token
    assert len(rows) == 24
    counts = {"nan_scores": 0, "none_scores": 0, "non_numeric_scores": 0, "empty_responses": 0, "top_score_ties": 0}
    chosen = []
    for row in rows:
        scores = [c["overall_score"] for c in row["completions"]]
        counts["nan_scores"] += sum(isinstance(s, float) and math.isnan(s) for s in scores)
        counts["none_scores"] += sum(s is None for s in scores)
        ok = [(i, s) for i, s in enumerate(scores) if isinstance(s, float) and not math.isnan(s)]
        top = max(s for _, s in ok)
        counts["top_score_ties"] += sum(s == top for _, s in ok) > 1
        chosen.append(next(i for i, s in ok if s == top))
    assert counts == {"nan_scores": 2, "none_scores": 1, "non_numeric_scores": 0, "empty_responses": 0,
                      "top_score_ties": 5}
    records, stats = load_records(DataConfig(name="uf_raw_sample", source="sample", format=RAW), seed=7)
    assert (stats["rows"], stats["prompts"], stats["skipped"]) == (24, 24, {})
    assert {k: stats[k] for k in counts} == counts
    for rec, row, ci in zip(records, rows, chosen, strict=True):
        comps = row["completions"]
        assert rec.prompt == [U(row["instruction"])] and rec.chosen == comps[ci]["response"]
        j = rec.meta["completion_rejected"]
        assert j != ci and rec.rejected == comps[j]["response"] and rec.meta["score_rejected"] == \
            comps[j]["overall_score"] and not math.isnan(rec.meta["score_rejected"])
    for row in rows:
        assert len(row["completions"]) == 4 and row["models"] == [c["model"] for c in row["completions"]]
        assert row["source"] in {"sharegpt", "evol_instruct", "flan", "ultrachat", "false_qa", "truthful_qa"}
        for c in row["completions"]:
            assert set(c["annotations"]) == {"instruction_following", "honesty", "truthfulness", "helpfulness"}
            assert all(isinstance(a["Rating"], str) for a in c["annotations"].values())


# --- malformed input ------------------------------------------------------------------------------------

GOOD_BIN = _rows(FIXTURES / "binarized_small.jsonl")[0]
GOOD_RAW = _rows(RAW_FIXTURE)[0]


def _bin(**changes) -> dict:
    row = copy.deepcopy(GOOD_BIN)
    for key, value in changes.items():
        if value is KeyError:
            del row[key]
        else:
            row[key] = value
    return row


def _raw(change=None, **changes) -> dict:
    row = copy.deepcopy(GOOD_RAW)
    if change is not None:
        row["completions"] = change(row["completions"])
    for key, value in changes.items():
        if value is KeyError:
            del row[key]
        else:
            row[key] = value
    return row


def _scores(*scores):
    def change(comps):
        for comp, score in zip(comps, scores, strict=True):
            comp["overall_score"] = score
        return comps
    return change


def _set(i, key, value):
    def change(comps):
        if value is KeyError:
            del comps[i][key]
        else:
            comps[i][key] = value
        return comps
    return change


NAN = float("nan")
# (format, the bad middle row (an object, or the raw bytes of the line), skip reason, text the error must name)
BAD = {
    "bin_missing_field": (BIN, _bin(chosen=KeyError), "missing_field", "field 'chosen': missing"),
    "bin_missing_prompt_id": (BIN, _bin(prompt_id=KeyError), "missing_field", "field 'prompt_id'"),
    "bin_wrong_type_prompt": (BIN, _bin(prompt=5), "wrong_type", "field 'prompt': expected a string"),
    "bin_empty_prompt": (BIN, _bin(prompt="  \n"), "empty_prompt", "field 'prompt'"),
    "bin_no_prompt_messages": (BIN, _bin(chosen=[A("x")], rejected=[A("y")]), "empty_prompt", "field 'chosen'"),
    "bin_chosen_not_a_list": (BIN, _bin(chosen="Red."), "not_a_message_list", "field 'chosen': expected a list"),
    "bin_message_without_content": (BIN, _bin(rejected=[U("Name a primary colour."), {"role": "assistant"}]),
                                    "not_a_message_list", "field 'rejected'"),
    "bin_not_ending_with_assistant": (BIN, _bin(rejected=[U("Name a primary colour."), U("Green.")]),
                                      "no_assistant_reply", "field 'rejected': expected the last message"),
    "bin_empty_message_list": (BIN, _bin(chosen=[]), "no_assistant_reply", "field 'chosen'"),
    "bin_prompts_differ": (BIN, _bin(rejected=[U("Name a colour."), A("Green.")]), "prompts_differ",
                           "fields 'chosen' and 'rejected'"),
    "bin_empty_reply": (BIN, _bin(chosen=[U("Name a primary colour."), A(" ")]), "empty_reply", "field 'chosen'"),
    "bin_nan_score": (BIN, _bin(score_chosen=NAN), "nan_score", "field 'score_chosen': expected a number"),
    "bin_none_score": (BIN, _bin(score_rejected=None), "nan_score", "field 'score_rejected'"),
    "bin_string_score": (BIN, _bin(score_chosen="8.5"), "wrong_type", "field 'score_chosen'"),
    "bin_invalid_json": (BIN, b'{"prompt": "x", ', "invalid_json", "not valid JSON"),
    "bin_not_utf8": (BIN, json.dumps(GOOD_BIN).encode("utf-8").replace(b"Green", b"Gr\xe9en"), "not_utf8",
                     "not UTF-8"),
    "bin_not_an_object": (BIN, [1, 2], "not_an_object", "expected a JSON object"),
    "raw_missing_instruction": (RAW, _raw(instruction=KeyError), "missing_field", "field 'instruction': missing"),
    "raw_missing_completions": (RAW, _raw(completions=KeyError), "missing_field",
                                "field 'completions': missing"),
    "raw_wrong_type_instruction": (RAW, _raw(instruction=["a"]), "wrong_type", "field 'instruction'"),
    "raw_empty_prompt": (RAW, _raw(instruction=""), "empty_prompt", "field 'instruction'"),
    "raw_completions_not_a_list": (RAW, _raw(change=lambda c: c[0]), "wrong_type", "field 'completions'"),
    "raw_one_completion": (RAW, _raw(change=lambda c: c[:1]), "fewer_than_2_completions",
                           "field 'completions': expected at least 2, got 1"),
    "raw_no_completions": (RAW, _raw(change=lambda c: []), "fewer_than_2_completions", "field 'completions'"),
    "raw_all_scores_nan_or_none": (RAW, _raw(change=_scores(NAN, None, NAN, "n/a")), "no_scored_completions",
                                   "overall_score"),
    "raw_one_scored": (RAW, _raw(change=_scores(NAN, None, 7.0, NAN)), "fewer_than_2_completions",
                       "field 'completions': expected at least 2 with a numeric overall_score"),
    "raw_one_nonempty": (RAW, _raw(change=lambda c: _set(1, "response", "")(_set(2, "response", None)(
        _set(3, "response", "\n")(c)))), "fewer_than_2_completions", "field 'completions'"),
    "raw_completion_missing_response": (RAW, _raw(change=_set(1, "response", KeyError)), "missing_field",
                                        "field 'completions[1].response': missing"),
    "raw_completion_missing_score": (RAW, _raw(change=_set(3, "overall_score", KeyError)), "missing_field",
                                     "field 'completions[3].overall_score'"),
    "raw_completion_not_an_object": (RAW, _raw(change=lambda c: c[:2] + ["text", c[3]]), "wrong_type",
                                     "field 'completions[2]': expected an object"),
    "raw_response_wrong_type": (RAW, _raw(change=_set(0, "response", 3)), "wrong_type",
                                "field 'completions[0].response'"),
    "raw_invalid_json": (RAW, b'{"source": NaN NaN}', "invalid_json", "not valid JSON"),
    "raw_not_utf8": (RAW, b'{"source": "flan", "instruction": "caf\xe9"}', "not_utf8", "not UTF-8"),
}


def _write_three(tmp_path: Path, fmt: str, bad) -> Path:
    good = GOOD_BIN if fmt == BIN else GOOD_RAW
    middle = bad if isinstance(bad, bytes) else json.dumps(bad, ensure_ascii=False).encode("utf-8")
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b"\n".join([json.dumps(good).encode(), middle, json.dumps(good).encode()]) + b"\n")
    return path


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_row_error_names_file_row_and_field(tmp_path, case):
    fmt, bad, _, what = BAD[case]
    path = _write_three(tmp_path, fmt, bad)
    with pytest.raises(DataError) as err:
        load(path, fmt)
    msg = str(err.value)
    assert msg.startswith(f"{path}: line 2: "), msg
    assert what in msg and "data.on_invalid=skip" in msg, msg


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_row_skipped_and_counted(tmp_path, case):
    fmt, bad, reason, _ = BAD[case]
    records, stats = load(_write_three(tmp_path, fmt, bad), fmt, skip=True)
    assert [r.id for r in records] == ["uf-0", "uf-2"]  # the good rows keep their source index
    assert records[0].chosen == records[1].chosen and records[0].prompt == records[1].prompt
    assert (stats["rows"], stats["prompts"], stats["skipped"]) == (3, 2, {reason: 1})
    json.dumps(stats, allow_nan=False)


def test_skip_counts_many_reasons_at_once(tmp_path):
    lines = [json.dumps(GOOD_BIN), json.dumps(_bin(chosen=KeyError)), "", "{oops", json.dumps(GOOD_BIN),
             json.dumps(_bin(prompt="")), json.dumps(_bin(score_chosen=None)), json.dumps(_bin(prompt=1)),
             json.dumps(_bin(chosen=KeyError)), json.dumps(GOOD_BIN)]
    path = tmp_path / "many.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    records, stats = load(path, BIN, skip=True)
    assert [r.id for r in records] == ["uf-0", "uf-3", "uf-8"]
    assert stats["skipped"] == {"empty_prompt": 1, "invalid_json": 1, "missing_field": 2, "nan_score": 1,
                                "wrong_type": 1}
    assert (stats["rows"], stats["prompts"]) == (9, 3)
    with pytest.raises(DataError, match=r"many\.jsonl: line 2: field 'chosen': missing"):
        load(path, BIN)


def test_raw_skip_keeps_score_counts_of_rows_read(tmp_path):
    path = tmp_path / "raw.jsonl"
    rows = [GOOD_RAW, _raw(change=_scores(NAN, None, 7.0, NAN)), _raw(change=_scores(5.0, 5.0, None, "x"))]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    records, stats = load(path, RAW, skip=True)
    assert [r.id for r in records] == ["uf-0", "uf-2"]
    assert records[1].chosen == R0[0] and records[1].rejected == R0[1]  # tie 5.0/5.0 -> the first; only 1 left
    # the skipped row's NaN/None were seen and are counted too
    assert {k: stats[k] for k in ultrafeedback.RAW_COUNTS} == {
        "nan_scores": 2, "none_scores": 2, "non_numeric_scores": 1, "empty_responses": 0, "top_score_ties": 1}
    assert stats["skipped"] == {"fewer_than_2_completions": 1}


@pytest.mark.parametrize("fmt", [BIN, RAW])
@pytest.mark.parametrize("name,content", [("empty.jsonl", b""), ("blank.jsonl", b"\n  \n"), ("empty.json", b"[]"),
                                          ("empty.parquet", None)])
def test_empty_file_is_an_error_even_with_skip(tmp_path, fmt, name, content):
    path = tmp_path / name
    if content is None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.table({"prompt": pa.array([], pa.string())}), path)
    else:
        path.write_bytes(content)
    for skip in (False, True):
        with pytest.raises(DataError, match=rf"{name}: (empty file|the file is empty)"):
            load(path, fmt, skip=skip)


def test_all_rows_invalid_is_an_error_with_skip(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text("{oops\n[1]\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"none of the 2 rows is usable \(skipped: \{'invalid_json': 1, "
                                        r"'not_an_object': 1\}\)"):
        load(path, BIN, skip=True)


def test_file_level_problems(tmp_path):
    bad_utf8 = tmp_path / "rows.json"
    bad_utf8.write_bytes(b'[{"prompt": "caf\xe9"}]')
    with pytest.raises(DataError, match=r"rows\.json: row 0: bytes that are not UTF-8 \(byte 16\)"):
        load(bad_utf8, BIN)
    broken = tmp_path / "broken.json"
    broken.write_text('[{"prompt": ', encoding="utf-8")
    with pytest.raises(DataError, match=r"broken\.json: row 0: the file ends before the array is closed"):
        load(broken, BIN)
    obj = tmp_path / "obj.json"
    obj.write_text('{"rows": []}', encoding="utf-8")  # not an array: read as JSON Lines, one non-row object
    with pytest.raises(DataError, match=r"obj\.json: line 1: field 'prompt': missing"):
        load(obj, BIN)
    csv = tmp_path / "rows.csv"
    csv.write_text("prompt,chosen\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"rows\.csv: expected a \.jsonl, \.json or \.parquet file"):
        load(csv, BIN)
    notparquet = tmp_path / "x.parquet"
    notparquet.write_text("hello", encoding="utf-8")
    with pytest.raises(DataError, match=r"x\.parquet: cannot read as parquet"):
        load(notparquet, BIN)
    with pytest.raises(DataError, match="no such file"):
        load(tmp_path / "missing.jsonl", BIN)
    with pytest.raises(DataError, match="not an UltraFeedback format"):
        ultrafeedback.load(DataConfig(name="x", source="sample"), "annotation", 0)


# --- conf/data ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("option,name,source,fmt,split", [
    ("uf_sample", "uf_sample", "sample", BIN, "train_prefs"),
    ("uf_raw_sample", "uf_raw_sample", "sample", RAW, "train"),
    ("ultrafeedback", "ultrafeedback", "HuggingFaceH4/ultrafeedback_binarized", BIN, "train_prefs"),
    ("ultrafeedback_raw", "ultrafeedback_raw", "openbmb/UltraFeedback", RAW, "train"),
])
def test_conf_data_files_compose(option, name, source, fmt, split):
    register_configs()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = OmegaConf.to_object(compose(config_name="config", overrides=[f"data={option}"]))
    validate(cfg)
    d = cfg.data
    assert (d.name, d.source, d.format, d.split, d.revision, d.on_invalid) == (name, source, fmt, split, None,
                                                                               OnInvalid.error)
    if source == "sample":
        records, stats = load_records(d, seed=cfg.seed)
        assert stats["prompts"] == (40 if fmt == BIN else 24)
