"""The DRIFT authors' released files (cacayaya/DRIFT `data/`) -> FeedbackRecords.

- `dsat_data.jsonl`: {"prompt": [messages], "rejected": [{"role": "assistant", ...}],
  "user_preference": {"role": "user", "content": ...}}  (read exactly as gen-drift.py reads it)
- `sat_data.jsonl`: assumed the same shape with "chosen" in place of "rejected"
  (the file is an LFS pointer in the repo; the shape is not confirmed)
- `seed-data/train.jsonl`: DPO pairs {"prompt", "chosen", "rejected"}, message lists
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from drift_exp.config import DataConfig
from drift_exp.data.sources import local_or_hub
from drift_exp.errors import DataError
from drift_exp.records import FeedbackRecord, Message, iter_jsonl

FILES = {"dsat": "dsat_data.jsonl", "sat": "sat_data.jsonl", "seed": "seed-data/train.jsonl"}


def _messages(path: Path, lineno: int, key: str, value: Any) -> list[Message]:
    if not isinstance(value, list) or not all(
        isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in value
    ):
        raise DataError(f"{path}: line {lineno}: field '{key}': expected a list of "
                        "{'role': str, 'content': str} messages")
    return [{"role": m["role"], "content": m["content"]} for m in value]


def _reply(path: Path, lineno: int, key: str, value: Any) -> str:
    """The assistant text of a 'chosen'/'rejected' field: a string or a message list ending in the reply."""
    if isinstance(value, str):
        return value
    msgs = _messages(path, lineno, key, value)
    if not msgs or msgs[-1]["role"] != "assistant":
        raise DataError(f"{path}: line {lineno}: field '{key}': expected the last message to be the assistant's")
    return msgs[-1]["content"]


def _require(path: Path, lineno: int, obj: dict, key: str) -> Any:
    if key not in obj:
        raise DataError(f"{path}: line {lineno}: field '{key}': missing")
    return obj[key]


def read_released(folder: Path, source: str) -> tuple[list[FeedbackRecord], dict[str, Any]]:
    """Read whichever of the three files exist in `folder` (dsat_data.jsonl is required)."""
    if not (folder / FILES["dsat"]).exists():
        raise DataError(f"{folder}: expected the authors' {FILES['dsat']} in this folder")
    records: list[FeedbackRecord] = []
    for kind, name in FILES.items():
        path = folder / name
        if not path.exists():
            continue
        for lineno, obj in iter_jsonl(path):
            prompt = _messages(path, lineno, "prompt", _require(path, lineno, obj, "prompt"))
            rec = FeedbackRecord(id=f"{source}-{kind}-l{lineno}", prompt=prompt,
                                 meta={"source": source, "kind": kind, "file": name, "line": lineno})
            if kind in ("dsat", "seed"):
                rec.rejected = _reply(path, lineno, "rejected", _require(path, lineno, obj, "rejected"))
            if kind in ("sat", "seed"):
                rec.chosen = _reply(path, lineno, "chosen", _require(path, lineno, obj, "chosen"))
            if kind == "dsat":
                pref = _require(path, lineno, obj, "user_preference")
                if not (isinstance(pref, dict) and isinstance(pref.get("content"), str)):
                    raise DataError(f"{path}: line {lineno}: field 'user_preference': expected "
                                    "{'role': 'user', 'content': str}")
                rec.feedback = pref["content"]
            records.append(rec)
    counts = Counter(r.kind for r in records)
    stats = {
        "source": str(folder),
        # The released files carry no conversation ids, so conversation-level counts are unknown.
        "conversations": None,
        "dsat": counts["dsat"],
        "sat": counts["sat"],
        "seed_pairs": counts["seed"],
        "dsat_conversations": None,
        "sat_conversations": None,
        "skipped": {},
    }
    return records, stats


def load(cfg: DataConfig) -> tuple[list[FeedbackRecord], dict[str, Any]]:
    """Read the released files from the local folder data.source."""
    where = local_or_hub(cfg.source)
    if isinstance(where, str) or not where.is_dir():
        raise DataError(f"data.source={cfg.source!r}: the released format needs a local folder holding "
                        f"{FILES['dsat']}")
    return read_released(where, cfg.name)
