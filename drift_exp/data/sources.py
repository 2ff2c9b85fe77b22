"""Where a data set lives: the bundled sample, a local path, or (only when named) a hub id."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

from drift_exp.errors import DataError
from drift_exp.locations import Kind, locate

log = logging.getLogger(__name__)

SAMPLE_DIR = Path(__file__).parent / "sample"


def local_or_hub(source: str) -> Path | str:
    """A Path when `source` names an existing local file or folder, the hub id when it is one (the one rule of
    drift_exp.locations), else DataError."""
    where = locate(source, ("sample",))  # 'sample' is the callers' to handle: here it names no file
    if where.kind == Kind.hub:
        return source
    if where.kind == Kind.local and where.exists and where.path is not None:
        require_kind("data.source", where.path)  # a FIFO or a device would hang the reader
        return where.path
    raise DataError(f"data.source={source!r}: no such file or folder")


def hub_file(repo_id: str, filename: str, revision: str | None) -> Path:
    """Download one file of a hub data set (only ever called when the user named the hub id)."""
    from huggingface_hub import hf_hub_download

    log.info("downloading %s from the hub dataset %s", filename, repo_id)
    try:
        return Path(hf_hub_download(repo_id, filename, repo_type="dataset", revision=revision))
    except Exception as err:  # offline, missing repo, gated: say which and how to fix it
        raise DataError(f"data.source={repo_id!r}: could not download {filename} from the hub "
                        f"({type(err).__name__}: {err}); pass a local path instead") from None


KINDS = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
         (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def kind_of(path: Path) -> str:
    """'file', 'folder', 'missing', or what else the path is (a FIFO, a device...), following symlinks;
    never opens it (opening a FIFO waits for a writer, reading /dev/zero never ends)."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "missing"
    except OSError as err:
        return f"unreadable ({err.strerror})"
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "folder"
    return next((what for test, what in KINDS if test(mode)), "not a regular file")


def require_kind(key: str, path: Path | str, expect: tuple[str, ...] = ("file", "folder")) -> None:
    """DataError unless the existing path `path` (the value of `key`) is of a kind in `expect`."""
    kind = kind_of(Path(path))
    if kind not in expect and kind != "missing":
        shown = Path(path).resolve() if Path(path).is_symlink() else Path(path)
        via = f" (the symlink points at {shown})" if shown != Path(path) else ""
        want = " or ".join("a regular file" if e == "file" else "a folder" for e in expect)
        raise DataError(f"{key}={str(path)!r} is {kind}{via}, expected {want}; it is never read")
