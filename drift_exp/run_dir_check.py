"""The run directory checked before Hydra creates it and opens its log file there (a Hydra callback named in
conf/config.yaml), and write failures on it told in one line: a read-only folder or a full disk ends with the
project's message and exit status 2, not a Hydra, logging or safetensors traceback."""

from __future__ import annotations

import errno
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

MIN_FREE = 64 * 2**20  # bytes: below this not even the records and logs of a run fit
FULL_OR_READ_ONLY = {errno.ENOSPC, errno.EDQUOT, errno.EROFS}
REFUSED = {errno.EACCES, errno.EPERM}
DISK_WORDS = ("No space left", "StorageFull", "Read-only file system", "Disk quota")


def run_dir_problem(folder: Path, key: str) -> str | None:
    """Why drift_exp cannot write in `folder` (created when missing), or None."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".drift_exp_probe.{os.getpid()}"
        try:
            with open(probe, "wb") as f:
                f.write(b"\0" * 4096)
                f.flush()
                os.fsync(f.fileno())
        finally:
            probe.unlink(missing_ok=True)
        free = shutil.disk_usage(folder).free
    except OSError as err:
        return (f"{key}={folder}: cannot write there ({err.strerror or err}); choose a writable folder "
                f"({key}=...) or fix its permissions")
    if free < MIN_FREE:
        return (f"{key}={folder}: its disk is full ({free / 2**20:.1f} MiB free, at least {MIN_FREE // 2**20} MiB "
                f"needed for the records and logs); free space or choose another folder ({key}=...)")
    return None


def _refuse(why: str) -> None:
    sys.stderr.write(f"drift_exp: error: {why}\n")
    sys.stderr.flush()
    sys.exit(2)


class RunDirCheck(Callback):
    """Checks hydra.run.dir (hydra.sweep.dir for -m) before Hydra makes it and configures logging into it."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        why = run_dir_problem(Path(str(config.hydra.run.dir)), "hydra.run.dir")
        if why:
            _refuse(why)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        why = run_dir_problem(Path(str(config.hydra.sweep.dir)), "hydra.sweep.dir")
        if why:
            _refuse(why)


def disk_problem(err: BaseException, run_dir: Path) -> str | None:
    """What went wrong when `err` is a write failure of the disk (full, read-only: also as safetensors reports
    it) or a permission refused inside `run_dir`, else None (other errors keep their traceback)."""
    text = str(err)
    if isinstance(err, OSError):
        inside = bool(err.filename) and Path(str(err.filename)).resolve().is_relative_to(run_dir.resolve())
        if err.errno in FULL_OR_READ_ONLY or (inside and err.errno in REFUSED):
            return f"{err.strerror or text}" + (f": {err.filename}" if err.filename else "")
        return None
    if any(w in text for w in DISK_WORDS):
        return text.splitlines()[0][:300]
    return None
