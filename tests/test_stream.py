"""The streaming annotation reader and the record cache: same records and stats as json.load + extract,
cache hits and invalidation, and memory that does not grow with the file."""

from __future__ import annotations

import json
import logging
import os
import tracemalloc
from dataclasses import asdict
from pathlib import Path

import pytest

from drift_exp.config import DataConfig, OnInvalid
from drift_exp.data import SAMPLE_DIR, cache, stream, wildfeedback
from drift_exp.data.load import load_records

FIXTURE = Path(__file__).parent / "fixtures" / "wildfeedback_small.json"
FILES = [SAMPLE_DIR / "sat_dsat_annotation.json", FIXTURE]


def plain(path: Path, skip: bool = False):
    """The reference: the whole file with json.load, then extract."""
    with open(path, encoding="utf-8") as f:
        rows = json.load(f)
    records, stats = wildfeedback.extract(rows, path, "wf", skip)
    return [asdict(r) for r in records], stats


@pytest.mark.parametrize("path", FILES, ids=["sample", "fixture"])
@pytest.mark.parametrize("backend", [None, "python"], ids=["default", "python_backend"])
@pytest.mark.parametrize("skip", [False, True], ids=["error", "skip"])
def test_stream_equals_json_load(path, backend, skip):
    records, stats = wildfeedback.read_annotation(path, "wf", skip, backend=backend)
    assert ([asdict(r) for r in records], stats) == plain(path, skip)
    assert records and stats["utterances"] > 0


@pytest.mark.parametrize("path", FILES, ids=["sample", "fixture"])
def test_load_records_streams_the_same(path):
    records, stats = load_records(DataConfig(name="wf", source=str(path), format="annotation"))
    assert ([asdict(r) for r in records], stats) == plain(path)
    assert "cache" not in stats  # small files are not cached


def test_extract_takes_a_one_pass_iterator():
    rows = json.loads(FIXTURE.read_text(encoding="utf-8"))
    a = wildfeedback.extract(iter(rows), FIXTURE, "wf", False)
    b = wildfeedback.extract(rows, FIXTURE, "wf", False)
    assert [asdict(r) for r in a[0]] == [asdict(r) for r in b[0]] and a[1] == b[1]


def test_without_ijson_falls_back_to_json_load(monkeypatch, caplog):
    monkeypatch.setattr(stream, "ijson", None)
    with caplog.at_level(logging.WARNING, logger="drift_exp.data.stream"):
        records, stats = wildfeedback.read_annotation(FIXTURE, "wf", False)
    assert ([asdict(r) for r in records], stats) == plain(FIXTURE)
    assert "ijson is not installed" in caplog.text


def test_slow_backend_is_a_warning(monkeypatch, caplog):
    monkeypatch.setattr(stream.ijson, "backend", "python")
    with caplog.at_level(logging.WARNING, logger="drift_exp.data.stream"):
        records, _ = wildfeedback.read_annotation(FIXTURE, "wf", False)
    assert "yajl2_c" in caplog.text and len(records) == 16


def test_c_backend_is_installed():
    """The speed targets (bench/bench_reader.py) assume ijson's C backend."""
    assert stream.ijson is not None and stream.ijson.backend == "yajl2_c"


# --- the record cache -----------------------------------------------------------------------------------

@pytest.fixture
def cached_env(tmp_path, monkeypatch):
    """Cache every file (MIN_BYTES=0) in a private cache root; a copy of the fixture to modify."""
    monkeypatch.setattr(cache, "MIN_BYTES", 0)
    monkeypatch.setenv("DRIFT_EXP_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "data" / "sat_dsat_annotation.json"
    path.parent.mkdir()
    path.write_bytes(FIXTURE.read_bytes())
    return path


def _load(path: Path, name: str = "wf", on_invalid: OnInvalid = OnInvalid.error):
    records, stats = load_records(DataConfig(name=name, source=str(path), format="annotation", on_invalid=on_invalid))
    return [asdict(r) for r in records], stats


def _entries(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "cache" / "records").iterdir())


def test_cache_hit_returns_identical_records(cached_env, tmp_path):
    records, stats = _load(cached_env)
    assert stats.pop("cache") == "miss"
    assert (records, stats) == plain(cached_env)
    again, stats2 = _load(cached_env)
    assert stats2.pop("cache") == "hit"
    assert again == records and stats2 == stats
    [entry] = _entries(tmp_path)
    assert sorted(p.name for p in entry.iterdir()) == ["records.jsonl", "stats.json"]


