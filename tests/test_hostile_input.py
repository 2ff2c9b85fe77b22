"""Every reader, every damage: hostile or broken input never ends in a bare traceback or silent data loss.

Readers: the WildFeedback annotation stream, the authors' released JSON Lines, UltraFeedback as JSON Lines and as
a JSON array (streamed), and records.read_jsonl (the run directory's own files). Each case damages one row of a
valid file (the second row of 30, with later rows in later 64 KB chunks) or the whole file. With
data.on_invalid=error the DataError names the file, the row and the field; with skip the damage is counted under
its reason and every later good row is still read (the last record is checked).
"""

from __future__ import annotations

import codecs
import dataclasses
import gzip
import json
import re
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from drift_exp.config import DataConfig, OnInvalid
from drift_exp.data import guard
from drift_exp.data.load import load_records
from drift_exp.errors import DataError
from drift_exp.records import Completion, read_jsonl

N = 30  # rows per file; row 1 (0-based) is the damaged one
PAD = "x" * 8000  # long texts put later rows into later chunks of the stream
MARK = "MARK"  # a text of the damaged row: damages of text values go here
DEEP = "[" * 100_000 + "]" * 100_000  # the probe: 100k nested arrays in a field nobody reads


@dataclass
class Reader:
    name: str
    rows: Callable[[], list[dict]]  # the valid rows; row 1 holds MARK in a text field
    write: Callable[[Path, list[str]], Path]  # row texts -> the path to read
    label: str  # how messages name row 1
    skip_reason: Callable[[str], str]  # the stats["skipped"] key of a damaged row
    first_id: str  # id of the damaged row's record
    last_id: str  # id of the last record (a later good row that must survive)
    read: Callable[[Path, OnInvalid], tuple[list, dict]] | None = None  # None: load_records(format=fmt)
    fmt: str = ""
    skip_mode: bool = True  # the run directory's files have no skip mode
    streamed: bool = False  # a JSON array read by ijson (long integers are kept as text)
    text_of: Callable[[object], str] = lambda r: r.chosen  # the record text that held MARK
    target: int = 1  # index of the damaged row in rows()


def _wf_rows() -> list[dict]:
    def row(uid: int, role: str, content: str, sat: bool = False) -> dict:
        return {"UtterranceId": uid, "TurnId": uid // 2 + 1, "Role": role, "Content": content, "State": "",
                "Preceeding": "YES", "Satisfaction": sat, "Satisfaction-Justificiation": "",
                "Disatisfaction": False, "Dissatisfaction-Justificiation": ""}
    out = []
    for k in range(N):
        out += [row(0, "User", f"q{k}"), row(1, "Agent", (MARK if k == 1 else f"a{k}") + PAD),
                row(2, "User", "thanks", sat=True)]
    return out


def _array(name: str) -> Callable[[Path, list[str]], Path]:
    def write(tmp: Path, texts: list[str]) -> Path:
        path = tmp / name
        path.write_text("[" + ",\n".join(texts) + "]", encoding="utf-8")
        return path
    return write


def _jsonl(name: str) -> Callable[[Path, list[str]], Path]:
    def write(tmp: Path, texts: list[str]) -> Path:
        path = tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(t + "\n" for t in texts), encoding="utf-8")
        return path.parent if name.endswith("dsat_data.jsonl") else path
    return write


def _released_rows() -> list[dict]:
    return [{"prompt": [{"role": "user", "content": f"q{k}"}],
             "rejected": [{"role": "assistant", "content": (MARK if k == 1 else f"a{k}") + PAD}],
             "user_preference": {"role": "user", "content": "no"}} for k in range(N)]


