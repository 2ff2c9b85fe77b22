"""The DRIFT authors' released files (cacayaya/DRIFT `data/`) -> FeedbackRecords.

- `dsat_data.jsonl`: {"prompt": [messages], "rejected": [{"role": "assistant", ...}],
  "user_preference": {"role": "user", "content": ...}}  (read exactly as gen-drift.py reads it)
- `sat_data.jsonl`: assumed the same shape with "chosen" in place of "rejected"
  (the file is an LFS pointer in the repo; the shape is not confirmed)
- `seed-data/train.jsonl`: DPO pairs {"prompt", "chosen", "rejected"}, message lists

A prompt is a non-empty list of {"role": "system"|"user"|"assistant", "content": str} ending with the user's
turn; a reply ("chosen"/"rejected") is a string or a message list whose last message is the assistant's.

Bad input. With data.on_invalid=error (default) the first bad line stops the run with a DataError naming the
file, the line number, the field (e.g. 'prompt[2].role') and what was expected. With skip, the line is skipped
and counted in stats["skipped"] by reason; stats["skipped_rows"] counts the lines dropped. JSON Lines resume at
the next line, so even damage is skippable: invalid_utf8, invalid_json, truncated_line (the last line, cut
short), not_an_object, missing_field, misspelled_field ("did you mean"), wrong_type, unknown_role (e.g. ShareGPT's
'human'/'gpt'), bad_prompt (empty, or not ending with a user turn), bad_reply (a list not ending with an
assistant message), too_deep (nested 500+ levels), number_too_long (an integer of over 4300 digits),
duplicate_key (a key twice in one object). Counted in both modes (the judgement is unusable, the file is not
wrong): empty_reply (a blank chosen/rejected reply), empty_prompt (the prompt's last user turn is only white
space), empty_feedback (a blank user_preference).
Tolerated, counted in stats["warnings"]: null content (read as ""), duplicate_line (an exact repeat, kept),
lone_surrogates_replaced (an escape like \\udc00 without its pair, kept as U+FFFD).
Errors in both modes: an empty or white-space-only file, a compressed file or UTF-16/32 text (each named), a
Git-LFS pointer (what a clone without `git lfs pull` holds), a folder without dsat_data.jsonl, and (skip mode) a
file whose every line was skipped.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from drift_exp.config import DataConfig, OnInvalid
from drift_exp.data import lines, stream
from drift_exp.data.sources import local_or_hub
from drift_exp.data.stream import Invalid, json_type
from drift_exp.errors import DataError
from drift_exp.records import FeedbackRecord, Message

log = logging.getLogger(__name__)

FILES = {"dsat": "dsat_data.jsonl", "sat": "sat_data.jsonl", "seed": "seed-data/train.jsonl"}
KEYS = ("prompt", "chosen", "rejected", "user_preference")
ROLES = ("system", "user", "assistant")
COUNTED = ("empty_reply", "empty_prompt", "empty_feedback")  # unusable judgements: counted in both modes
ROLE_ALIASES = {"human": "user", "gpt": "assistant", "bot": "assistant", "model": "assistant"}


def _lines(path: Path, repaired: Counter) -> Iterator[tuple[int, dict[str, Any] | Invalid, int]]:
    """(line number, object or Invalid, hash of the line) for each non-blank line; lone surrogate escapes
    replaced are counted in `repaired`."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        f.seek(stream.check_head(path, f.read(4096), size, f))
        for lineno, raw in lines.read_lines(f):
            if raw is None:
                yield lineno, lines.too_long(lineno), 0
                continue
            if not raw.strip():
                continue
            try:
                obj, n = lines.parse_line(raw)
            except Invalid as err:
                yield lineno, err, 0
                continue
            except json.JSONDecodeError as err:
                cut = not raw.endswith(b"\n")
                what = f"invalid JSON ({err.msg.removesuffix(' at')} at column {err.colno})"
                yield lineno, Invalid("truncated_line" if cut else "invalid_json", f"expected one JSON object, got "
                                      f"{what}{'; the file ends inside this line (truncated?)' if cut else ''}"), 0
                continue
            if n:
                repaired["lone_surrogates_replaced"] += n
            yield lineno, obj if isinstance(obj, dict) else Invalid(
                "not_an_object", f"expected one JSON object per line, got {json_type(obj)}"), hash(raw.strip())


def _get(obj: dict, key: str, where: str, known: tuple[str, ...]) -> Any:
    if key not in obj:
        hint = stream.did_you_mean(key, obj, known)
        raise Invalid("misspelled_field" if hint else "missing_field", f"field '{where}': missing{hint}")
    return obj[key]


def _content(value: Any, where: str, warnings: Counter) -> str:
    if value is None:
        warnings["null_content"] += 1
        return ""
    if not isinstance(value, str):
        raise Invalid("wrong_type", f"field '{where}': expected a string, got {json_type(value)}")
    return stream.clean_text(value)


def _messages(key: str, value: Any, warnings: Counter) -> list[Message]:
    if not isinstance(value, list):
        raise Invalid("wrong_type", f"field '{key}': expected a list of {{'role': str, 'content': str}} messages, "
                      f"got {json_type(value)}")
    out = []
    for j, m in enumerate(value):
        where = f"{key}[{j}]"
        if not isinstance(m, dict):
            raise Invalid("wrong_type", f"field '{where}': expected a {{'role', 'content'}} object, got {json_type(m)}")
        role = _get(m, "role", f"{where}.role", ())
        if role not in ROLES:
            alias = ROLE_ALIASES.get(str(role).lower(), str(role).lower() if str(role).lower() in ROLES else None)
            hint = f" (did you mean {alias!r}?)" if alias else ""
            raise Invalid("unknown_role", f"field '{where}.role': expected one of {list(ROLES)}, "
                          f"got {json_type(role)}{hint}")
        out.append({"role": role, "content": _content(_get(m, "content", f"{where}.content", ()),
                                                      f"{where}.content", warnings)})
    return out


