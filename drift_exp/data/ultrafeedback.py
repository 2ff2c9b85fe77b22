"""UltraFeedback -> FeedbackRecords of kind 'pref' (a prompt with a chosen and a rejected completion).

- ultrafeedback_binarized (HuggingFaceH4/ultrafeedback_binarized): rows {prompt, prompt_id, chosen, rejected,
  messages, score_chosen, score_rejected}; chosen/rejected are message lists ending with the assistant's reply,
  and the messages before it (the same in both) are the record's prompt.
- ultrafeedback_raw (openbmb/UltraFeedback): rows {source, instruction, models, completions[4], ...}; binarised
  here as H4 did: chosen = the completion with the highest overall_score (the first on ties, like max()),
  rejected = a random one of the rest, drawn with an RNG seeded from (seed, row index) alone. Completions whose
  overall_score is None, NaN/infinite or not a number, or whose response is empty, are not eligible.

data.source: 'sample' (the bundled file), a local .jsonl / .json (array or JSONL) / .parquet file, a local
folder of split files, or a hub id (read with `datasets`, only when named). Record n (0-based row) has id
'<data.name>-<n>'; in JSONL files blank lines are not rows. A .json array is streamed (drift_exp.data.stream).

Bad input: with data.on_invalid=error a bad row is a DataError naming the file, the row (line N / row N) and the
field; with skip it is counted in stats["skipped"] by reason. Besides the schema checks below: not_utf8,
invalid_json, too_deep (nested 500+ levels), number_too_long (over 4300 digits), duplicate_key (a key twice in
one object), chosen_equals_rejected (the same reply on both sides), unknown_role (a message role other than
system, user or assistant), bad_prompt (the prompt before the reply does not end with the user's turn, e.g. only
an assistant turn), and in a .json array the damage the parser cannot step over (truncated_file, invalid_json,
...: the rows after it are not read). Kept and counted in stats["warnings"]: lone_surrogates_replaced (\\udc00
without its pair, kept as U+FFFD), long_integers_read_as_text (a .json array's integers beyond 64 bits). A prompt,
reply or response that shows nothing (white space or zero-width format characters only) counts as empty. An
empty, white-space-only, compressed or UTF-16/32 file is an error naming what it is.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import random
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from drift_exp.config import DataConfig, OnInvalid
from drift_exp.data import lines, stream
from drift_exp.data.sources import SAMPLE_DIR, local_or_hub
from drift_exp.data.stream import Invalid as _Invalid
from drift_exp.errors import DataError
from drift_exp.records import FeedbackRecord, Message

log = logging.getLogger(__name__)

SAMPLE_FILES = {"ultrafeedback_binarized": "ultrafeedback_binarized.jsonl",
                "ultrafeedback_raw": "ultrafeedback_raw.jsonl"}
BINARIZED_FIELDS = ("prompt", "prompt_id", "chosen", "rejected", "score_chosen", "score_rejected")
RAW_FIELDS = ("source", "instruction", "completions")
ROLES = ("system", "user", "assistant")
RAW_COUNTS = ("nan_scores", "none_scores", "non_numeric_scores", "empty_responses", "top_score_ties")


# --- reading rows ---------------------------------------------------------------------------------------

def _jsonl_rows(path: Path, repaired: Counter) -> Iterator[tuple[str, Any]]:
    """(label, object or _Invalid) per non-blank line; bad lines are reported, not raised."""
    with open(path, "rb") as f:
        f.seek(stream.check_head(path, f.read(4096), path.stat().st_size, f))
        for lineno, raw in lines.read_lines(f):
            label = f"line {lineno}"
            if raw is None:
                yield label, lines.too_long(lineno)
                continue
            if not raw.strip():
                continue
            try:
                row, n = lines.parse_line(raw)
            except _Invalid as err:
                if err.reason == "invalid_utf8":  # this reader's name for it, kept
                    err = _Invalid("not_utf8", f"not UTF-8: {err}")
                yield label, err
                continue
            except json.JSONDecodeError as err:
                yield label, _Invalid("invalid_json", f"not valid JSON ({err.msg} at column {err.colno})")
                continue
            if n:
                repaired["lone_surrogates_replaced"] += n
            yield label, row


def _json_array_rows(path: Path, repaired: Counter, skip: bool) -> Iterator[tuple[str, Any]]:
    """Rows of a JSON array file, streamed (memory bounded; see drift_exp.data.stream). Damage the parser cannot
    step over ends the rows with an _Invalid for the row it hit. With `skip`, bytes that are not UTF-8 are
    replaced (and counted), as the annotation reader does."""
    rows = stream.ArrayStream(path, repair_utf8=skip, what="rows")
    n = 0
    try:
        for row in rows:
            yield f"row {n}", (row[stream.DAMAGED] if isinstance(row, dict) and stream.DAMAGED in row else row)
            n += 1
    except stream.StreamDamage as dmg:
        yield f"row {n}", _Invalid(dmg.reason, f"{dmg.detail} ({dmg.where}); the {dmg.unread} bytes after it were "
                                   "not read")
    finally:
        repaired["lone_surrogates_replaced"] += rows.surrogates
        repaired["long_integers_read_as_text"] += rows.long_ints
        repaired["invalid_utf8_replaced"] += rows.replaced


def _parquet_rows(path: Path) -> Iterator[tuple[str, Any]]:
    import pyarrow.parquet as pq

    try:
        batches = pq.ParquetFile(path).iter_batches()
    except Exception as err:  # not a parquet file, truncated, ...
        raise DataError(f"{path}: cannot read as parquet ({type(err).__name__}: {err})") from None
    i = 0
    for batch in batches:
        for row in batch.to_pylist():
            yield f"row {i}", row
            i += 1


def _datasets_rows(name: str, split: str, revision: str | None) -> Iterator[tuple[str, Any]]:
    """Rows of a hub data set (or a local folder of split files) read with `datasets`."""
    import datasets

    try:
        ds = datasets.load_dataset(name, split=split, revision=revision)
    except Exception as err:  # offline, unknown split, gated, ...: say which and how to fix it
        raise DataError(f"data.source={name!r}: could not load split {split!r} with datasets "
                        f"({type(err).__name__}: {err}); check data.split or pass a local file") from None
    for i, row in enumerate(ds):
        yield f"row {i}", row


def _file_rows(path: Path, repaired: Counter, skip: bool) -> Iterator[tuple[str, Any]]:
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return _parquet_rows(path)
    with open(path, "rb") as f:  # compressed, UTF-16, empty...: named before the suffix is looked at
        stream.check_head(path, f.read(4096), path.stat().st_size, f)
        f.seek(0)
        head = f.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n") or stream._first_data(f)
    if suffix == ".json":
        return _json_array_rows(path, repaired, skip) if head.startswith(b"[") else _jsonl_rows(path, repaired)
    if suffix == ".jsonl":
        return _jsonl_rows(path, repaired)
    raise DataError(f"{path}: expected a .jsonl, .json or .parquet file")


def _source(cfg: DataConfig, fmt: str, repaired: Counter, skip: bool) -> tuple[str, Iterator[tuple[str, Any]]]:
    """Where the rows come from (for messages and stats) and the rows themselves."""
    if cfg.source == "sample":
        path = SAMPLE_DIR / SAMPLE_FILES[fmt]
        return str(path), _jsonl_rows(path, repaired)
    where = local_or_hub(cfg.source)
    if isinstance(where, str):
        return where, _datasets_rows(where, cfg.split, cfg.revision)
    if where.is_dir():
        return str(where), _datasets_rows(str(where), cfg.split, None)
    return str(where), _file_rows(where, repaired, skip)


# --- checking fields ------------------------------------------------------------------------------------

def _require(row: dict[str, Any], keys: tuple[str, ...], prefix: str = "") -> None:
    for key in keys:
        if key not in row:
            raise _Invalid("missing_field", f"field '{prefix}{key}': missing")


def _text(value: Any, key: str) -> str:
    if not isinstance(value, str):
        raise _Invalid("wrong_type", f"field '{key}': expected a string, got {type(value).__name__}")
    return value


def _score(value: Any, key: str) -> float:
    """A finite number (binarized scores); None and NaN are their own skip reason."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        raise _Invalid("nan_score", f"field '{key}': expected a number, got {value!r}")
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isinf(value):
        raise _Invalid("wrong_type", f"field '{key}': expected a finite number, got {value!r}")
    return float(value)