def test_cache_records_share_prompt_text(cached_env):
    _load(cached_env)
    key = cache.key_of(cached_env, wildfeedback.EXTRACTOR_VERSION, OnInvalid.error, "wf")
    records = {r.id: r for r in cache.load(key)[0]}
    a, b = records["wf-c4-u3-dsat"], records["wf-c4-u5-sat"]
    assert a.prompt[0]["content"] is b.prompt[0]["content"]
    a.prompt[0]["content"] = "changed"  # the message dicts are still separate objects
    assert b.prompt[0]["content"] != "changed"


def test_modified_file_misses(cached_env):
    _load(cached_env)
    data = cached_env.read_bytes()
    changed = data.replace(b"Guten Morgen.", b"Guten Abend!!")  # same size
    assert len(changed) == len(data) and changed != data
    cached_env.write_bytes(changed)
    st = cached_env.stat()
    os.utime(cached_env, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    records, stats = _load(cached_env)
    assert stats["cache"] == "miss"
    assert "Guten Abend!!" in json.dumps(records, ensure_ascii=False)
    cached_env.write_bytes(data + b" ")  # size change
    assert _load(cached_env)[1]["cache"] == "miss"
    assert _load(cached_env)[1]["cache"] == "hit"


def test_stale_entries_are_removed(cached_env, tmp_path):
    _load(cached_env)
    _load(cached_env, name="other")  # another label: its own entry, kept
    cached_env.write_bytes(cached_env.read_bytes() + b"\n")
    assert _load(cached_env)[1]["cache"] == "miss"
    keys = [json.loads((e / "stats.json").read_text())["key"] for e in _entries(tmp_path)]
    assert sorted((k["label"], k["size"]) for k in keys) == sorted(
        [("other", FIXTURE.stat().st_size), ("wf", FIXTURE.stat().st_size + 1)])


def test_cache_key_has_label_and_on_invalid(cached_env, tmp_path):
    assert _load(cached_env)[1]["cache"] == "miss"
    assert _load(cached_env, name="other")[1]["cache"] == "miss"
    records, stats = _load(cached_env, on_invalid=OnInvalid.skip)
    assert stats["cache"] == "miss" and stats["skipped_rows"] == 0
    assert _load(cached_env, on_invalid=OnInvalid.skip)[1]["cache"] == "hit"
    assert len(_entries(tmp_path)) == 3


def test_damaged_cache_entry_is_a_miss_and_is_rebuilt(cached_env, tmp_path, caplog):
    first, _ = _load(cached_env)
    [entry] = _entries(tmp_path)
    (entry / "records.jsonl").write_text('{"id": "x"', encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="drift_exp.data.cache"):
        records, stats = _load(cached_env)
    assert stats["cache"] == "miss" and records == first and "damaged" in caplog.text
    assert _load(cached_env) == (first, {**stats, "cache": "hit"})
    (entry / "stats.json").unlink()  # an incomplete entry
    assert _load(cached_env)[1]["cache"] == "miss"


def test_cache_root_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("DRIFT_EXP_CACHE", str(tmp_path))
    assert cache.cache_root() == tmp_path
    monkeypatch.delenv("DRIFT_EXP_CACHE")
    assert cache.cache_root() == Path.home() / ".cache" / "drift_exp"


# --- memory ---------------------------------------------------------------------------------------------

def _synthetic(path: Path, n_bytes: int) -> None:
    """Unflagged conversations (no records: whatever memory is left is the reader's) of ~1 KB rows."""
    text = ("lorem ipsum dolor sit amet, " * 40)[:1000]
    with open(path, "w", encoding="utf-8") as f:
        f.write("[")
        size, conv = 0, 0
        while size < n_bytes:
            rows = [json.dumps({"UtterranceId": u, "TurnId": u // 2 + 1, "Role": ("User", "Agent")[u % 2],
                                "Content": f"{conv} {text}", "Satisfaction": False, "Disatisfaction": False})
                    for u in range(6)]
            chunk = ("," if conv else "") + ",".join(rows)
            f.write(chunk)
            size += len(chunk)
            conv += 1
        f.write("]")


def _peak(path: Path) -> int:
    tracemalloc.start()
    try:
        rows = stream.ArrayStream(path)
        records, stats = wildfeedback.extract(rows, path, "wf", False)
        assert records == [] and stats["conversations"] > 100
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_does_not_grow_with_the_file(tmp_path):
    small, large = tmp_path / "small.json", tmp_path / "large.json"
    _synthetic(small, 1_000_000)
    _synthetic(large, 6_000_000)
    p_small, p_large = _peak(small), _peak(large)
    assert p_large < 2_000_000, p_large  # json.load would hold ~3x the 6 MB file
    assert p_large < p_small * 1.5 + 200_000, (p_small, p_large)
