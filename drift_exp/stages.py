"""The run directory: stages that finish atomically, DONE markers holding config hashes, resume.

Each stage's key chains the key of the stage before it with the config it reads, so a changed
setting invalidates exactly the stages downstream of it. A finished stage whose key no longer
matches is refused (the message says which settings changed) unless run.overwrite=true, which
discards it and everything after it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from drift_exp.errors import StageConflict
from drift_exp.records import write_json

log = logging.getLogger(__name__)

LEAVES = ("eval",)  # stages no later stage reads: a changed config reruns just them
ORDER = ("requests", "generate", "pairs", "train", "eval")  # iteration k >= 1; iteration 0: train, eval


def key_of(parent: str, section: dict[str, Any]) -> str:
    blob = json.dumps({"parent": parent, "config": section}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


@dataclass
class Stage:
    """One stage of one iteration folder; `done` is True when a previous run finished it with this key."""

    folder: Path
    name: str
    key: str
    section: dict[str, Any]
    done: bool = False
    stats: dict[str, Any] = field(default_factory=dict)

    def finish(self, stats: dict[str, Any] | None = None) -> None:
        """Record the stage as done (after its outputs were written atomically)."""
        self.stats = stats or {}
        markers = read_markers(self.folder)
        markers[self.name] = {"key": self.key, "config": self.section, "stats": self.stats}
        write_json(self.folder / "DONE", markers)
        self.done = True
        _kill_hook(f"{self.folder.name}/{self.name}")


def read_markers(folder: Path) -> dict[str, Any]:
    path = folder / "DONE"
    return json.loads(path.read_text()) if path.exists() else {}


def _kill_hook(stage: str) -> None:
    """Test hook: DRIFT_EXP_KILL_AT=<folder>/<stage> SIGKILLs the process right after that stage."""
    if os.environ.get("DRIFT_EXP_KILL_AT") == stage:
        os.kill(os.getpid(), signal.SIGKILL)


class RunDir:
    def __init__(self, root: Path, overwrite: bool):
        self.root = Path(root)
        self.overwrite = overwrite
        self.root.mkdir(parents=True, exist_ok=True)

    def folder(self, k: int | None) -> Path:
        return self.root / ("data" if k is None else f"iter_{k}")

    def stage(self, k: int | None, name: str, parent: str, section: dict[str, Any]) -> Stage:
        """Look up stage `name` of iteration k (None: the prepare stage in data/)."""
        folder = self.folder(k)
        folder.mkdir(parents=True, exist_ok=True)
        st = Stage(folder, name, key_of(parent, section), section)
        old = read_markers(folder).get(name)
        if old is None:
            return st
        if old["key"] == st.key:
            st.done, st.stats = True, old.get("stats", {})
            log.info("%s/%s: done, reusing it", folder.name, name)
            return st
        where = f"{folder.name}/{name}"
        if name in LEAVES:  # nothing depends on it: rerun it, keep everything else
            log.info("%s: config changed, running it again", where)
            markers = read_markers(folder)
            markers.pop(name, None)
            write_json(folder / "DONE", markers)
            return st
        if not self.overwrite:
            before, now = _flatten(old.get("config", {})), _flatten(section)
            changed = sorted(k for k in before.keys() | now.keys() if before.get(k) != now.get(k))
            what = (", ".join(f"{c}: {before.get(c)!r} -> {now.get(c)!r}" for c in changed[:8])
                    if changed else "an earlier stage it depends on changed")
            raise StageConflict(
                f"{self.root}: stage {where} was finished with a different config ({what}). "
                "Rerun with the original settings, use another run directory (hydra.run.dir=...), "
                f"or pass run.overwrite=true to discard {where} and every stage after it."
            )
        log.warning("%s: config changed, discarding it and every later stage (run.overwrite=true)", where)
        self.discard_from(k, name)
        return st

    def checkpoint_after(self, k: int, base: str) -> str:
        """The policy iteration k left behind (iteration 0 may have skipped training: then the base model)."""
        for j in range(k, -1, -1):
            if (self.folder(j) / "checkpoint" / "config.json").exists():
                return str(self.folder(j) / "checkpoint")
        return base

    def discard_from(self, k: int | None, name: str) -> None:
        """Remove stage `name` of iteration k and everything after it."""
        folder = self.folder(k)
        markers = read_markers(folder)
        names = ["prepare"] if k is None else (["train", "eval"] if k == 0 else list(ORDER))
        for later in names[names.index(name):]:
            markers.pop(later, None)
        write_json(folder / "DONE", markers)
        first_iter = 0 if k is None else k + 1
        for sub in self.root.glob("iter_*"):
            if sub.name.split("_")[1].isdigit() and int(sub.name.split("_")[1]) >= first_iter:
                shutil.rmtree(sub)
