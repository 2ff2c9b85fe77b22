"""WildFeedback's per-turn SAT/DSAT annotation (`sat_dsat_annotation.json`) -> FeedbackRecords.

The file is one JSON array of flat utterances (1.6 GB for the real one). A conversation starts wherever
`UtterranceId` restarts at 0; User and Agent rows alternate, User first. The SAT/DSAT flags on a User row
judge the Agent reply right before it. Field names keep the data set's own spellings.

Duplicates. WildFeedback repeats some conversations (WildChat holds identical chats), and the paper's Table 1
counts unique ones ("88,920 unique conversations", §4.1). A valid conversation whose turns (roles and contents,
in order) equal an earlier one's is dropped before extraction: the first copy is kept, whatever the flags of the
later ones, and stats["duplicate_conversations"] counts the copies dropped. stats["conversations"] counts the
unique conversations (skipped ones included); record ids keep each conversation's position in the file.

Records produced (paper §4.1, Table 1):
- dsat: context before the judged reply, rejected = that reply, feedback = the dissatisfied turn
- sat:  context before the judged reply, chosen = that reply, feedback = the satisfied turn
- seed: a reply judged DSAT whose immediate revision (the next Agent reply) is judged SAT;
        rejected = the first reply, chosen = the revision, prompt = the context before the first

Reading: the array is streamed (drift_exp.data.stream); only the current conversation's messages are held,
and rows are checked as they arrive. Results of a large file are cached (drift_exp.data.cache).

Bad input. With data.on_invalid=error (default) the first bad row stops the run with a DataError naming the
file, the utterance (0-based index in the array), the field and what was expected. With skip, the whole
conversation holding a bad row is skipped and counted in stats["skipped"] as "conversation_with_<reason>";
stats["skipped_rows"] counts the utterances dropped. Reasons: not_an_object, missing_field, misspelled_field
(the message says "did you mean"), wrong_type (e.g. the string "true" for a flag, 1.0 for an id),
bad_utterance_id (negative, or the first row is not 0), duplicate_utterance_id (an id seen before in the
conversation), utterance_id_gap (rows missing), unknown_role, starts_with_agent, roles_not_alternating (two
turns of one role in a row), flag_on_agent_row, conversation_too_long (over MAX_UTTERANCES: no restart at 0).
A broken first row (no usable UtterranceId 0) cannot be told from a broken row of the conversation before it,
so that conversation is skipped too.
Tolerated, counted in stats["warnings"], the conversation kept: null Content (read as ""; a null or blank
judged reply is then skipped as "empty_reply", as before), a TurnId that is not UtterranceId // 2 + 1 or not an
integer (TurnId is never used), invalid UTF-8 replaced by U+FFFD (skip mode only), lone_surrogates_replaced (a
valid-JSON escape like \\udc00 without its pair, kept as U+FFFD in both modes: the text is still there),
long_integers_read_as_text (an integer beyond 64 bits; a field that must be an integer then fails as wrong_type).
Rows nested 500 levels or deeper are refused while parsing (too_deep, naming the field), with memory bounded.
Judgements that cannot be used are counted in both modes: flag_without_reply, contradictory_flags, empty_reply,
empty_feedback (the judging turn is blank), empty_prompt (the user turn the judged reply answers is blank).
Whole-file problems are errors in both modes: an empty or white-space-only file, a compressed file or UTF-16/32
text (each named), a Git-LFS pointer, a top level that is not an array, an empty array, and (skip mode) a file
where every conversation was skipped. Not detected: a key given twice in one row (the last value wins, as with
json.load; see drift_exp.data.stream).
Damage the parser cannot step over (a truncated file, invalid JSON syntax, data after the closing ']'; invalid
UTF-8 in error mode) is an error; with skip, what was read before it is kept, the conversation it cut is dropped
("conversation_cut_short"), the damage is counted under its reason and described in stats["damage"], and a
loud warning says how much of the file was not read.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from drift_exp.config import DataConfig, OnInvalid
from drift_exp.data import cache, stream
from drift_exp.data.sources import SAMPLE_DIR, hub_file, local_or_hub
from drift_exp.data.stream import Invalid, blank, json_type
from drift_exp.errors import DataError
from drift_exp.records import FeedbackRecord

log = logging.getLogger(__name__)

ID, TURN, ROLE, CONTENT = "UtterranceId", "TurnId", "Role", "Content"
SAT, DSAT = "Satisfaction", "Disatisfaction"
KNOWN = (ID, TURN, ROLE, CONTENT, "State", "Preceeding", SAT, "Satisfaction-Justificiation", DSAT,
         "Dissatisfaction-Justificiation")
ROLE_AT = ("User", "Agent")  # by UtterranceId parity
ANNOTATION_FILE = "sat_dsat_annotation.json"
EXTRACTOR_VERSION = 4  # bump whenever the records or stats extracted from a file change (invalidates caches)
MAX_UTTERANCES = 10_000  # in one conversation; real ones have at most a few hundred


def _field(row: dict, key: str) -> Any:
    if key not in row:
        hint = stream.did_you_mean(key, row, KNOWN)
        raise Invalid("misspelled_field" if hint else "missing_field", f"field '{key}': missing{hint}")
    return row[key]


def check_row(row: Any, expected: int, warnings: Counter) -> tuple[str, bool, bool]:
    """(content, sat, dsat) of a row that should have UtterranceId `expected`, or Invalid saying what is wrong.
    `extract` inlines the common case (a well-formed unflagged row); this is the full check."""
    if not isinstance(row, dict):
        raise Invalid("not_an_object", f"expected a JSON object (one utterance), got {json_type(row)}")
    if stream.DAMAGED in row:  # refused while reading (nested too deep)
        raise row[stream.DAMAGED]
    if expected >= MAX_UTTERANCES:
        raise Invalid("conversation_too_long", f"field '{ID}': expected a restart at 0 within {MAX_UTTERANCES} "
                      "utterances (no real conversation is this long)")
    uid = _field(row, ID)
    if type(uid) is not int:
        raise Invalid("wrong_type", f"field '{ID}': expected an integer, got {json_type(uid)}")
    if uid < 0 or (expected == 0 and uid != 0):
        why = "ids are never negative" if uid < 0 else "conversations start at 0"
        raise Invalid("bad_utterance_id", f"field '{ID}': expected {expected} ({why}), got {uid}")
    if uid < expected:
        raise Invalid("duplicate_utterance_id", f"field '{ID}': expected {expected}, got {uid} again "
                      "(already seen in this conversation)")
    if uid > expected:
        raise Invalid("utterance_id_gap", f"field '{ID}': expected {expected}, got {uid} (rows missing)")
    role, want = _field(row, ROLE), ROLE_AT[expected & 1]
    if role not in ROLE_AT:
        hint = next((f" (did you mean {r!r}?)" for r in ROLE_AT
                     if isinstance(role, str) and role.strip().lower() == r.lower()), "")
        raise Invalid("unknown_role", f"field '{ROLE}': expected 'User' or 'Agent', got {json_type(role)}{hint}")
    if role != want:
        reason, why = (("starts_with_agent", "conversations start with a User turn") if expected == 0 else
                       ("roles_not_alternating", f"two {role} turns in a row; User and Agent alternate"))
        raise Invalid(reason, f"field '{ROLE}': expected {want!r} at UtterranceId {uid} ({why}), got {role!r}")
    content = _field(row, CONTENT)
    if content is None:
        warnings["null_content"] += 1
        content = ""
    elif not isinstance(content, str):
        raise Invalid("wrong_type", f"field '{CONTENT}': expected a string, got {json_type(content)}")
    flags = []
    for key in (SAT, DSAT):
        value = _field(row, key)
        if not isinstance(value, bool):
            raise Invalid("wrong_type", f"field '{key}': expected true or false, got {json_type(value)}")
        flags.append(value)
    if role == "Agent" and any(flags):
        raise Invalid("flag_on_agent_row", f"field '{SAT if flags[0] else DSAT}': expected false on an Agent row "
                      "(flags belong on User rows: they judge the reply before them), got true")
    turn = row.get(TURN)
    if turn is not None and (type(turn) is not int or turn != expected // 2 + 1):
        warnings["turn_id_mismatch"] += 1
    return content, flags[0], flags[1]


def conversation_records(conv: int, contents: list[str], flags: list[tuple[int, bool, bool]], source: str,
                         skipped: Counter) -> list[FeedbackRecord]:
    """Records of one validated conversation from its texts (User first, alternating) and its flagged rows
    (utterance, sat, dsat); judgements that cannot be used are counted in `skipped`."""
    texts = [stream.clean_text(c) for c in contents]
    messages = [{"role": ("user", "assistant")[j & 1], "content": c} for j, c in enumerate(texts)]
    sat_at = {j for j, s, d in flags if s and not d}

    def record(kind: str, reply: int, **kw: str) -> FeedbackRecord:
        return FeedbackRecord(
            id=f"{source}-c{conv}-u{reply}-{kind}", prompt=[dict(m) for m in messages[:reply]],
            meta={"source": source, "kind": kind, "conversation": conv, "utterance": reply, "turn": reply // 2 + 1},
            **kw)

    out: list[FeedbackRecord] = []
    for j, s, d in flags:
        if j == 0:
            skipped["flag_without_reply"] += 1  # the opening user turn judges nothing
            continue
        if s and d:
            skipped["contradictory_flags"] += 1
            continue
        reply = j - 1
        if blank(texts[reply]):
            skipped["empty_reply"] += 1
            continue
        if blank(texts[j]) or blank(texts[reply - 1]):  # the feedback, or the turn the reply answers
            skipped["empty_feedback" if blank(texts[j]) else "empty_prompt"] += 1
            continue
        if d:
            out.append(record("dsat", reply, rejected=texts[reply], feedback=texts[j]))
            revision = reply + 2  # the agent's next reply, judged by the user turn after it
            if revision + 1 in sat_at and not blank(texts[revision]):
                out.append(record("seed", reply, rejected=texts[reply], chosen=texts[revision], feedback=texts[j]))
        else:
            out.append(record("sat", reply, chosen=texts[reply], feedback=texts[j]))
    return out


def conversation_key(contents: list[str]) -> int:
    """A key of a conversation's turns for finding repeats. Roles follow from the positions (User first,
    alternating), so the contents in order identify it. Python's hash of the tuple of texts: it works on the
    strings as they are in memory (no UTF-8 encoding, ~3x faster than a digest of the encoded text on the bench
    file), keyed per process (SipHash), 64 bits; the chance that two different conversations of the full 1.6 GB
    file (~150 000 of them) share a key is below 1e-9."""
    return hash(tuple(contents))


class _Tally:
    """Records and counts of the conversations closed so far."""

    def __init__(self, path: Path | str, source: str, skip_invalid: bool):
        self.path, self.source, self.skip_invalid = path, source, skip_invalid
        self.records: list[FeedbackRecord] = []
        self.skipped: Counter = Counter()
        self.warnings: Counter = Counter()
        self.n_conv = self.good = self.skipped_rows = self.dsat_conv = self.sat_conv = self.duplicates = 0
        self.seen: set[int] = set()  # keys of the valid conversations kept so far
        self.damage: dict[str, Any] | None = None

    def close(self, n_rows: int, bad: str | None, contents: list[str], flags: list) -> None:
        self.n_conv += 1
        if bad is not None:
            self.skipped[bad if bad == "conversation_cut_short" else f"conversation_with_{bad}"] += 1
            self.skipped_rows += n_rows
            return
        key = conversation_key(contents)
        if key in self.seen:
            self.duplicates += 1
            return
        self.seen.add(key)
        self.good += 1
        if flags:
            recs = conversation_records(self.n_conv - 1, contents, flags, self.source, self.skipped)
            self.records.extend(recs)
            kinds = {r.kind for r in recs}
            self.dsat_conv += "dsat" in kinds
            self.sat_conv += "sat" in kinds

    def damaged(self, dmg: stream.StreamDamage, n_rows: int) -> None:
        where = f"{self.path}: utterance {n_rows} ({dmg.where})"
        if not self.skip_invalid:
            raise DataError(f"{where}: {dmg.detail}; expected a well-formed JSON array of utterances (only the "
                            f"{n_rows} utterances before this point could be read)") from None
        self.skipped[dmg.reason] += 1
        self.damage = {"reason": dmg.reason, "detail": dmg.detail, "utterance": n_rows, "byte": dmg.byte}
        log.warning("!!! %s: %s. Kept the %d utterances read before it%s; %d bytes after it were not read.",
                    where, dmg.detail, n_rows, "" if dmg.complete else " except the conversation it cut", dmg.unread)

    def stats(self, n_rows: int) -> dict[str, Any]:
        if n_rows == 0:
            detail = f" ({self.damage['detail']} at byte {self.damage['byte']})" if self.damage else ""
            raise DataError(f"{self.path}: no utterances (an empty array){detail}")
        if self.good == 0 and self.skip_invalid:
            raise DataError(f"{self.path}: all {self.n_conv} conversations were skipped "
                            f"({dict(sorted(self.skipped.items()))}); is this the annotation file?")
        counts = Counter(r.kind for r in self.records)
        stats: dict[str, Any] = {
            "source": str(self.path), "utterances": n_rows, "conversations": self.n_conv - self.duplicates,
            "duplicate_conversations": self.duplicates,
            "dsat": counts["dsat"], "sat": counts["sat"], "seed_pairs": counts["seed"],
            "dsat_conversations": self.dsat_conv, "sat_conversations": self.sat_conv,
            "skipped": dict(sorted(self.skipped.items())),
        }
        if self.skip_invalid:
            stats["skipped_rows"] = self.skipped_rows
        if self.warnings:
            stats["warnings"] = dict(sorted(self.warnings.items()))
            log.warning("%s: kept rows with tolerated problems: %s", self.path, stats["warnings"])
        if self.damage:
            stats["damage"] = self.damage
        if self.n_conv - self.duplicates > self.good:
            log.warning("%s: skipped %d of %d conversations (%d utterances): %s", self.path,
                        self.n_conv - self.duplicates - self.good, self.n_conv, self.skipped_rows, stats["skipped"])
        if self.duplicates:
            log.info("%s: dropped %d duplicate conversations (first copy kept); %d unique", self.path,
                     self.duplicates, self.n_conv - self.duplicates)
        return stats


def extract(rows: Iterable[Any], path: Path | str, source: str,
            skip_invalid: bool) -> tuple[list[FeedbackRecord], dict[str, Any]]:
    """All records of an annotation file's rows (any iterable, consumed once: a list or a stream), with the
    counts of paper Table 1 and of what was skipped. Holds only the current conversation."""
    tally = _Tally(path, source, skip_invalid)
    warnings = tally.warnings
    contents: list[str] = []  # of the current conversation
    flags: list[tuple[int, bool, bool]] = []
    bad: str | None = None  # why the current conversation is skipped
    start, i, in_conv = 0, -1, False
    try:
        for i, row in enumerate(rows):  # noqa: B007 (i is read after the loop)
            uid = row.get(ID) if type(row) is dict else None
            # Only a true integer 0 starts a conversation: false and 0.0 equal 0 in Python but are ids of the
            # wrong type, refused by check_row within the conversation they stand in.
            if (uid == 0 and type(uid) is int) or not in_conv:
                if in_conv:
                    tally.close(i - start, bad, contents, flags)
                contents, flags, bad, start, in_conv = [], [], None, i, True
            if bad is not None:
                continue
            n = len(contents)
            if (uid == n and type(uid) is int and row.get(ROLE) == ROLE_AT[n & 1] and row.get(SAT) is False
                    and row.get(DSAT) is False and type(content := row.get(CONTENT)) is str and n < MAX_UTTERANCES):
                turn = row.get(TURN)
                if (type(turn) is not int or turn != (n >> 1) + 1) and turn is not None:
                    warnings["turn_id_mismatch"] += 1
                contents.append(content)
                continue
            try:
                content, s, d = check_row(row, n, warnings)
            except Invalid as err:
                if not skip_invalid:
                    raise DataError(f"{path}: utterance {i} (conversation {tally.n_conv}): {err}; "
                                    "set data.on_invalid=skip to skip such conversations") from None
                contents, flags, bad = [], [], err.reason
                continue
            contents.append(content)
            if s or d:
                flags.append((n, s, d))
    except stream.StreamDamage as dmg:
        i += 1  # the row being read when the damage was found
        tally.damaged(dmg, i)
        if not dmg.complete and in_conv:
            bad = "conversation_cut_short"
    else:
        i += 1
    if in_conv:
        tally.close(i - start, bad, contents, flags)
    return tally.records, tally.stats(i)


def read_annotation(path: Path, source: str, skip_invalid: bool,
                    backend: str | None = None) -> tuple[list[FeedbackRecord], dict[str, Any]]:
    """Stream the file at `path` through `extract` (no cache). `backend`: an ijson backend name (tests)."""
    rows = stream.ArrayStream(path, repair_utf8=skip_invalid, backend=backend, keep=(ID,))
    records, stats = extract(rows, path, source, skip_invalid)
    stream.report_repairs(rows, path, stats)
    return records, stats


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
    """Read an annotation file into records and its Table 1 counts, through the record cache for large files
    (stats["cache"] = "hit" | "miss"; absent for files under cache.MIN_BYTES)."""
    path = annotation_path(cfg)
    skip = cfg.on_invalid == OnInvalid.skip
    return cache.cached(path, EXTRACTOR_VERSION, cfg.on_invalid, cfg.name,
                        lambda: read_annotation(path, cfg.name, skip))
