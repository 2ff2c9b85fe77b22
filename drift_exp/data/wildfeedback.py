"""WildFeedback's per-turn SAT/DSAT annotation (`sat_dsat_annotation.json`) -> FeedbackRecords.

The file is one JSON array of flat utterances. A conversation starts wherever `UtterranceId`
restarts at 0; User and Agent rows alternate, User first. The SAT/DSAT flags on a User row
judge the Agent reply right before it. Field names keep the data set's own spellings.

Records produced (paper §4.1, Table 1):
- dsat: context before the judged reply, rejected = that reply, feedback = the dissatisfied turn
- sat:  context before the judged reply, chosen = that reply, feedback = the satisfied turn
- seed: a reply judged DSAT whose immediate revision (the next Agent reply) is judged SAT;
        rejected = the first reply, chosen = the revision, prompt = the context before the first
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from drift_exp.config import DataConfig, OnInvalid
from drift_exp.data.sources import SAMPLE_DIR, hub_file, local_or_hub
from drift_exp.errors import DataError
from drift_exp.records import FeedbackRecord, Message

ID, ROLE, CONTENT = "UtterranceId", "Role", "Content"
SAT, DSAT = "Satisfaction", "Disatisfaction"
ROLES = {"User": "user", "Agent": "assistant"}
ANNOTATION_FILE = "sat_dsat_annotation.json"


class _Invalid(Exception):
    """A malformed row; carries the reason used to count skips."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def split_conversations(rows: Iterable[dict[str, Any]]) -> Iterator[tuple[int, list[dict[str, Any]]]]:
    """Group flat utterances into conversations: yield (index of the first row, rows)."""
    start, conv = 0, []
    for i, row in enumerate(rows):
        if isinstance(row, dict) and row.get(ID) == 0 and conv:
            yield start, conv
            start, conv = i, []
        conv.append(row)
    if conv:
        yield start, conv


def _check_row(row: Any, expected_id: int) -> tuple[str, str, bool, bool]:
    """Validate one utterance; return (role, content, sat, dsat) or raise _Invalid naming the field."""
    if not isinstance(row, dict):
        raise _Invalid("not_an_object", f"expected a JSON object, got {type(row).__name__}")
    for key in (ID, ROLE, CONTENT, SAT, DSAT):
        if key not in row:
            raise _Invalid("missing_field", f"field '{key}': missing")
    uid = row[ID]
    if not isinstance(uid, int) or isinstance(uid, bool):
        raise _Invalid("wrong_type", f"field '{ID}': expected an integer, got {uid!r}")
    if uid != expected_id:
        raise _Invalid("bad_utterance_id", f"field '{ID}': expected {expected_id} (ids count up from 0), got {uid}")
    role = row[ROLE]
    if role not in ROLES:
        raise _Invalid("unknown_role", f"field '{ROLE}': expected 'User' or 'Agent', got {role!r}")
    want = "User" if uid % 2 == 0 else "Agent"
    if role != want:
        raise _Invalid("roles_not_alternating",
                       f"field '{ROLE}': expected '{want}' at UtterranceId {uid} (User and Agent alternate), "
                       f"got {role!r}")
    content = row[CONTENT]
    if content is None:
        content = ""
    if not isinstance(content, str):
        raise _Invalid("wrong_type", f"field '{CONTENT}': expected a string, got {type(content).__name__}")
    flags = []
    for key in (SAT, DSAT):
        value = row[key]
        if not isinstance(value, bool):
            raise _Invalid("wrong_type", f"field '{key}': expected true or false, got {value!r}")
        flags.append(value)
    if role == "Agent" and any(flags):
        raise _Invalid("flag_on_agent_row",
                       f"field '{SAT if flags[0] else DSAT}': flags belong on User rows (they judge the reply "
                       "before them), found one on an Agent row")
    return ROLES[role], content, flags[0], flags[1]