def _messages(value: Any, key: str) -> list[Message]:
    if not isinstance(value, list) or not all(
        isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in value
    ):
        raise _Invalid("not_a_message_list",
                       f"field '{key}': expected a list of {{'role': str, 'content': str}} messages")
    for j, m in enumerate(value):
        if m["role"] not in ROLES:
            raise _Invalid("unknown_role", f"field '{key}[{j}].role': expected one of {list(ROLES)}, got "
                           f"{m['role'][:40]!r}")
    if not value or value[-1]["role"] != "assistant":
        raise _Invalid("no_assistant_reply", f"field '{key}': expected the last message to be the assistant's reply")
    return [{"role": m["role"], "content": m["content"]} for m in value]


# --- building records -----------------------------------------------------------------------------------

def _binarized(row: dict[str, Any], n: int, name: str, seed: int, counts: Counter) -> FeedbackRecord:
    _require(row, BINARIZED_FIELDS)
    prompt_text = _text(row["prompt"], "prompt")
    prompt_id = _text(row["prompt_id"], "prompt_id")
    if stream.blank(prompt_text):
        raise _Invalid("empty_prompt", "field 'prompt': expected a non-empty prompt text")
    chosen = _messages(row["chosen"], "chosen")
    rejected = _messages(row["rejected"], "rejected")
    if chosen[:-1] != rejected[:-1]:
        raise _Invalid("prompts_differ", "fields 'chosen' and 'rejected': expected the same messages before the "
                       "final assistant reply, they differ")
    if not chosen[:-1] or stream.blank(chosen[-2]["content"]):
        raise _Invalid("empty_prompt", "field 'chosen': expected a non-empty user prompt before the reply")
    if chosen[-2]["role"] != "user":
        raise _Invalid("bad_prompt", f"field 'chosen[{len(chosen) - 2}].role': expected the prompt to end with the "
                       f"user's turn, got one from {chosen[-2]['role']!r}")
    for key, msgs in (("chosen", chosen), ("rejected", rejected)):
        if stream.blank(msgs[-1]["content"]):
            raise _Invalid("empty_reply", f"field '{key}': the assistant reply is empty")
    if chosen[-1]["content"].strip() == rejected[-1]["content"].strip():
        raise _Invalid("chosen_equals_rejected", f"field 'rejected[{len(rejected) - 1}].content': the same reply "
                       "as chosen (a pair that prefers a reply to itself teaches nothing)")
    meta = {"source": name, "kind": "pref", "row": n, "prompt_id": prompt_id,
            "score_chosen": _score(row["score_chosen"], "score_chosen"),
            "score_rejected": _score(row["score_rejected"], "score_rejected")}
    return FeedbackRecord(id=f"{name}-{n}", prompt=chosen[:-1], chosen=chosen[-1]["content"],
                          rejected=rejected[-1]["content"], feedback=None, meta=meta)


