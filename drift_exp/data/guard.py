"""Repairs and bounds applied to JSON text before a parser sees it (the streaming reader and the line readers).

- Lone UTF-16 surrogate escapes (`"\\udc00"`, valid JSON but not text): rewritten to `\\ufffd` (U+FFFD) and
  counted. The escape has the same length, so byte offsets in later messages stay right. Without this, ijson's
  C backend turns a lone high surrogate into '?' silently and stops the whole stream on a lone low one.
- Nesting deeper than MAX_DEPTH levels: ijson keeps a path prefix string per level, so memory grows with the
  square of the depth (100 000 nested arrays in one 400 KB row: tens of GB). The streaming guard replaces the
  value that would go deeper by `0` and blanks the rest of it with spaces (the same length again), so the
  parser never holds more than MAX_DEPTH levels; the reader then refuses that row, naming the field (too_deep).
- Integers the C parser cannot hold (beyond 64 bits: it stops with "integer overflow") are turned into JSON
  strings of their digits (same length: the first and last character become quotes) and counted; a field that
  needs a number then names itself as the wrong type.

The streaming guard is cheap on ordinary data (~0.16 CPU s per 100 MB, a third of ijson's parse): per 64 KB chunk
one translate pass marks openers and digits (the openers counted, the digits searched for 19-digit runs), one
regex search looks for surrogate escapes (all at C speed), and it keeps an upper bound on the depth, which drops
back to 1 + (openers in the chunk) whenever a row ended in the chunk (the caller sets `rows_done`). Only when that bound
could pass MAX_DEPTH, or a 19-digit run appears, does it scan token by token in Python, from the chunk where a
row last ended (its lowest depth was 1). Where strings start is not tracked on the fast path: the scan tries
both readings of that chunk and keeps the one JSON's grammar allows outside strings.
"""

from __future__ import annotations

import re
from typing import Any

MAX_DEPTH = 500  # nesting of one row/line (an object is 1); the data sets' rows nest at most ~4
HOLD = 11  # bytes held back between chunks: a surrogate pair escape is 12 bytes
NUM_HOLD = 64  # a number split by the chunk boundary is held back whole up to this length
_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
_LOW = re.compile(rb"\\u[dD][c-fC-F][0-9a-fA-F]{2}")
# What JSON allows outside strings between tokens: white space, punctuation, true/false/null and (the rest of a
# long number cut by a chunk boundary) number characters.
_GAP = re.compile(rb"[\s,:truefalsnE0-9.+-]*")
_TOKEN = re.compile(rb'"|[\[{]+|[\]}]+|-?[0-9][0-9.eE+-]*')
_STRUCT = re.compile(rb'["\[\]{}:]')
_NUMBER_CHARS = frozenset(b"0123456789+-.eE")
# One pass over a chunk answers both fast-path questions: digits -> '0' (a run of 19 is a long integer's mark),
# openers '[' and '{' -> '[' (counted), the rest -> ' '.
_MARKS = bytes(48 if 48 <= b <= 57 else 91 if b in (91, 123) else 32 for b in range(256))
_LONG_RUN = b"0" * 19
INT64 = (-(2 ** 63), 2 ** 63 - 1)


def _backslashes_before(buf: bytes | bytearray, i: int, lo: int) -> int:
    """How many backslashes directly precede buf[i], not looking below lo."""
    k = i
    while k > lo and buf[k - 1] == 92:
        k -= 1
    return i - k


def fix_surrogates(buf: bytearray, start: int, end: int, lo: int = 0) -> tuple[int, int]:
    """Rewrite lone surrogate escapes that start in buf[start:end] to \\ufffd, in place (an escape may reach past
    `end`: buf holds at least 11 bytes more unless it is the end of the text). `lo`: the first byte that is not
    the second half of an escape begun earlier. Returns (count, where the next scan must start: after a pair or
    a rewrite that reaches past `end`)."""
    n, pos, resume = 0, start, end
    while True:
        m = _SURROGATE.search(buf, pos)
        if m is None or m.start() >= end:
            return n, resume
        p = m.start()
        if p < lo or _backslashes_before(buf, p, lo) & 1:  # '\\ud800': an escaped backslash, then plain text
            pos = p + 1
            continue
        if buf[p + 3] in b"89abAB" and _LOW.match(buf, p + 6):
            pos = p + 12  # a proper pair
            resume = max(end, pos)
            continue
        buf[p:p + 6] = b"\\ufffd"
        n += 1
        pos = p + 6
        resume = max(end, pos)


