"""A cache of extracted records, so a rerun on the same 1.6 GB annotation file does not parse it again.

Key: the file's resolved absolute path, size, mtime_ns and inode, the extractor's version constant, the
FeedbackRecord fields, data.on_invalid and the source label. Any change to the file (size or mtime, or a new file
moved into place) is a different key, so a changed file is never served from the cache. An entry is a folder
`<cache_root>/records/<key hash>/` holding records.jsonl and stats.json (written last: an entry without it is
incomplete and ignored). Entries are built in a temporary folder and renamed into place, so readers never see
half an entry. Storing an entry removes the entries of older versions of the same file (same path,
label and on_invalid), so a file that keeps changing does not fill the disk.

Only files of at least MIN_BYTES are cached: below that, parsing takes well under a second and an entry per
small file (every test's temporary file) would only fill the disk.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import Any

from drift_exp.cachedir import cache_root, remove_dead_temps, temp_path
from drift_exp.errors import UserError
from drift_exp.records import FeedbackRecord, write_json, write_jsonl

log = logging.getLogger(__name__)

MIN_BYTES = 32 * 2**20


def key_of(path: Path, version: int, on_invalid: str, label: str) -> dict[str, Any]:
    """What an entry depends on (stored in the entry and compared on every read)."""
    path = Path(path).resolve()
    st = path.stat()
    return {"path": str(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns, "inode": st.st_ino, "version": version,
            "record_fields": [f.name for f in fields(FeedbackRecord)], "on_invalid": str(on_invalid),
            "label": label}


def folder_of(key: dict[str, Any]) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
    return cache_root() / "records" / digest


def load(key: dict[str, Any]) -> tuple[list[FeedbackRecord], dict[str, Any]] | None:
    """The cached records and stats for `key`, or None (absent, incomplete or damaged: a miss)."""
    folder = folder_of(key)
    try:
        meta = json.loads((folder / "stats.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        log.warning("ignoring the damaged record cache %s (%s)", folder, err)
        return None
    if meta.get("key") != key:
        return None
    try:
        records = read_records(folder / "records.jsonl")
    except (OSError, ValueError, TypeError) as err:
        log.warning("ignoring the damaged record cache %s (%s)", folder, err)
        return None
    if len(records) != meta.get("records"):
        log.warning("ignoring the record cache %s: %d records, expected %s", folder, len(records), meta.get("records"))
        return None
    return records, meta["stats"]


def read_records(path: Path) -> list[FeedbackRecord]:
    """records.jsonl -> FeedbackRecords, a line at a time (no second copy of the file in memory).

    Consecutive records of one conversation repeat their context; equal prompt texts are shared between
    neighbours, so the cached records take about as much memory as freshly extracted ones."""
    records = []
    prev: list[dict[str, str]] = []
    loads = json.loads
    with open(path, "rb") as f:
        for line in f:
            row = loads(line)
            prompt = row["prompt"]
            for j in range(min(len(prompt), len(prev))):
                if prompt[j]["content"] != prev[j]["content"]:
                    break
                prompt[j]["content"] = prev[j]["content"]
            prev = prompt
            records.append(FeedbackRecord(**row))
    return records


def store(key: dict[str, Any], records: list[FeedbackRecord], stats: dict[str, Any]) -> bool:
    """Write an entry for `key` (best effort: a full disk only costs the next run a parse)."""
    folder = folder_of(key)
    tmp = temp_path(folder)
    try:
        write_jsonl(tmp / "records.jsonl", (vars(r) for r in records), ascii_only=True)  # (faster to write)
        write_json(tmp / "stats.json", {"key": key, "records": len(records), "stats": stats})
        if folder.exists():  # an incomplete or stale entry under the same key
            shutil.rmtree(folder, ignore_errors=True)
        os.rename(tmp, folder)
        _remove_stale(key, folder)
    except (OSError, UserError) as err:
        shutil.rmtree(tmp, ignore_errors=True)
        if not (folder / "stats.json").exists():
            log.warning("could not write the record cache %s (%s)", folder, err)
            return False
    return True


def _remove_stale(key: dict[str, Any], keep: Path) -> None:
    """Remove the entries of earlier versions of the file `key` describes."""
    same = ("path", "label", "on_invalid")
    for entry in keep.parent.iterdir():
        if entry == keep or not entry.is_dir():
            continue
        try:
            old = json.loads((entry / "stats.json").read_text(encoding="utf-8"))["key"]
        except (OSError, ValueError, KeyError, TypeError):
            continue  # another process's entry in the making, or not ours to judge
        if all(old.get(k) == key[k] for k in same):
            log.info("removing the stale record cache %s", entry)
            shutil.rmtree(entry, ignore_errors=True)


def cached(path: Path, version: int, on_invalid: str, label: str,
           read: Callable[[], tuple[list[FeedbackRecord], dict[str, Any]]]
           ) -> tuple[list[FeedbackRecord], dict[str, Any]]:
    """`read()`'s records and stats, from the cache when an entry for this exact file exists. Adds
    stats["cache"] = "hit" | "miss" (nothing for files under MIN_BYTES, which are never cached)."""
    if Path(path).stat().st_size < MIN_BYTES:
        return read()
    key = key_of(path, version, on_invalid, label)
    remove_dead_temps(folder_of(key).parent)
    hit = load(key)
    if hit is not None:
        log.info("%s: %d records from the record cache %s", path, len(hit[0]), folder_of(key))
        return hit[0], {**hit[1], "cache": "hit"}
    log.info("%s: not in the record cache; reading it", path)
    records, stats = read()
    if key_of(path, version, on_invalid, label) != key:
        log.warning("%s changed while it was read; not caching its records", path)
    elif store(key, records, stats):
        log.info("%s: cached %d records in %s", path, len(records), folder_of(key))
    return records, {**stats, "cache": "miss"}