def _raw(row: dict[str, Any], n: int, name: str, seed: int, counts: Counter) -> FeedbackRecord:
    _require(row, RAW_FIELDS)
    instruction = _text(row["instruction"], "instruction")
    subset = _text(row["source"], "source")
    if stream.blank(instruction):
        raise _Invalid("empty_prompt", "field 'instruction': expected a non-empty prompt text")
    comps = row["completions"]
    if not isinstance(comps, list):
        raise _Invalid("wrong_type", f"field 'completions': expected a list, got {type(comps).__name__}")
    if len(comps) < 2:
        raise _Invalid("fewer_than_2_completions", f"field 'completions': expected at least 2, got {len(comps)}")
    seen: Counter = Counter()  # merged into `counts` only once the whole row has been read
    eligible: list[tuple[int, float]] = []
    for i, comp in enumerate(comps):
        key = f"completions[{i}]"
        if not isinstance(comp, dict):
            raise _Invalid("wrong_type", f"field '{key}': expected an object, got {type(comp).__name__}")
        _require(comp, ("response", "overall_score"), prefix=f"{key}.")
        response = "" if comp["response"] is None else _text(comp["response"], f"{key}.response")
        score = comp["overall_score"]
        if score is None:
            seen["none_scores"] += 1
        elif isinstance(score, bool) or not isinstance(score, int | float):
            seen["non_numeric_scores"] += 1
        elif not math.isfinite(score):
            seen["nan_scores"] += 1  # NaN (or infinite)
        elif stream.blank(response):
            seen["empty_responses"] += 1
        else:
            eligible.append((i, float(score)))
    counts.update(seen)
    unscored = seen["none_scores"] + seen["non_numeric_scores"] + seen["nan_scores"]
    if unscored == len(comps):
        raise _Invalid("no_scored_completions",
                       "field 'completions[*].overall_score': no completion has a numeric score (None/NaN/other)")
    if len(eligible) < 2:
        raise _Invalid("fewer_than_2_completions",
                       f"field 'completions': expected at least 2 with a numeric overall_score and a non-empty "
                       f"response, got {len(eligible)} ({unscored} unscored, {seen['empty_responses']} empty)")
    best = max(eligible, key=lambda e: e[1])
    if sum(s == best[1] for _, s in eligible) > 1:
        counts["top_score_ties"] += 1
    worse = random.Random(f"ultrafeedback-{seed}-{n}").choice([e for e in eligible if e[0] != best[0]])
    if comps[worse[0]]["response"].strip() == comps[best[0]]["response"].strip():
        raise _Invalid("chosen_equals_rejected", f"field 'completions[{worse[0]}].response': the same text as "
                       f"completions[{best[0]}] (chosen); a pair that prefers a reply to itself teaches nothing")

    def model(i: int) -> str | None:
        return comps[i].get("model") if isinstance(comps[i].get("model"), str) else None

    meta = {"source": name, "kind": "pref", "row": n,
            "prompt_id": hashlib.sha256(instruction.encode("utf-8")).hexdigest(),
            "score_chosen": best[1], "score_rejected": worse[1], "subset": subset,
            "completion_chosen": best[0], "completion_rejected": worse[0],
            "model_chosen": model(best[0]), "model_rejected": model(worse[0])}
    return FeedbackRecord(id=f"{name}-{n}", prompt=[{"role": "user", "content": instruction}],
                          chosen=comps[best[0]]["response"], rejected=comps[worse[0]]["response"],
                          feedback=None, meta=meta)


