"""Stream a top-level JSON array (WildFeedback's 1.6 GB `sat_dsat_annotation.json`) one element at a time.

`json.load` of the real file needs ~5.8 GB; `ijson.items(f, "item")` holds one row at a time. The C backend
(yajl2_c) reads ~250 MB/s; without it ijson falls back to a slower backend (a logged warning), and without
ijson at all the file is read with `json.load` (a louder warning: memory then grows with the file).

Damage the parser cannot step over (a truncated file, invalid JSON, bytes that are not UTF-8, data after the
closing bracket) ends the stream with `StreamDamage`, which says what happened, where (byte offset) and whether
the rows read so far are a complete prefix of the array. The caller decides whether that is an error.
With `repair_utf8=True` bytes that are not UTF-8 are replaced by U+FFFD (counted in `replaced`) instead.

Also here, shared by the readers: the checks every data file gets before parsing (`check_head`: empty, a Git-LFS
pointer, a UTF-8 byte-order mark), the per-row error `Invalid` (its reason is the skip counter's key), and the
message helpers `json_type`, `did_you_mean` and `clean_text`.
"""

from __future__ import annotations

import codecs
import difflib
import json
import logging
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

from drift_exp.errors import DataError

log = logging.getLogger(__name__)

BOM = codecs.BOM_UTF8
LFS_POINTER = b"version https://git-lfs.github.com/spec/"

try:
    import ijson
except ImportError:  # the dependency is declared; an old environment may still lack it
    ijson = None


class StreamDamage(Exception):
    """The array could not be read to its end. `complete`: every row yielded so far was whole and the array
    was closed (only data after it was wrong), so nothing before the damage is in doubt."""

    def __init__(self, reason: str, detail: str, byte: int, complete: bool = False, exact: bool = True,
                 unread: int = 0):
        super().__init__(detail)
        self.reason, self.detail, self.byte, self.complete, self.unread = reason, detail, byte, complete, unread
        self.where = f"byte {byte}" if exact else f"at or before byte {byte}"  # exact: the damage starts there


def check_head(path: Path, head: bytes, size: int) -> int:
    """Reject files that hold no data (empty, a Git-LFS pointer); return how many BOM bytes to skip."""
    if size == 0 or not head.strip():
        raise DataError(f"{path}: the file is empty ({size} bytes); expected data (an interrupted download?)")
    if head.startswith(LFS_POINTER):
        raise DataError(f"{path}: this is a Git-LFS pointer ({size} bytes), not the data; fetch the real file "
                        "(`git lfs pull` in the clone, or download it from the hub)")
    if head.startswith(BOM):
        log.info("%s: skipping the UTF-8 byte-order mark at the start of the file", path)
        return len(BOM)
    return 0


def _count_replace(err: UnicodeDecodeError) -> tuple[str, int]:
    _Reader.replaced += 1
    return "\ufffd", err.end


codecs.register_error("drift_exp_count_replace", _count_replace)


class _Reader:
    """A binary file for ijson that remembers where it is (for error messages) and can repair bad UTF-8."""

    replaced = 0  # bumped by the codec error handler; read before/after a stream (single-threaded use)

    def __init__(self, f: BinaryIO, offset: int, repair_utf8: bool):
        self.f, self.pos, self.prev, self.last = f, offset, b"", b""
        self.decoder = codecs.getincrementaldecoder("utf-8")("drift_exp_count_replace") if repair_utf8 else None

    def read(self, n: int = -1) -> bytes:
        data = self.f.read(n)
        self.prev, self.last = self.last, data
        self.pos += len(data)
        dec = self.decoder
        if dec is not None and not (data.isascii() and not dec.getstate()[0]):
            data = dec.decode(data, final=not data).encode("utf-8")
        return data

    def utf8_error_at(self) -> int:
        """Byte offset of the first invalid UTF-8 byte in the last two chunks read (or the current position)."""
        window = self.prev + self.last
        try:
            window.decode("utf-8")
        except UnicodeDecodeError as err:
            return self.pos - len(window) + err.start
        return self.pos


