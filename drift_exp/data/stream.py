"""Stream a top-level JSON array (WildFeedback's 1.6 GB `sat_dsat_annotation.json`) one element at a time.

`json.load` of the real file needs ~5.8 GB; `ijson.items(f, "item")` holds one row at a time. The C backend
(yajl2_c) reads ~250 MB/s; without it ijson falls back to a slower backend (a logged warning), and without
ijson at all the file is read with `json.load` (a louder warning: memory then grows with the file).

Damage the parser cannot step over (a truncated file, invalid JSON, bytes that are not UTF-8, data after the
closing bracket) ends the stream with `StreamDamage`, which says what happened, where (byte offset) and whether
the rows read so far are a complete prefix of the array. The caller decides whether that is an error.
With `repair_utf8=True` bytes that are not UTF-8 are replaced by U+FFFD (counted in `replaced`) instead.
Every chunk passes through drift_exp.data.guard first: lone surrogate escapes become U+FFFD (counted), integers
beyond 64 bits become text (counted), and nesting is cut at guard.MAX_DEPTH so memory stays bounded; a row that
deep is yielded as a stand-in holding an Invalid under DAMAGED (its reader raises or counts it).
Not detected here: a key given twice in one object (the last value wins, as with json.load; checking it through
ijson's map_type cost +60 % parse time). A single huge value (a 1 GB string) is held whole by the parser.

Also here, shared by the readers: the checks every data file gets before parsing (`check_head`: empty or white
space only, compressed, UTF-16/32, a Git-LFS pointer, a UTF-8 byte-order mark), the per-row error `Invalid` (its
reason is the skip counter's key), and the message helpers `json_type`, `did_you_mean` and `clean_text`. The JSON
Lines readers' helpers are in drift_exp.data.lines.
"""

from __future__ import annotations

import codecs
import difflib
import json
import logging
import unicodedata
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

from drift_exp.data import guard
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


MAGIC = {b"\x1f\x8b": ("gzip-compressed", "gunzip -k"), b"BZh": ("bzip2-compressed", "bunzip2 -k"),
         b"\xfd7zXZ\x00": ("xz-compressed", "unxz -k"), b"\x28\xb5\x2f\xfd": ("zstd-compressed", "unzstd"),
         b"PK\x03\x04": ("a zip archive", "unzip"), b"PAR1": ("a parquet file", None)}
WIDE_BOMS = {b"\xff\xfe\x00\x00": "UTF-32 LE", b"\x00\x00\xfe\xff": "UTF-32 BE", b"\xff\xfe": "UTF-16 LE",
             b"\xfe\xff": "UTF-16 BE"}


def _first_data(f: BinaryIO) -> bytes:
    """The next bytes after any amount of white space (b'' at the end of the file)."""
    while chunk := f.read(1 << 20):
        if chunk.strip():
            return chunk.lstrip()
    return b""


def check_head(path: Path, head: bytes, size: int, f: BinaryIO | None = None) -> int:
    """Reject files that hold no data (empty, only white space, a Git-LFS pointer) or that are not UTF-8 text
    (compressed, an archive, UTF-16/32): each named, with what to do. Return how many BOM bytes to skip.
    `f` (the open file): to look past a head of white space."""
    if size == 0:
        raise DataError(f"{path}: the file is empty (0 bytes); expected data (an interrupted download?)")
    for magic, (what, tool) in MAGIC.items():
        if head.startswith(magic):
            fix = f"decompress it first (`{tool} {path}`) and read the result" if tool else \
                "name it with the .parquet suffix (UltraFeedback) or convert it"
            raise DataError(f"{path}: the file is {what}, not JSON text; {fix}")
    for bom, what in WIDE_BOMS.items():
        if head.startswith(bom):
            raise DataError(f"{path}: the file is {what} text (it starts with that byte-order mark), expected "
                            f"UTF-8; convert it (`iconv -f {what.replace(' ', '')} -t UTF-8`)")
    if b"\x00" in head[:64] and head[:1] in (b"\x00", b"[", b"{") and head.count(b"\x00") * 3 >= min(len(head), 64):
        raise DataError(f"{path}: the file looks like UTF-16/32 text without a byte-order mark (NUL bytes between "
                        "the characters), expected UTF-8; convert it with iconv")
    if not head.strip() and (f is None or not _first_data(f)):
        raise DataError(f"{path}: the file is empty: {size} bytes of white space only; expected data")
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
    """A binary file for ijson that remembers where it is (for error messages), can repair bad UTF-8, and passes
    everything through the guard (lone surrogates, depth, long integers: drift_exp.data.guard)."""

    replaced = 0  # bumped by the codec error handler; read before/after a stream (single-threaded use)

    def __init__(self, f: BinaryIO, offset: int, repair_utf8: bool):
        self.f, self.pos, self.prev, self.last = f, offset, b"", b""
        self.decoder = codecs.getincrementaldecoder("utf-8")("drift_exp_count_replace") if repair_utf8 else None
        self.guard = guard.StreamGuard()

    def read(self, n: int = -1) -> bytes:
        if n == 0:  # ijson's probe for bytes or text
            return b""
        while True:
            data = self.f.read(n)
            self.prev, self.last = self.last, data
            self.pos += len(data)
            dec = self.decoder
            if dec is not None and not (data.isascii() and not dec.getstate()[0]):
                data = dec.decode(data, final=not data).encode("utf-8")
            out = self.guard.feed(data, final=not self.last)
            if out or not self.last:  # all of a short read may be held back: read on, never a false end
                return out

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
    if "overflow" in text:
        return "number_out_of_range", f"a number out of range ({first.removeprefix('parse error: ')})", False
    if "trailing garbage" in text or "Additional data found" in text:
        return "trailing_garbage", "data after the closing ']' of the array", True
    lines = [ln.strip() for ln in text.splitlines()[1:] if ln.strip() and "(right here)" not in ln]
    near = f" near {lines[0][:80]!r}" if lines else ""
    return "invalid_json", f"not valid JSON ({first.removeprefix('parse error: ')}{near})", False