BUILDERS = {"ultrafeedback_binarized": _binarized, "ultrafeedback_raw": _raw}


def load(cfg: DataConfig, fmt: str, seed: int) -> tuple[list[FeedbackRecord], dict[str, Any]]:
    """Read the configured UltraFeedback source into 'pref' records and its counts (plain JSON)."""
    if fmt not in BUILDERS:
        raise DataError(f"data.format={fmt!r} is not an UltraFeedback format ({sorted(BUILDERS)})")
    build = BUILDERS[fmt]
    repaired: Counter = Counter()  # kept with a repair (lone surrogates, long integers)
    skip = cfg.on_invalid == OnInvalid.skip
    where, rows = _source(cfg, fmt, repaired, skip)
    records: list[FeedbackRecord] = []
    skipped: Counter = Counter()
    counts: Counter = Counter()
    n_rows = 0
    for n, (label, row) in enumerate(rows):
        n_rows = n + 1
        try:
            if isinstance(row, _Invalid):
                raise row
            if not isinstance(row, dict):
                raise _Invalid("not_an_object", f"expected a JSON object, got {type(row).__name__}")
            records.append(build(row, n, cfg.name, seed, counts))
        except _Invalid as bad:
            if not skip:
                raise DataError(f"{where}: {label}: {bad}; set data.on_invalid=skip to skip such rows") from None
            skipped[bad.reason] += 1
    if n_rows == 0:
        raise DataError(f"{where}: empty file (no rows)")
    if not records:
        raise DataError(f"{where}: none of the {n_rows} rows is usable (skipped: {dict(sorted(skipped.items()))})")
    stats: dict[str, Any] = {"source": where, "format": fmt, "rows": n_rows, "prompts": len(records),
                             "skipped": dict(sorted(skipped.items()))}
    if fmt == "ultrafeedback_raw":
        stats.update({key: counts[key] for key in RAW_COUNTS})
    if +repaired:
        stats["warnings"] = dict(sorted((+repaired).items()))
        log.warning("!!! %s: kept rows with repairs: %s", where, stats["warnings"])
    return records, stats
