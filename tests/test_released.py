"""The DRIFT authors' released jsonl files (cacayaya/DRIFT data/) -> FeedbackRecords, exactly."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from drift_exp.config import DataConfig
from drift_exp.data.load import load_records
from drift_exp.errors import DataError

FOLDER = Path(__file__).parent / "fixtures" / "released"
SOURCE = "wildfeedback"


def load(folder: Path = FOLDER):
    return load_records(DataConfig(name=SOURCE, source=str(folder), format="auto"))


def meta(kind: str, file: str, line: int) -> dict:
    return {"source": SOURCE, "kind": kind, "file": file, "line": line}


# (id, prompt, rejected, chosen, feedback, meta), in the order dsat, sat, seed files.
EXPECTED = [
    ("wildfeedback-dsat-l1",
     [{"role": "system", "content": "You are a helpful assistant."},
      {"role": "user", "content": "Write a one-line slogan for a bakery."}],
     "Bread. \n", None, "That's too short, make it catchy.", meta("dsat", "dsat_data.jsonl", 1)),
    ("wildfeedback-dsat-l2",
     [{"role": "user", "content": "Translate 'cat' to French."},
      {"role": "assistant", "content": "Chat."},
      {"role": "user", "content": "And to Spanish?"}],
     "Gâteau 🎂", None, "No, that means cake. I asked for «cat».", meta("dsat", "dsat_data.jsonl", 2)),
    ("wildfeedback-sat-l1",
     [{"role": "user", "content": "What is 7 × 6?"}],
     None, "42\n", None, meta("sat", "sat_data.jsonl", 1)),
    ("wildfeedback-sat-l2",
     [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "Capital of Japan?"}],
     None, "Tokyo.", None, meta("sat", "sat_data.jsonl", 2)),
    ("wildfeedback-seed-l1",
     [{"role": "user", "content": "Give me a synonym for fast."}],
     "Slow.  ", "Quick.", None, meta("seed", "seed-data/train.jsonl", 1)),
    # chosen/rejected given as full conversations: the reply is the last (assistant) message
    ("wildfeedback-seed-l2",
     [{"role": "system", "content": "Be concise."}, {"role": "user", "content": "Name a primary colour."}],
     "Grün.", "Blue.", None, meta("seed", "seed-data/train.jsonl", 2)),
]


def test_released_stats():
    _, stats = load()
    assert stats == {"source": str(FOLDER), "conversations": None, "dsat": 2, "sat": 2, "seed_pairs": 2,
                     "dsat_conversations": None, "sat_conversations": None, "skipped": {}}


def test_released_records_exact():
    records, _ = load()
    assert [r.id for r in records] == [e[0] for e in EXPECTED]
    for rec, (rid, prompt, rejected, chosen, feedback, rmeta) in zip(records, EXPECTED, strict=True):
        assert rec.id == rid
        assert rec.kind == rmeta["kind"]
        assert rec.prompt == prompt, rid
        assert rec.rejected == rejected, rid
        assert rec.chosen == chosen, rid
        assert rec.feedback == feedback, rid
        assert rec.meta == rmeta, rid


def test_released_only_dsat_file(tmp_path):
    shutil.copy(FOLDER / "dsat_data.jsonl", tmp_path / "dsat_data.jsonl")
    records, stats = load(tmp_path)
    assert [r.id for r in records] == ["wildfeedback-dsat-l1", "wildfeedback-dsat-l2"]
    assert (stats["dsat"], stats["sat"], stats["seed_pairs"]) == (2, 0, 0)


def test_missing_user_preference_names_file_line_and_field(tmp_path):
    good = {"prompt": [{"role": "user", "content": "hi"}], "rejected": [{"role": "assistant", "content": "yo"}],
            "user_preference": {"role": "user", "content": "rude"}}
    bad = {k: v for k, v in good.items() if k != "user_preference"}
    path = tmp_path / "dsat_data.jsonl"
    path.write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n", encoding="utf-8")
    with pytest.raises(DataError) as err:
        load(tmp_path)
    msg = str(err.value)
    assert str(path) in msg
    assert "line 2" in msg
    assert "'user_preference'" in msg
    assert "missing" in msg