def _classify(err: Exception) -> tuple[str, str, bool]:
    """(reason, one-line detail, complete) of an ijson/decoder error."""
    text = str(err)
    first = text.splitlines()[0].strip() if text.strip() else type(err).__name__
    if "premature EOF" in text or "Incomplete JSON content" in text:
        return "truncated_file", "the file ends before the array is closed (truncated?)", False
    if isinstance(err, UnicodeDecodeError) or "UTF8" in text or "codec can't decode" in text:
        return "invalid_utf8", "bytes that are not UTF-8", False
    if "trailing garbage" in text or "Additional data found" in text:
        return "trailing_garbage", "data after the closing ']' of the array", True
    lines = [ln.strip() for ln in text.splitlines()[1:] if ln.strip() and "(right here)" not in ln]
    near = f" near {lines[0][:80]!r}" if lines else ""
    return "invalid_json", f"not valid JSON ({first.removeprefix('parse error: ')}{near})", False


class ArrayStream:
    """Iterate over the elements of the top-level JSON array in `path`; see the module docstring."""

    def __init__(self, path: Path, repair_utf8: bool = False, backend: str | None = None):
        self.path, self.repair_utf8 = Path(path), repair_utf8
        self.size = self.path.stat().st_size
        self.replaced = 0  # invalid UTF-8 sequences replaced (repair_utf8 only)
        self.backend = backend

    def _ijson(self):
        if ijson is None:
            return None
        if self.backend:
            return ijson.get_backend(self.backend)
        if ijson.backend != "yajl2_c":
            log.warning("ijson's C backend (yajl2_c) is not available; using the slower %r backend", ijson.backend)
        return ijson

    def __iter__(self) -> Iterator[Any]:
        with open(self.path, "rb") as f:
            head = f.read(4096)
            skip = check_head(self.path, head, self.size)
            start = head[skip:].lstrip()[:1]
            if start not in (b"[", b""):  # b"": over 4 KB of leading white space; the parser will tell
                what = {b"{": "an object", b'"': "a string"}.get(start, f"{start.decode('latin-1')!r}")
                hint = " (one object per line is JSON Lines, not this format)" if start == b"{" else ""
                raise DataError(f"{self.path}: expected one JSON array of utterances ('[' ...), got {what}{hint}")
            f.seek(skip)
            backend = self._ijson()
            before = _Reader.replaced
            try:
                if backend is None:
                    log.warning("ijson is not installed: reading %s whole with json.load (memory grows with the "
                                "file, to several times its size); `pip install ijson`", self.path)
                    yield from self._json_load(f)
                    return
                reader = _Reader(f, skip, self.repair_utf8)
                try:
                    yield from backend.items(reader, "item", use_float=True)
                except (ijson.JSONError, UnicodeDecodeError) as err:
                    reason, detail, complete = _classify(err)
                    byte = {"invalid_utf8": reader.utf8_error_at(), "truncated_file": self.size}.get(reason, reader.pos)
                    exact = reason in ("invalid_utf8", "truncated_file")
                    raise StreamDamage(reason, detail, byte, complete, exact, max(self.size - byte, 0)) from None
            finally:
                self.replaced = _Reader.replaced - before

    def _json_load(self, f: BinaryIO) -> Iterable[Any]:
        data = f.read()
        try:
            text = data.decode("utf-8", "drift_exp_count_replace" if self.repair_utf8 else "strict")
        except UnicodeDecodeError as err:
            raise StreamDamage("invalid_utf8", "bytes that are not UTF-8", err.start) from None
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as err:
            raise StreamDamage("invalid_json", f"not valid JSON ({err.msg})", err.pos) from None
        return rows


class Invalid(Exception):
    """A malformed row or line; `reason` is the key it is counted under when skipped."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def json_type(value: Any) -> str:
    """How a value looks in JSON, for messages: the string 'true', 1.0, null, an object, an array."""
    if isinstance(value, str):
        return f"the string {value[:40]!r}"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int | float):
        return repr(value)
    return {dict: "an object", list: "an array"}.get(type(value), type(value).__name__)


def did_you_mean(missing: str, present: Iterable[str], known: Iterable[str] = ()) -> str:
    """' (found 'X': did you mean 'missing'?)' when a key of the row looks like a misspelling of `missing`."""
    known = set(known)
    for key in present:
        if not isinstance(key, str) or key in known:
            continue
        if key.lower() == missing.lower() or difflib.SequenceMatcher(None, key, missing).ratio() >= 0.8:
            return f" (found {key!r}: did you mean {missing!r}?)"
    return ""


def clean_text(text: str) -> str:
    """`text` made writable as UTF-8: lone UTF-16 surrogates (a JSON escape like \\ud83d without its pair)
    become '?', which is what ijson's C backend makes of them, so both readers agree."""
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace").decode("utf-8")
    return text