def conversation_records(conv_index: int, rows: list[dict[str, Any]], source: str,
                         skipped: Counter) -> list[FeedbackRecord]:
    """Records of one validated conversation; judgements that cannot be used are counted in `skipped`."""
    messages: list[Message] = []
    sat: list[bool] = []
    dsat: list[bool] = []
    for row in rows:
        role, content, s, d = _check_row(row, len(messages))
        messages.append({"role": role, "content": content})
        sat.append(s)
        dsat.append(d)

    def record(kind: str, reply: int, **texts: str) -> FeedbackRecord:
        return FeedbackRecord(
            id=f"{source}-c{conv_index}-u{reply}-{kind}",
            prompt=[dict(m) for m in messages[:reply]],
            meta={"source": source, "kind": kind, "conversation": conv_index, "utterance": reply,
                  "turn": reply // 2 + 1},
            **texts,
        )

    out: list[FeedbackRecord] = []
    for j in range(len(messages)):
        if not (sat[j] or dsat[j]):
            continue
        if j == 0:
            skipped["flag_without_reply"] += 1  # the opening user turn judges nothing
            continue
        if sat[j] and dsat[j]:
            skipped["contradictory_flags"] += 1
            continue
        reply = j - 1
        if not messages[reply]["content"].strip():
            skipped["empty_reply"] += 1
            continue
        feedback = messages[j]["content"]
        if dsat[j]:
            out.append(record("dsat", reply, rejected=messages[reply]["content"], feedback=feedback))
            revision = reply + 2  # the agent's next reply, judged by the user turn after it
            if (revision + 1 < len(messages) and sat[revision + 1] and not dsat[revision + 1]
                    and messages[revision]["content"].strip()):
                out.append(record("seed", reply, rejected=messages[reply]["content"],
                                  chosen=messages[revision]["content"], feedback=feedback))
        else:
            out.append(record("sat", reply, chosen=messages[reply]["content"], feedback=feedback))
    return out


def extract(rows: Iterable[dict[str, Any]], path: Path | str, source: str,
            skip_invalid: bool) -> tuple[list[FeedbackRecord], dict[str, Any]]:
    """All records of an annotation file's rows, with the counts of paper Table 1."""
    records: list[FeedbackRecord] = []
    skipped: Counter = Counter()
    n_conv = n_rows = dsat_conv = sat_conv = 0
    for n_conv, (start, conv) in enumerate(split_conversations(rows), start=1):
        n_rows += len(conv)
        try:
            recs = conversation_records(n_conv - 1, conv, source, skipped)
        except _Invalid as bad:
            row = start + _bad_row_offset(conv)
            if not skip_invalid:
                raise DataError(f"{path}: utterance {row} (conversation {n_conv - 1}): {bad}; "
                                "set data.on_invalid=skip to skip such conversations") from None
            skipped[f"conversation_with_{bad.reason}"] += 1
            continue
        records.extend(recs)
        kinds = {r.kind for r in recs}
        dsat_conv += "dsat" in kinds
        sat_conv += "sat" in kinds
    if n_rows == 0:
        raise DataError(f"{path}: no utterances (an empty array)")
    counts = Counter(r.kind for r in records)
    stats = {
        "source": str(path),
        "utterances": n_rows,
        "conversations": n_conv,
        "dsat": counts["dsat"],
        "sat": counts["sat"],
        "seed_pairs": counts["seed"],
        "dsat_conversations": dsat_conv,
        "sat_conversations": sat_conv,
        "skipped": dict(sorted(skipped.items())),
    }
    return records, stats


def _bad_row_offset(conv: list[dict[str, Any]]) -> int:
    """Offset of the first row in `conv` that fails validation (for the error message)."""
    for i, row in enumerate(conv):
        try:
            _check_row(row, i)
        except _Invalid:
            return i
    return 0


def annotation_path(cfg: DataConfig) -> Path:
    """The annotation file: bundled sample, a local file or folder holding it, or the hub's copy."""
    if cfg.source == "sample":
        return SAMPLE_DIR / ANNOTATION_FILE
    where = local_or_hub(cfg.source)
    if isinstance(where, str):
        return hub_file(where, ANNOTATION_FILE, cfg.revision)
    if where.is_dir():
        where = where / ANNOTATION_FILE
        if not where.exists():
            raise DataError(f"data.source={cfg.source!r}: folder has neither {ANNOTATION_FILE} "
                            "nor the authors' dsat_data.jsonl")
    return where


def load(cfg: DataConfig) -> tuple[list[FeedbackRecord], dict[str, Any]]:
    """Read an annotation file into records and its Table 1 counts."""
    path = annotation_path(cfg)
    try:
        with open(path, encoding="utf-8") as f:
            rows = json.load(f)
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: not valid JSON at line {err.lineno}, column {err.colno} ({err.msg})") from None
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not UTF-8 at byte {err.start} ({err.reason})") from None
    if not isinstance(rows, list):
        raise DataError(f"{path}: expected one JSON array of utterances, got a {type(rows).__name__}")
    return extract(rows, path, cfg.name, skip_invalid=cfg.on_invalid == OnInvalid.skip)