def repair_text(raw: bytes) -> tuple[bytes, int]:
    """A whole JSON text (one line) with its lone surrogate escapes rewritten; (text, how many)."""
    if b"\\u" not in raw or not _SURROGATE.search(raw):
        return raw, 0
    buf = bytearray(raw)
    n, _ = fix_surrogates(buf, 0, len(buf))
    return bytes(buf), n


class _Scan:
    """Exact tokenizer state at a chunk boundary."""

    __slots__ = ("in_str", "esc", "depth", "min_depth", "blank_to", "open_int")

    def __init__(self, in_str: bool = False, esc: bool = False, depth: int = 0):
        self.in_str, self.esc, self.depth, self.min_depth = in_str, esc, depth, depth
        self.blank_to: int | None = None  # while blanking a too-deep value: the depth that ends it
        self.open_int = False  # a long integer turned into a string continues into this chunk


class StreamGuard:
    """Feed it the file's bytes chunk by chunk (`feed`); it returns them repaired, held back by a few bytes."""

    def __init__(self) -> None:
        self.carry = bytearray()
        self.resume = 0  # where the surrogate scan starts in the next buffer (after a pair it already passed)
        self.surrogates = 0  # lone surrogate escapes rewritten
        self.long_ints = 0  # integers beyond 64 bits turned into strings
        self.too_deep = 0  # values cut at MAX_DEPTH
        self.deep_seen = False  # some row reached MAX_DEPTH: the reader checks row depths from then on
        self.rows_done = 0  # rows the parser has produced (set by the reader; tells where the depth was 1)
        self._rows_seen = 0
        self.st = _Scan()  # exact while `known` (strings) and `held` is empty (depth)
        self.known = True  # st.in_str is the string state at the boundary (not tracked on the fast path)
        self.bound = 0  # an upper bound of the depth at the chunk boundary (exact while `held` is empty)
        # Chunks given since the depth was last known exactly, each with the string state at its start, and the
        # depth at the first one's start (None: a row ended in it, so its lowest depth was 1).
        self.held: list[tuple[bytes, bool | None, bool]] = []
        self.held_depth: int | None = 0
        self.held_bytes = 0
        self.last_opens = 0

    def feed(self, data: bytes, final: bool) -> bytes:
        buf = self.carry + data
        cut = len(buf) if final else max(0, len(buf) - HOLD)
        if not final:  # keep a number whole (its length decides how it is read); of a longer one, keep the end
            k = 0
            while k < NUM_HOLD and cut - k > 0 and buf[cut - k - 1] in _NUMBER_CHARS:
                k += 1
            cut -= k if k < NUM_HOLD else 1
        if self.resume < cut:
            n, self.resume = fix_surrogates(buf, self.resume, cut, 1 if self.st.esc else 0)
            self.surrogates += n
        seg = buf[:cut]
        self.carry = buf[cut:]
        self.resume = max(0, self.resume - cut)
        return self._depth_and_numbers(seg) if seg else b""

    def _depth_and_numbers(self, seg: bytearray) -> bytes:
        """`seg` checked (and, on the slow path, rewritten); returns it as bytes."""
        self._settle_previous()
        marks = seg.translate(_MARKS)
        opens = marks.count(b"[")
        st = self.st
        if self.bound + opens >= MAX_DEPTH + 1 or st.open_int or st.blank_to is not None:
            self._exact_depth()
            self._scan(seg, absolute=True)
            self.bound = self.st.depth
            self.last_opens = opens
            return bytes(seg)
        long_run = _LONG_RUN in marks  # 19 digits in a row, in a string or not
        if long_run:
            if not self.known:
                self._exact_depth()  # where strings are, from the held chunks
                st = self.st
        in_str = st.in_str if self.known else None
        esc, held = st.esc, bytes(seg)  # (held as read: a rescan must see the numbers the rewrite turns to text)
        out = held  # the same bytes unless long integers are rewritten below (one copy on the common path)
        if self.known and long_run:  # rewrite the integers too long (outside strings)
            depth = st.depth
            self._scan(seg, absolute=False)
            st.depth = depth
            out = bytes(seg)
        else:
            self.known = False  # (not tracked on the fast path: found again from the grammar when needed)
            st.esc = bool(_backslashes_before(seg, len(seg), 1 if esc else 0) & 1) if seg.endswith(b"\\") else False
        if not self.held:
            self.held_depth = self.bound
        self.held.append((held, in_str, esc))
        self.held_bytes += len(seg)
        self.bound += opens
        if self.held_bytes > 4 << 20:  # one long row: settle the depth now so the held bytes stay few
            self._exact_depth()
        self.last_opens = opens
        return out

    def _settle_previous(self) -> None:
        """A row ended in the chunk given last: the depth was 1 there, so it is at most 1 + its openers now."""
        if self.rows_done == self._rows_seen:
            return
        self._rows_seen = self.rows_done
        if self.held:
            self.held = self.held[-1:]
            self.held_bytes, self.held_depth = len(self.held[0][0]), None
            self.bound = min(self.bound, 1 + self.last_opens)

    def _exact_depth(self) -> None:
        """Rescan the held chunks so the depth (and the string state) at the boundary is exact again. Where the
        first one started inside or outside a string is not tracked on the fast path: both are tried, and JSON's
        grammar outside strings (only white space, punctuation, numbers, true/false/null) rules one out."""
        if not self.held:
            return
        _, in_str, esc = self.held[0]
        live, tries = self.st, []
        for start in ((in_str,) if in_str is not None else (False, True)):
            self.st = st = _Scan(start, esc, self.held_depth or 0)
            ok = True
            for i, (seg, _, _) in enumerate(self.held):
                ok = self._scan(bytearray(seg), absolute=False, rewrite=False, check=in_str is None)
                if not ok:
                    break
                if i == 0 and self.held_depth is None:
                    st.depth += 1 - st.min_depth  # its lowest point was depth 1 (between two rows)
            tries.append((ok, st.depth, st))
        # Both readings valid (text made only of numbers and true/false/null): take the deeper one, to be safe,
        # and leave the string state unknown (long integers are then left to the parser).
        self.st = max(tries, key=lambda t: (t[0], t[1]))[2]
        self.st.open_int = live.open_int  # a long integer rewritten at the end of the last chunk goes on
        self.known = sum(t[0] for t in tries) == 1 or in_str is not None
        self.held, self.held_bytes, self.bound = [], 0, self.st.depth

    # -- the exact tokenizer (slow path) ------------------------------------------------------------------------
    def _scan(self, seg: bytearray, absolute: bool, rewrite: bool = True, check: bool = False) -> bool:
        """Walk `seg` token by token from self.st: track strings and depth; when `absolute` (the depth is known),
        cut values that go past MAX_DEPTH; with `rewrite`, turn too long integers into strings. With `check`,
        stop and return False at a byte outside strings that JSON does not allow there."""
        st, end = self.st, len(seg)
        i = lo = 1 if st.esc else 0
        st.esc = False
        blank_from = 0 if st.blank_to is not None else None
        if st.open_int:  # close the string a long integer became (the hold keeps its last digit here)
            j = 0
            while j < end and seg[j] in _NUMBER_CHARS:
                j += 1
            if 0 < j < end:
                seg[j - 1] = 34
                st.open_int = False
            i = j
        limit = MAX_DEPTH + 1  # a row is one level below the top array
        while i < end:
            if st.in_str:
                j = seg.find(b'"', i)
                while j != -1 and _backslashes_before(seg, j, lo) & 1:
                    j = seg.find(b'"', j + 1)
                if j == -1:
                    st.esc = bool(_backslashes_before(seg, end, max(lo, i)) & 1)
                    break
                st.in_str, i = False, j + 1
                continue
            m = _TOKEN.search(seg, i)
            if check and not _GAP.fullmatch(seg, i, m.start() if m else end):
                return False
            if m is None:
                break
            tok, p = m.group(), m.start()
            i = m.end()
            c = tok[0]
            if c == 34:
                st.in_str = True
            elif c in (91, 123):  # a run of openers (hostile input is mostly one long run)
                k = len(tok)
                if absolute and st.depth + k >= limit:
                    self.deep_seen = True
                    if st.depth + k > limit and st.blank_to is None:
                        q = p + max(limit - st.depth, 0)  # the opener that goes one level too deep
                        seg[q] = 48  # '0' stands for the cut value; the rest becomes spaces
                        st.blank_to, blank_from = max(limit, st.depth), q + 1
                        self.too_deep += 1
                st.depth += k
            elif c in (93, 125):  # a run of closers
                k = len(tok)
                if st.blank_to is not None and st.depth - k <= st.blank_to:
                    q = p + st.depth - st.blank_to  # just after the closer that ends the cut value
                    seg[blank_from:q] = b" " * (q - blank_from)
                    st.blank_to = blank_from = None
                st.depth -= k
                st.min_depth = min(st.min_depth, st.depth)
            elif rewrite and st.blank_to is None and self._too_long(tok):
                self.long_ints += 1
                seg[p] = 34
                if i < end:
                    seg[i - 1] = 34
                else:
                    st.open_int = True
        if st.blank_to is not None and blank_from is not None:
            seg[blank_from:end] = b" " * (end - blank_from)
        return True

    @staticmethod
    def _too_long(tok: bytes) -> bool:
        digits = tok.lstrip(b"-")
        if len(digits) < 19 or not digits.isdigit():
            return False  # short, or a float (ijson reads floats of any length)
        if len(digits) > 20:
            return True
        return not INT64[0] <= int(tok) <= INT64[1]