class ArrayStream:
    """Iterate over the elements of the top-level JSON array in `path`; see the module docstring. After the
    iteration: `replaced` (invalid UTF-8 sequences), `surrogates` (lone surrogate escapes made U+FFFD),
    `long_ints` (integers beyond 64 bits read as their digits), `too_deep` (rows refused for their depth)."""

    def __init__(self, path: Path, repair_utf8: bool = False, backend: str | None = None, what: str = "utterances",
                 keep: tuple[str, ...] = ()):
        # keep: scalar fields a refused row's stand-in keeps (the annotation reader's UtterranceId, which tells
        # where a conversation starts)
        self.path, self.repair_utf8, self.what, self.keep = Path(path), repair_utf8, what, keep
        self.size = self.path.stat().st_size
        self.replaced = 0  # invalid UTF-8 sequences replaced (repair_utf8 only)
        self.surrogates = self.long_ints = self.too_deep = 0
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
            skip = check_head(self.path, head, self.size, f)
            f.seek(skip)
            head = f.read(4096).lstrip() or _first_data(f)
            start = head[:1]
            if start != b"[":
                what = {b"{": "an object", b'"': "a string"}.get(start, f"{start.decode('latin-1')!r}")
                hint = " (one object per line is JSON Lines, not this format)" if start == b"{" else ""
                raise DataError(f"{self.path}: expected one JSON array of {self.what} ('[' ...), got {what}{hint}")
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
                g = reader.guard
                try:
                    for row in backend.items(reader, "item", use_float=True):
                        g.rows_done += 1
                        if g.deep_seen:
                            row = self._depth_checked(row)
                        yield row
                except (ijson.JSONError, UnicodeDecodeError) as err:
                    reason, detail, complete = _classify(err)
                    byte = {"invalid_utf8": reader.utf8_error_at(), "truncated_file": self.size}.get(reason, reader.pos)
                    exact = reason in ("invalid_utf8", "truncated_file")
                    raise StreamDamage(reason, detail, byte, complete, exact, max(self.size - byte, 0)) from None
                finally:
                    self.surrogates, self.long_ints = g.surrogates, g.long_ints
            finally:
                self.replaced = _Reader.replaced - before

    def _depth_checked(self, row: Any) -> Any:
        """The row, or (nested MAX_DEPTH levels or more) its scalar fields with the reason it is refused."""
        key = guard.deep_field(row)
        if key is None:
            return row
        self.too_deep += 1
        where = f"field '{key}'" if key else "the row itself"
        bad = Invalid("too_deep", f"{where}: nested {guard.MAX_DEPTH} or more levels deep (arrays/objects); no "
                      "row of this data set nests like that (a damaged or hostile file?)")
        kept = {k: row[k] for k in self.keep if k in row and not isinstance(row[k], dict | list)} \
            if isinstance(row, dict) else {}
        return {**kept, DAMAGED: bad}

    def _json_load(self, f: BinaryIO) -> Iterable[Any]:
        data = f.read()
        try:
            text = data.decode("utf-8", "drift_exp_count_replace" if self.repair_utf8 else "strict")
        except UnicodeDecodeError as err:
            raise StreamDamage("invalid_utf8", "bytes that are not UTF-8", err.start) from None
        fixed, self.surrogates = guard.repair_text(text.encode("utf-8"))
        try:
            rows = json.loads(fixed)
        except json.JSONDecodeError as err:
            raise StreamDamage("invalid_json", f"not valid JSON ({err.msg})", err.pos) from None
        except RecursionError:
            raise StreamDamage("too_deep", "values nested too deeply for json.load (install ijson)", 0) from None
        except ValueError as err:  # an integer past Python's digit limit
            raise StreamDamage("number_out_of_range", f"a number out of range ({err})", 0) from None
        return rows


DAMAGED = "\x00refused"  # key of a refused row's stand-in: its Invalid (the reader raises or counts it)


def report_repairs(rows: ArrayStream, path: Path | str, stats: dict[str, Any]) -> None:
    """Count in stats["warnings"] what the stream repaired and kept (each also a logged warning)."""
    for key, n, what in (("invalid_utf8_replaced", rows.replaced, "invalid UTF-8 sequences replaced with U+FFFD"),
                         ("lone_surrogates_replaced", rows.surrogates, "lone UTF-16 surrogate escapes (\\udc00 "
                          "without its pair) replaced with U+FFFD"),
                         ("long_integers_read_as_text", rows.long_ints, "integers beyond 64 bits read as text "
                          "(their digits between the first and the last)")):
        if n:
            warnings = stats.setdefault("warnings", {})
            warnings[key] = n
            stats["warnings"] = dict(sorted(warnings.items()))
            log.warning("!!! %s: %d %s", path, n, what)


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


def blank(text: str) -> bool:
    """True when `text` shows nothing: empty, white space, or only Unicode format characters besides (a zero-width
    space, a word joiner, a byte-order mark, a soft hyphen: category Cf)."""
    rest = text.strip()
    if not rest:
        return True
    if rest.isascii():
        return False
    return all(ch.isspace() or unicodedata.category(ch) == "Cf" for ch in rest)


def clean_text(text: str) -> str:
    """`text` made writable as UTF-8: a lone UTF-16 surrogate left in it becomes U+FFFD (the readers rewrite the
    escapes before parsing, so this is a safety net for rows built elsewhere)."""
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "".join("\ufffd" if "\ud800" <= ch <= "\udfff" else ch for ch in text)
    return text
