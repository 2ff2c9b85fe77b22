"""The common records every data source yields and every method consumes, and their JSONL files."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from drift_exp.errors import DataError, UserError

Message = dict[str, str]  # {"role": "system" | "user" | "assistant", "content": str}


@dataclass
class FeedbackRecord:
    """One judged reply: the context before it and what the user made of it."""

    id: str
    prompt: list[Message]  # messages before the judged reply
    rejected: str | None = None  # the reply a user was dissatisfied with (DSAT)
    chosen: str | None = None  # a reply a user was satisfied with (SAT), or a seed pair's revision
    feedback: str | None = None  # the user's follow-up turn
    meta: dict[str, Any] = field(default_factory=dict)  # source, kind (dsat/sat/seed), conversation, turn

    @property
    def kind(self) -> str:
        return self.meta["kind"]


@dataclass
class GenRequest:
    """What must be sampled from the policy for one record."""

    record_id: str
    slot: str  # chosen | rejected | candidate
    messages: list[Message]  # rendered with the model's chat template
    n: int = 1
    # When set, the prompt is this raw string and no chat template is applied (the authors' plain format).
    text: str | None = None


@dataclass
class Completion:
    """The policy's samples for one GenRequest (a line of completions.jsonl)."""

    record_id: str
    slot: str
    outputs: list[str]
    prompt_tokens: int = 0
    truncated_prompt: bool = False  # the prompt was cut to generation.max_prompt_length
    finished: list[bool] = field(default_factory=list)  # each output ended with EOS (not the token limit)


@dataclass
class PreferencePair:
    """One DPO example, in the conversational format TRL's DPOTrainer takes."""

    id: str
    prompt: list[Message]
    chosen: str
    rejected: str
    meta: dict[str, Any] = field(default_factory=dict)  # sampled slot, iteration, source record

    def to_trl(self) -> dict[str, Any]:
        return {
            "prompt": self.prompt,
            "chosen": [{"role": "assistant", "content": self.chosen}],
            "rejected": [{"role": "assistant", "content": self.rejected}],
        }


def _tmp_name(path: Path) -> Path:
    """A temp file beside `path`, private to this process (two writers never share one)."""
    return path.with_name(f"{path.name}.{os.getpid()}.tmp")


def _fsync_dir(folder: Path) -> None:
    """Make a rename in `folder` durable (a crash right after it must not bring the old file back)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_atomic(path: Path, lines: Iterable[str]) -> int:
    """Write lines to a temp file, fsync it, rename it over `path`, fsync the folder; return the count."""
    path = Path(path)
    tmp = _tmp_name(path)
    n = 0
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "w", encoding="utf-8") as f:
            for line in lines:
                f.write(line)
                n += 1
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except OSError as err:
        raise UserError(f"{path}: could not write it ({err.strerror or err}); free disk space or fix the folder's "
                        "permissions and rerun the command (finished stages are kept)") from None
    finally:
        if tmp.exists():  # an error before the rename: leave no half-written file behind
            tmp.unlink(missing_ok=True)
    return n


def write_jsonl(path: Path, items: Iterable[Any], ascii_only: bool = False) -> int:
    """Write dataclasses or dicts, one JSON object a line, atomically (temp file + rename). `ascii_only`: escape
    non-ASCII text as \\uXXXX (json's C encoder is ~40 % faster so; for files only a program reads)."""
    return _write_atomic(path, (json.dumps(asdict(item) if hasattr(item, "__dataclass_fields__") else item,
                                           ensure_ascii=ascii_only) + "\n" for item in items))


def iter_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line number, object); a malformed line (not UTF-8, not JSON, nested too deep, a key twice, an
    integer of over 4300 digits) raises DataError naming file, line and field. A lone surrogate escape is kept
    as U+FFFD (write_jsonl never writes one; a file edited by hand may hold one)."""
    from drift_exp.data.lines import parse_line, read_lines, too_long  # (imported here: no import cycle)
    from drift_exp.data.stream import Invalid, check_head

    try:
        f = open(path, "rb")
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except OSError as err:
        raise DataError(f"{path}: cannot open ({err.strerror})") from None
    with f:
        head = f.read(4096)
        # An empty file is no rows (a stage may write none); a compressed or UTF-16 file is named.
        f.seek(check_head(path, head, os.fstat(f.fileno()).st_size) if head.strip() else 0)
        for lineno, raw in read_lines(f):
            if raw is None:
                raise DataError(f"{path}: line {lineno}: {too_long(lineno)}")
            if not raw.strip():
                continue
            try:
                obj, _ = parse_line(raw)
            except Invalid as err:
                raise DataError(f"{path}: line {lineno}: {err}") from None
            except json.JSONDecodeError as err:
                raise DataError(f"{path}: line {lineno}: not valid JSON ({err.msg})") from None
            if not isinstance(obj, dict):
                raise DataError(f"{path}: line {lineno}: expected a JSON object, got {type(obj).__name__}")
            yield lineno, obj


def read_jsonl(path: Path, cls: type, expected: int | None = None) -> list:
    """Read a JSONL file written by write_jsonl back into dataclasses of type cls. `expected`: the number of
    rows the stage that wrote it recorded; another count (a file cut at a line boundary, or added to) is an
    error naming the file and both counts."""
    names = {f.name for f in fields(cls)}
    out: list = []
    for lineno, obj in iter_jsonl(path):
        unknown = set(obj) - names
        if unknown:
            raise DataError(f"{path}: line {lineno}: unknown field(s) {sorted(unknown)} for {cls.__name__}")
        try:
            out.append(cls(**obj))
        except TypeError as err:
            raise DataError(f"{path}: line {lineno}: {err}") from None
    if expected is not None and len(out) != expected:
        raise DataError(f"{path}: {len(out)} rows, but the stage that wrote it recorded {expected} (cut short or "
                        f"edited?). Restore it, or delete {Path(path).parent}/ and every later iter_* folder and "
                        "rerun the command to redo them.")
    return out


def record_count(stats: dict[str, Any]) -> int | None:
    """How many records the prepare stage wrote to data/records.jsonl, from the counts in its stats (every reader
    records them: by kind for WildFeedback and the released files, as prompts for UltraFeedback); None when the
    stats do not say."""
    if isinstance(stats.get("prompts"), int):
        return stats["prompts"]
    counts = [stats.get(k) for k in ("dsat", "sat", "seed_pairs")]
    return sum(counts) if all(isinstance(c, int) for c in counts) else None


def write_text(path: Path, text: str) -> None:
    """Write a text file atomically and durably."""
    _write_atomic(path, [text])


def write_json(path: Path, obj: Any) -> None:
    """Write a JSON document atomically and durably (markers: a crash leaves the old or the new file)."""
    _write_atomic(path, [json.dumps(obj, indent=2, ensure_ascii=False, sort_keys=False) + "\n"])
