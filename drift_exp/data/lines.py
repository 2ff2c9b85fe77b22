"""JSON Lines, one row a line, for the readers of JSON Lines files (UltraFeedback, the released files, the run
directory's own files): lines over MAX_LINE are reported and read past without holding them (`read_lines`), and
each line is checked before and while it is parsed (`parse_line`: not UTF-8, nesting of guard.MAX_DEPTH levels,
integers past Python's 4300-digit limit, a key given twice in one object, lone surrogate escapes made U+FFFD).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any, BinaryIO

from drift_exp.data import guard
from drift_exp.data.stream import Invalid

MAX_LINE = 64 << 20  # bytes in one JSON Lines row; real rows are under 1 MB


def read_lines(f: BinaryIO) -> Iterator[tuple[int, bytes | None]]:
    """(line number, the line) for each line of a binary file; None for a line over MAX_LINE bytes, which is
    read past in pieces and never held whole (memory stays bounded on a file that is one huge line)."""
    lineno = 0
    while line := f.readline(MAX_LINE + 1):
        lineno += 1
        if len(line) <= MAX_LINE or line.endswith(b"\n"):
            yield lineno, line
            continue
        while (rest := f.readline(1 << 20)) and not rest.endswith(b"\n"):
            pass
        yield lineno, None


def too_long(lineno: int) -> Invalid:
    return Invalid("line_too_long", f"over {MAX_LINE:,} bytes in one line (no row of these data sets is this "
                   "long; not read)")


class _DuplicateKey(Exception):
    pass


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKey(key)
            seen.add(key)
    return obj


_KEY = re.compile(rb'"((?:[^"\\]|\\.){0,200})"\s*:')
_LONG_DIGITS = re.compile(rb"[0-9]{4301}")


def _key_before(raw: bytes, pos: int) -> str:
    """The last object key written before byte `pos` of a JSON text ('' when none): names a field in messages."""
    keys = list(_KEY.finditer(raw, max(0, pos - 100_000), pos))
    return keys[-1].group(1).decode("utf-8", "replace") if keys else ""


def parse_line(raw: bytes) -> tuple[Any, int]:
    """One JSON text (a line of a JSON Lines file) -> (value, lone surrogate escapes replaced by U+FFFD).
    Raises Invalid for bytes that are not UTF-8 (invalid_utf8), nesting of guard.MAX_DEPTH levels or more
    (too_deep), an integer past Python's 4300-digit limit (number_too_long) and a key given twice in one object
    (duplicate_key), each naming the field; json.JSONDecodeError is left to the caller (its messages differ)."""
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise Invalid("invalid_utf8", f"expected UTF-8 text, got the byte 0x{raw[err.start]:02x} at byte "
                      f"{err.start} of the line") from None
    if raw.count(b"[") + raw.count(b"{") >= guard.MAX_DEPTH:  # only then can it be that deep: measure it
        depth, key = guard.line_depth_field(raw)
        if depth >= guard.MAX_DEPTH:
            raise Invalid("too_deep", f"field '{key}': nested {guard.MAX_DEPTH} or more levels deep (arrays/"
                          "objects); no row of this data set nests like that (a damaged or hostile file?)")
    fixed, n = guard.repair_text(raw)
    try:
        return json.loads(fixed, object_pairs_hook=_no_duplicate_keys), n
    except _DuplicateKey as err:
        raise Invalid("duplicate_key", f"field '{err.args[0]}': given twice in one object (which one is meant?)") \
            from None
    except json.JSONDecodeError:
        raise
    except RecursionError:  # deeper than the stack allows although under MAX_DEPTH (a deep call stack)
        raise Invalid("too_deep", "nested too deeply to parse") from None
    except ValueError:  # Python's limit on integer digits
        m = _LONG_DIGITS.search(raw)
        key = _key_before(raw, m.start()) if m else ""
        raise Invalid("number_too_long", f"field '{key}': an integer of more than 4300 digits (Python's limit for "
                      "reading one; no data set field holds such a number)") from None
