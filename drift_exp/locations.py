"""One rule for what a source setting names: a built-in, a file inside a pip package, a local path or a hub id.

Every setting that takes "a local folder or a hub id" (model.path, scorer.path, data.source, the benchmark
sources) is read with `locate`, so the config check, the hub check, the data readers and the benchmark loaders
agree on every spelling. The rule, in order:

1. a built-in name of that setting (tiny, auto, sample: passed by the caller) is BUILTIN;
2. `pkg:<module>/<file>` is PACKAGE (a file inside an installed pip package, drift_exp/packaged.py);
3. anything that exists on this machine is LOCAL (a folder named like a hub id in the working directory wins);
4. anything spelled as a path is LOCAL, existing or not: absolute (`/x`, `C:\\x`, `\\\\server\\x`), relative to
   here or home (`./x`, `../x`, `~/x`, `.`), with a backslash, a trailing slash, more than one `/`, or ending
   in a file extension that names data or weights (`.json`, `.gguf`, ...);
5. `org/name` or a bare `name` made of letters, digits, `-`, `_` and `.` is HUB (what the hub accepts as a
   repository id; `org/name.v2` is one, and so is a legacy canonical id such as `gpt2`);
6. anything else (spaces, `:`, ...) is LOCAL: a path, which then must exist.

Stdlib only: the config check runs this before anything heavy is imported.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

PACKAGE_PREFIX = "pkg:"
# Suffixes that name a file, never a hub repository (a repository id may hold a dot: org/name.v2).
FILE_SUFFIXES = (".json", ".jsonl", ".parquet", ".gguf", ".csv", ".tsv", ".txt", ".gz", ".zip", ".bin",
                 ".safetensors", ".arrow", ".yaml", ".yml", ".md")
# The hub's repository names: letters, digits, '-', '_', '.'; no '--' or '..', not starting or ending with '-'/'.'.
_HUB_PART = r"[A-Za-z0-9](?:[\w.-]*[A-Za-z0-9_])?"
_HUB_ID = re.compile(rf"(?:{_HUB_PART}/)?{_HUB_PART}")
_WINDOWS_ABSOLUTE = re.compile(r"[A-Za-z]:[\\/]|\\\\")


class Kind(StrEnum):
    builtin = "builtin"
    package = "package"
    local = "local"
    hub = "hub"


@dataclass(frozen=True)
class Location:
    value: str
    kind: Kind
    path: Path | None = None  # LOCAL: the path, ~ expanded (None for a blank value)

    @property
    def exists(self) -> bool:
        return self.path is not None and self.path.exists()


def looks_like_path(value: str) -> bool:
    """Spelled as a path (rule 4), whether or not it exists."""
    return (value.startswith(("/", "./", "../", "~", ".\\", "..\\")) or value in (".", "..")
            or bool(_WINDOWS_ABSOLUTE.match(value)) or "\\" in value or value.endswith("/")
            or value.count("/") > 1 or value.lower().endswith(FILE_SUFFIXES))


def is_hub_shaped(value: str) -> bool:
    """`org/name` or `name` as the hub spells repository ids (rule 5)."""
    return bool(_HUB_ID.fullmatch(value)) and "--" not in value and ".." not in value


def locate(value: str, builtins: tuple[str, ...] = ()) -> Location:
    """What `value` names (the module docstring gives the rule); `builtins`: the setting's special values."""
    if value in builtins:
        return Location(value, Kind.builtin)
    if value.startswith(PACKAGE_PREFIX):
        return Location(value, Kind.package)
    if not value.strip():
        return Location(value, Kind.local)  # names nothing (Path('') would be the working directory)
    path = Path(value).expanduser()
    if path.exists():
        return Location(value, Kind.local, path)
    if not looks_like_path(value) and is_hub_shaped(value):
        return Location(value, Kind.hub)
    return Location(value, Kind.local, path)


def is_hub_id(value: str, builtins: tuple[str, ...] = ("tiny", "auto", "sample")) -> bool:
    return locate(value, builtins).kind == Kind.hub


def missing_local(value: str, builtins: tuple[str, ...] = ()) -> bool:
    """A local path (by the rule) that does not exist: a typo, or a copy not made yet."""
    where = locate(value, builtins)
    return where.kind == Kind.local and not where.exists
