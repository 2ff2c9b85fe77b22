"""The project's cache folder and building a folder in it once: write to a per-process temp name, rename
into place, and clean up what killed writers left behind. Used by data extraction, model loading and the
evaluation caches alike; imports neither torch nor any stage."""

from __future__ import annotations

import logging
import os
import re
import shutil
import socket
import time
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)


def cache_root() -> Path:
    """The project's cache folder (tiny models, extracted records): $DRIFT_EXP_CACHE, else ~/.cache/drift_exp."""
    return Path(os.environ.get("DRIFT_EXP_CACHE", Path.home() / ".cache" / "drift_exp")).expanduser()


_TEMP = re.compile(r"\.tmp-?(?:(?P<host>.+)-)?(?P<pid>\d+)$")
FOREIGN_TEMP_AGE_S = 24 * 3600  # another host's temp folder: its writer cannot be asked, so wait a day


def build_folder(folder: Path, write: Callable[[Path], None]) -> Path:
    """Build `folder` once: `write(tmp)` fills a per-process temp folder, which is then renamed into place
    (atomic; a concurrent builder that won the race keeps its copy). Temp folders of dead builders go first."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    remove_dead_temps(folder.parent)
    if folder.exists():
        return folder
    tmp = temp_path(folder)
    shutil.rmtree(tmp, ignore_errors=True)
    write(tmp)
    try:
        os.replace(tmp, folder)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def temp_path(final: Path) -> Path:
    """Where `final` is built before its rename: named after this host and process, so a later run can tell
    whether the writer is gone (remove_dead_temps)."""
    return final.with_name(f"{final.name}.tmp-{socket.gethostname()}-{os.getpid()}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def remove_dead_temps(parent: Path) -> int:
    """Remove the temp folders that killed writers left in `parent` (this host's whose process is gone,
    other hosts' after a day); return how many."""
    removed = 0
    try:
        entries = list(parent.iterdir())
    except OSError:
        return 0
    host = socket.gethostname()
    for entry in entries:
        m = _TEMP.search(entry.name)
        if m is None or not entry.is_dir():
            continue
        if m.group("host") in (None, host):
            dead = not _alive(int(m.group("pid")))
        else:
            try:
                dead = time.time() - entry.stat().st_mtime > FOREIGN_TEMP_AGE_S
            except OSError:
                continue
        if dead:
            log.info("removing %s, left by a writer that was killed", entry)
            shutil.rmtree(entry, ignore_errors=True)
            removed += 1
    return removed