def _reply(obj: dict, key: str, warnings: Counter) -> str:
    """The assistant text of a 'chosen'/'rejected' field: a string or a message list ending in the reply."""
    value = _get(obj, key, key, KEYS)
    if isinstance(value, str):
        text = stream.clean_text(value)
    else:
        msgs = _messages(key, value, warnings)
        if not msgs or msgs[-1]["role"] != "assistant":
            raise Invalid("bad_reply", f"field '{key}': expected the last message to be the assistant's, got "
                          + (f"one from {msgs[-1]['role']!r}" if msgs else "an empty list"))
        text = msgs[-1]["content"]
    if stream.blank(text):
        raise Invalid("empty_reply", f"field '{key}': expected the reply's text, got an empty one")
    return text


def _record(kind: str, name: str, lineno: int, obj: dict, source: str, warnings: Counter) -> FeedbackRecord:
    prompt = _messages("prompt", _get(obj, "prompt", "prompt", KEYS), warnings)
    if not prompt or prompt[-1]["role"] != "user":
        raise Invalid("bad_prompt", "field 'prompt': expected the context to end with the user's turn, got "
                      + (f"a last message from {prompt[-1]['role']!r}" if prompt else "an empty list"))
    if stream.blank(prompt[-1]["content"]):
        raise Invalid("empty_prompt", f"field 'prompt[{len(prompt) - 1}].content': expected the user's turn, got "
                      "only white space")
    rec = FeedbackRecord(id=f"{source}-{kind}-l{lineno}", prompt=prompt,
                         meta={"source": source, "kind": kind, "file": name, "line": lineno})
    if kind in ("dsat", "seed"):
        rec.rejected = _reply(obj, "rejected", warnings)
    if kind in ("sat", "seed"):
        rec.chosen = _reply(obj, "chosen", warnings)
    if kind == "dsat":
        pref = _get(obj, "user_preference", "user_preference", KEYS)
        if not isinstance(pref, dict):
            raise Invalid("wrong_type", "field 'user_preference': expected {'role': 'user', 'content': str}, "
                          f"got {json_type(pref)}")
        rec.feedback = _content(_get(pref, "content", "user_preference.content", ()), "user_preference.content",
                                warnings)
        if stream.blank(rec.feedback):
            raise Invalid("empty_feedback", "field 'user_preference.content': expected the user's follow-up, got "
                          "only white space")
    return rec


def read_released(folder: Path, source: str,
                  skip_invalid: bool = False) -> tuple[list[FeedbackRecord], dict[str, Any]]:
    """Read whichever of the three files exist in `folder` (dsat_data.jsonl is required)."""
    if not (folder / FILES["dsat"]).exists():
        raise DataError(f"{folder}: expected the authors' {FILES['dsat']} in this folder")
    records: list[FeedbackRecord] = []
    skipped: Counter = Counter()
    warnings: Counter = Counter()
    n_skipped = 0
    for kind, name in FILES.items():
        path = folder / name
        if not path.exists():
            continue
        seen: set[int] = set()
        here: Counter = Counter()
        kept = 0
        for lineno, obj, digest in _lines(path, warnings):
            try:
                if isinstance(obj, Invalid):
                    raise obj
                records.append(_record(kind, name, lineno, obj, source, warnings))
                kept += 1
            except Invalid as err:
                if not skip_invalid and err.reason not in COUNTED:
                    raise DataError(f"{path}: line {lineno}: {err}; set data.on_invalid=skip to skip such "
                                    "lines") from None
                here[err.reason] += 1
                continue
            if digest in seen:
                warnings["duplicate_line"] += 1
            seen.add(digest)
        dropped = sum(here.values())
        if dropped:
            log.warning("%s: skipped %d of %d lines: %s", path, dropped, kept + dropped, dict(sorted(here.items())))
        if skip_invalid and kept == 0 and dropped:
            raise DataError(f"{path}: all {dropped} lines were skipped ({dict(sorted(here.items()))})")
        skipped.update(here)
        n_skipped += dropped
    counts = Counter(r.kind for r in records)
    stats: dict[str, Any] = {
        "source": str(folder),
        # The released files carry no conversation ids, so conversation-level counts are unknown.
        "conversations": None,
        "dsat": counts["dsat"],
        "sat": counts["sat"],
        "seed_pairs": counts["seed"],
        "dsat_conversations": None,
        "sat_conversations": None,
        "skipped": dict(sorted(skipped.items())),
    }
    if skip_invalid:
        stats["skipped_rows"] = n_skipped
    if warnings:
        stats["warnings"] = dict(sorted(warnings.items()))
        log.warning("%s: kept lines with tolerated problems: %s", folder, stats["warnings"])
    return records, stats


def load(cfg: DataConfig) -> tuple[list[FeedbackRecord], dict[str, Any]]:
    """Read the released files from the local folder data.source."""
    where = local_or_hub(cfg.source)
    if isinstance(where, str) or not where.is_dir():
        raise DataError(f"data.source={cfg.source!r}: the released format needs a local folder holding "
                        f"{FILES['dsat']}")
    return read_released(where, cfg.name, skip_invalid=cfg.on_invalid == OnInvalid.skip)