def _uf_rows() -> list[dict]:
    def msgs(q: str, a: str) -> list[dict]:
        return [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
    return [{"prompt": f"q{k}", "prompt_id": f"p{k}", "chosen": msgs(f"q{k}", (MARK if k == 1 else f"c{k}") + PAD),
             "rejected": msgs(f"q{k}", f"r{k}"), "messages": [], "score_chosen": 8.0, "score_rejected": 3.0}
            for k in range(N)]


def _completion_rows() -> list[dict]:
    return [{"record_id": MARK if k == 1 else f"r{k}", "slot": "chosen", "outputs": [PAD]} for k in range(N)]


def _read_completions(path: Path, mode: OnInvalid) -> tuple[list, dict]:
    return read_jsonl(path, Completion), {}


READERS = [
    Reader("annotation", _wf_rows, _array("sat_dsat_annotation.json"), "utterance 4",
           lambda r: f"conversation_with_{r}", "wf-c1-u1-sat", f"wf-c{N - 1}-u1-sat", fmt="annotation",
           streamed=True, target=4),
    Reader("released", _released_rows, _jsonl("released/dsat_data.jsonl"), "line 2", lambda r: r, "wf-dsat-l2",
           f"wf-dsat-l{N}", fmt="released", text_of=lambda r: r.rejected),
    Reader("uf_jsonl", _uf_rows, _jsonl("uf.jsonl"), "line 2", lambda r: r, "wf-1", f"wf-{N - 1}",
           fmt="ultrafeedback_binarized"),
    Reader("uf_json_array", _uf_rows, _array("uf.json"), "row 1", lambda r: r, "wf-1", f"wf-{N - 1}",
           fmt="ultrafeedback_binarized", streamed=True),
    Reader("run_dir_records", _completion_rows, _jsonl("completions.jsonl"), "line 2", lambda r: r, MARK, f"r{N - 1}",
           read=_read_completions, skip_mode=False, text_of=lambda r: r.record_id),
]


def _extra(text: str, value: str) -> str:
    """The object text with a first field 'extra' holding `value` (raw JSON)."""
    return '{"extra": ' + value + ", " + text[1:]


@dataclass
class Damage:
    name: str
    edit: Callable[[str], str]  # the damaged row's JSON text -> the new text
    reason: str | None  # skip reason (None: kept, see `warning`)
    field: str | None = None  # named in the error
    warning: str | None = None  # kept and counted under stats["warnings"][warning] (both modes)
    says: tuple[str, ...] = ()
    only: tuple[str, ...] = ()  # readers it applies to (default all)
    streamed: dict = dataclasses.field(default_factory=dict)  # overrides for the streamed readers


DAMAGES = [
    # valid JSON that is not text: U+FFFD, counted, never stopping the file (in both modes: the text survives)
    Damage("lone_low_surrogate", lambda t: t.replace(MARK, "MA\\udc00RK", 1), None,
           warning="lone_surrogates_replaced"),
    Damage("lone_high_surrogate", lambda t: t.replace(MARK, "MA\\uD83DRK", 1), None,
           warning="lone_surrogates_replaced"),
    Damage("deep_nesting_in_unused_field", lambda t: _extra(t, DEEP), "too_deep", "extra",
           says=("500 or more levels",)),
    Damage("integer_of_5000_digits", lambda t: _extra(t, "9" * 5000), "number_too_long", "extra",
           says=("4300 digits",), streamed={"reason": None, "warning": "long_integers_read_as_text"}),
    Damage("duplicate_key", lambda t: _extra(t, '1, "extra": 2'), "duplicate_key", "extra", says=("twice",),
           only=("released", "uf_jsonl", "run_dir_records")),
    Damage("id_beyond_64_bits", lambda t: t.replace('"UtterranceId": 1', '"UtterranceId": 99999999999999999999', 1),
           "wrong_type", "UtterranceId", says=("expected an integer",), only=("annotation",)),
    Damage("not_utf8", lambda t: t.replace(MARK, "MA<FF>RK", 1), "invalid_utf8", None, says=("UTF-8",),
           only=("released", "run_dir_records")),
]


def _file(tmp: Path, reader: Reader, damage: Damage | None) -> Path:
    """The reader's file with row 1 damaged; '<FF>' in the text becomes the byte 0xff (not UTF-8)."""
    texts = [json.dumps(r, ensure_ascii=False) for r in reader.rows()]
    if damage is not None:
        texts[reader.target] = damage.edit(texts[reader.target])
    tmp.mkdir(parents=True, exist_ok=True)
    path = reader.write(tmp, texts)
    target = path / "dsat_data.jsonl" if path.is_dir() else path
    if b"<FF>" in (data := target.read_bytes()):
        target.write_bytes(data.replace(b"<FF>", b"\xff"))
    return path


def _read(path: Path, reader: Reader, mode: OnInvalid) -> tuple[list, dict]:
    if reader.read is not None:
        return reader.read(path, mode)
    return load_records(DataConfig(name="wf", source=str(path), format=reader.fmt, on_invalid=mode))


def _expect(reader: Reader, damage: Damage) -> Damage:
    if reader.streamed and damage.streamed:
        return Damage(damage.name, damage.edit, **{"reason": damage.reason, "field": damage.field,
                                                    "warning": damage.warning, "says": (), **damage.streamed})
    return damage


CASES = [(m, r, d) for m in (OnInvalid.error, OnInvalid.skip) for d in DAMAGES for r in READERS
         if (not d.only or r.name in d.only) and (m == OnInvalid.error or r.skip_mode)]  # (run dir: no skip mode)


@pytest.mark.parametrize("mode,reader,damage", CASES, ids=[f"{m.value}-{r.name}-{d.name}" for m, r, d in CASES])
def test_damaged_row(tmp_path, reader, damage, mode):
    path = _file(tmp_path, reader, damage)
    want = _expect(reader, damage)
    base_n = len(_read(_file(tmp_path / "base", reader, None), reader, OnInvalid.error)[0])
    if want.reason is None:  # repaired and kept, in both modes
        records, stats = _read(path, reader, mode)
        ids = [getattr(r, "id", None) or r.record_id for r in records]
        assert len(records) == base_n and ids[-1] == reader.last_id
        if want.warning == "lone_surrogates_replaced":
            assert reader.text_of(records[1]).startswith("MA\ufffdRK")
        if reader.read is None:
            assert stats["warnings"][want.warning] == 1, stats
        return
    if mode == OnInvalid.error:
        with pytest.raises(DataError) as err:
            _read(path, reader, mode)
        msg = str(err.value)
        where = path / "dsat_data.jsonl" if path.is_dir() else path
        assert str(where) in msg and re.search(rf"\b{reader.label}\b", msg), msg
        if want.field:
            assert f"'{want.field}'" in msg, msg
        for text in want.says:
            assert text in msg, msg
        return
    records, stats = _read(path, reader, mode)
    assert stats["skipped"].get(reader.skip_reason(want.reason)) == 1, stats["skipped"]
    ids = [r.id for r in records]
    assert reader.first_id not in ids and ids[-1] == reader.last_id and len(ids) == base_n - 1


# --- whole-file damage -------------------------------------------------------------------------------------

def _whole(tmp: Path, reader: Reader, fn: Callable[[bytes], bytes]) -> Path:
    path = _file(tmp, reader, None)
    target = path / "dsat_data.jsonl" if path.is_dir() else path
    target.write_bytes(fn(target.read_bytes()))
    return path


FILE_DAMAGES = {  # name: (bytes -> bytes, what the error says; None: read as usual)
    "gzip": (gzip.compress, "gzip-compressed"),
    "utf16_with_bom": (lambda b: b.decode("utf-8").encode("utf-16"), "UTF-16 LE"),
    "utf16_without_bom": (lambda b: b.decode("utf-8").encode("utf-16-le"), "UTF-16/32"),
    "empty": (lambda b: b"", "empty"),
    "white_space_only": (lambda b: b" \n\t\n" * 3000, "white space only"),
    "utf8_bom": (lambda b: codecs.BOM_UTF8 + b, None),
    "leading_white_space_over_4kb": (lambda b: b"\n \t" * 3000 + b, None),
}


@pytest.mark.parametrize("reader", READERS, ids=[r.name for r in READERS])
@pytest.mark.parametrize("damage", list(FILE_DAMAGES), ids=list(FILE_DAMAGES))
def test_damaged_file(tmp_path, reader, damage):
    fn, says = FILE_DAMAGES[damage]
    path = _whole(tmp_path, reader, fn)
    where = path / "dsat_data.jsonl" if path.is_dir() else path
    for mode in (OnInvalid.error, OnInvalid.skip) if reader.skip_mode else (OnInvalid.error,):
        if says is None:
            records, _ = _read(path, reader, mode)
            assert len(records) == N
            continue
        if reader.read is not None and damage in ("empty", "white_space_only"):
            assert _read(path, reader, mode)[0] == []  # a stage may write no rows
            continue
        with pytest.raises(DataError) as err:
            _read(path, reader, mode)
        assert str(where) in str(err.value) and says in str(err.value), str(err.value)


# --- the rest of item 5 ------------------------------------------------------------------------------------

def test_lone_surrogate_does_not_stop_the_stream_in_skip_mode(tmp_path):
    """The issue's probe: a lone low surrogate early in the file dropped the rest (300 of 304 conversations)."""
    reader = READERS[0]
    path = _file(tmp_path, reader, DAMAGES[0])
    records, stats = _read(path, reader, OnInvalid.skip)
    assert stats["conversations"] == N and len(records) == N and stats["skipped"] == {}
    assert stats["warnings"] == {"lone_surrogates_replaced": 1}


def test_deep_nesting_memory_is_bounded(tmp_path):
    """Nested arrays once needed memory growing with the square of the depth (ijson keeps a prefix string per
    level: 20 000 levels ~1 GB, the issue's 100 000 ~24 GB); now a few MB at any depth."""
    deep = Damage("deep", lambda t: _extra(t, "[" * 20_000 + "]" * 20_000), "too_deep", "extra")
    for reader in READERS[:4]:
        path = _file(tmp_path / reader.name, reader, deep)
        tracemalloc.start()
        try:
            records, stats = _read(path, reader, OnInvalid.skip)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert len(records) == N - 1, reader.name
        assert peak < 40 << 20, (reader.name, peak)


def test_legit_brackets_in_long_strings_are_not_depth(tmp_path):
    """Brackets inside strings are text: a row with 200 000 of them, over many chunks, is read as it is."""
    reader = READERS[0]
    rows = reader.rows()
    rows[4]["Content"] = "[{" * 100_000 + MARK
    path = reader.write(tmp_path, [json.dumps(r) for r in rows])
    records, stats = _read(path, reader, OnInvalid.error)
    assert len(records) == N and records[1].chosen == "[{" * 100_000 + MARK


def test_nesting_just_under_the_limit_is_read(tmp_path):
    reader = READERS[0]
    texts = [json.dumps(r) for r in reader.rows()]
    depth = guard.MAX_DEPTH - 1  # the row object is one level
    texts[4] = _extra(texts[4], "[" * (depth - 1) + "]" * (depth - 1))
    records, _ = _read(reader.write(tmp_path, texts), reader, OnInvalid.error)
    assert len(records) == N
    texts[4] = _extra(json.dumps(reader.rows()[4]), "[" * depth + "]" * depth)
    with pytest.raises(DataError, match="field 'extra': nested 500 or more"):
        _read(reader.write(tmp_path, texts), reader, OnInvalid.error)


@pytest.mark.parametrize("reader", READERS[:4], ids=[r.name for r in READERS[:4]])
def test_truncated_file(tmp_path, reader):
    """Cut inside row 20: an error naming the file, or (skip) the 20 rows before it kept and the cut counted."""
    path = _file(tmp_path, reader, None)
    target = path / "dsat_data.jsonl" if path.is_dir() else path
    data = target.read_bytes()
    target.write_bytes(data[:data.index(b'"q20"') + 3])
    with pytest.raises(DataError) as err:
        _read(path, reader, OnInvalid.error)
    assert str(target) in str(err.value) and "truncated" in str(err.value), str(err.value)
    records, stats = _read(path, reader, OnInvalid.skip)
    # (the annotation reader also drops conversation 19: a cut file cannot say whether it was complete)
    assert len(records) == (19 if reader.name == "annotation" else 20) and sum(stats["skipped"].values()) >= 1


@pytest.mark.parametrize("fmt,reader", [("ultrafeedback_binarized", READERS[2]), ("ultrafeedback_raw", None)],
                         ids=["binarized", "raw"])
def test_chosen_equals_rejected(tmp_path, fmt, reader):
    if fmt == "ultrafeedback_binarized":
        rows = _uf_rows()
        rows[1]["rejected"] = rows[1]["chosen"]
    else:
        comp = [{"response": "same", "overall_score": 9.0, "model": "a"},
                {"response": " same ", "overall_score": 2.0, "model": "b"}]
        rows = [{"source": "s", "instruction": f"i{k}", "models": [],
                 "completions": comp if k == 1 else [{"response": f"r{k}", "overall_score": 9.0},
                                                     {"response": f"w{k}", "overall_score": 1.0}]}
                for k in range(N)]
    path = tmp_path / "uf.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    cfg = {"name": "wf", "source": str(path), "format": fmt}
    with pytest.raises(DataError, match=r"line 2: field '(rejected\[1\]\.content|completions\[1\]\.response)': "
                                        r"the same"):
        load_records(DataConfig(**cfg))
    records, stats = load_records(DataConfig(**cfg, on_invalid=OnInvalid.skip))
    assert stats["skipped"] == {"chosen_equals_rejected": 1} and len(records) == N - 1


def test_huge_line_is_not_held_whole(tmp_path, monkeypatch):
    """A JSON Lines row over MAX_LINE (64 MiB; 16 KiB here) is reported and read past in pieces."""
    from drift_exp.data import lines

    monkeypatch.setattr(lines, "MAX_LINE", 16 << 10)
    for reader in READERS[1], READERS[2], READERS[4]:
        path = _file(tmp_path / reader.name, reader, Damage("huge", lambda t: _extra(t, '"' + "y" * 50_000 + '"'),
                                                            "line_too_long"))
        with pytest.raises(DataError, match=r"line 2: over 16,384 bytes in one line"):
            _read(path, reader, OnInvalid.error)
        if reader.skip_mode:
            records, stats = _read(path, reader, OnInvalid.skip)
            assert stats["skipped"] == {"line_too_long": 1} and len(records) == N - 1


def test_guard_changes_nothing_else_at_any_chunking():
    """The byte guard sees the file in arbitrary pieces: benign JSON (escapes, brackets and quotes inside strings,
    surrogate pairs, 64-bit integers) comes out byte for byte, and the damages are repaired the same way."""
    import random

    rng = random.Random(0)
    alphabet = ['a', '"', '\\', '[', ']', '{', '}', ' ', '\n', 'é', '\U0001f600', '0', '1']

    def text() -> str:
        return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30)))

    def value(d: int = 0):
        r = rng.random()
        if d < 5 and r < 0.2:
            return [value(d + 1) for _ in range(rng.randint(0, 4))]
        if d < 5 and r < 0.4:
            return {text(): value(d + 1) for _ in range(rng.randint(0, 4))}
        return text() if r < 0.7 else rng.choice([rng.randint(-2 ** 63, 2 ** 63 - 1), rng.random(), True, None])

    def feed(data: bytes, rows_done: bool = False) -> tuple[bytes, guard.StreamGuard]:
        g, out, i = guard.StreamGuard(), b"", 0
        while i < len(data):
            n = rng.choice([1, 2, 3, 7, 13, 64, 1000])
            out += g.feed(data[i:i + n], False)
            i += n
            if rows_done:  # ijson says rows ended (made up here: benign data cannot pass the bound anyway)
                g.rows_done += rng.random() < 0.3
        return out + g.feed(b"", True), g

    for _ in range(150):
        data = json.dumps([value() for _ in range(rng.randint(1, 20))], ensure_ascii=rng.random() < 0.5).encode()
        out, g = feed(data, rows_done=True)
        assert out == data and (g.surrogates, g.long_ints, g.too_deep) == (0, 0, 0)
    for _ in range(60):
        lone = rng.choice(["\\udc00", "\\ud83d", "\\uDBFF"])
        big = rng.choice(["99999999999999999999", "-9223372036854775809", "1" * 100])
        depth = rng.choice([10, 499, 501, 3000])
        nest = "[" * depth + "]" * depth
        data = ('[{"a": "x' + lone + 'y", "b": ' + big + ', "c": ' + nest + '}, {"a": "ok"}]').encode()
        out, g = feed(data)
        rows = json.loads(out)
        assert rows[0]["a"] == "x\ufffdy" and rows[0]["b"] == big[1:-1] and rows[1] == {"a": "ok"}
        assert guard.value_depth(rows[0]["c"], 10 ** 6) == min(depth, guard.MAX_DEPTH - 1)
        assert (g.surrogates, g.long_ints, g.too_deep) == (1, 1, int(depth + 1 > guard.MAX_DEPTH))