def value_depth(value: Any, limit: int = MAX_DEPTH) -> int:
    """Nesting depth of a parsed value (a scalar 0, [] or {} 1), counted up to `limit` (no recursion)."""
    best, stack = 0, [(value, 1)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, dict):
            v = list(v.values())
        elif not isinstance(v, list):
            continue
        best = max(best, d)
        if d >= limit:
            return d
        stack.extend((x, d + 1) for x in v if isinstance(x, dict | list))
    return best


def deep_field(row: Any, limit: int = MAX_DEPTH) -> str | None:
    """The key of `row` whose value makes it `limit` or more levels deep (None: not that deep; '' : the row
    itself is not an object)."""
    if not isinstance(row, dict):
        return "" if value_depth(row, limit) >= limit else None
    for key, v in row.items():
        if isinstance(v, dict | list) and value_depth(v, limit - 1) >= limit - 1:
            return str(key)
    return None


def line_depth_field(raw: bytes, limit: int = MAX_DEPTH) -> tuple[int, str]:
    """(depth reached, top-level key where it is reached) of one JSON text, scanning its bytes only (no parse)."""
    st = _Scan()
    key, last_str, field, best = "", "", "", 0
    i, end = 0, len(raw)
    while i < end:
        if st.in_str:
            j = raw.find(b'"', i)
            while j != -1 and _backslashes_before(raw, j, 0) & 1:
                j = raw.find(b'"', j + 1)
            if j == -1:
                break
            if st.depth == 1:
                last_str = raw[i:j].decode("utf-8", "replace")
            st.in_str, i = False, j + 1
            continue
        m = _STRUCT.search(raw, i)
        if m is None:
            break
        c, i = m.group()[0], m.end()
        if c == 34:
            st.in_str = True
        elif c == 58 and st.depth == 1:
            key = last_str
        elif c in (91, 123):
            st.depth += 1
            if st.depth > best:
                best, field = st.depth, key
                if best >= limit:
                    break
        elif c in (93, 125):
            st.depth -= 1
    return best, field
