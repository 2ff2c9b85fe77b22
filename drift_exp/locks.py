"""One advisory file lock for every lock drift_exp takes (the run directory, the shared Base-row cache).

flock(2) locks die with their process, so a killed job leaves no stale lock behind.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class LockHeld(Exception):
    """The lock is held by another process (non-blocking attempt); `holder` is what it wrote in the file."""

    def __init__(self, path: Path, holder: str):
        super().__init__(f"{path} is locked by {holder}")
        self.path, self.holder = path, holder


@contextmanager
def file_lock(path: Path, *, wait: bool = True, holder: str | None = None) -> Iterator[None]:
    """Hold an exclusive lock on `path` (created if needed) for the block.

    wait=False raises LockHeld at once when another process holds it. `holder` (e.g. a PID and host) is
    written into the file while the lock is held, for the message another process shows."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            raise LockHeld(path, os.pread(fd, 200, 0).decode(errors="replace").strip() or "PID unknown") from None
        if holder is not None:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{holder}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock
