"""The run directory: one process at a time, stages that finish atomically, DONE markers, resume.

Resume rule. Each finished stage's DONE marker records the config it was run with: only the
settings that change its results (fields not marked NEUTRAL in drift_exp/config.py; unmarked
fields count, the safe side). A later run compares its own config with the recorded one, field by
field (`config_changes`):

- a NEUTRAL field (a timeout, a logging interval, vLLM's memory share...) is never compared, so it
  can be changed to get past an OOM or a timeout without touching finished work;
- a field the record does not hold (a setting added to the schema after the stage ran) is
  accepted when its current value is its `legacy` value (config.since), by default its schema
  default: whoever adds a field makes that value reproduce the old behaviour;
- a recorded field the current config no longer has is a change (the safe side);
- everything else must be equal.

So adding a defaulted field or retuning a neutral knob changes no stage's verdict, and the
marker's `key` (a hash of the recorded config and the previous stage's key) is a fingerprint for
people and logs only; resume never compares it.

Stages are checked in pipeline order before anything runs or is written (`RunDir.stage` only
reads; `RunDir.apply` then does the writes the checks decided). A finished stage whose config
changed is refused, naming the settings, unless run.overwrite=true, which discards it and every
later stage. A finished stage after one that is not finished (its marker was removed) is refused
the same way: it was built on an output that will be made again. The evaluation is a leaf: a
changed `eval` config reruns just that stage, once every other check has passed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import signal
import socket
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from drift_exp.config import NO_LEGACY, resume_rule
from drift_exp.credentials import scrub
from drift_exp.errors import StageConflict, UserError
from drift_exp.locks import LockHeld, file_lock
from drift_exp.names import ITERATION_GLOB, LEAVES, TRAIN, folder_iteration, folder_stages, iteration_folder, stage_id
from drift_exp.provenance import unrecorded_ok
from drift_exp.records import write_json

log = logging.getLogger(__name__)

CHECKPOINT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                    "pytorch_model.bin.index.json")


# How to give a run its own directory, in a single run and in a multirun (where hydra.run.dir is not used).
OTHER_DIRECTORY = ("another run directory: run.variant=<label> (the experiment's name and directory get +<label>), "
                   "hydra.run.dir=<dir> in a single run, hydra.sweep.subdir=<name> in a multirun (-m)")


class RunDirLocked(UserError):
    """Another process holds the run directory."""


class DamagedRunDir(UserError):
    """A file a finished stage recorded is missing or unreadable."""


def key_of(parent: str, section: dict[str, Any]) -> str:
    """A stage's fingerprint (shown, recorded; resume compares the recorded config instead)."""
    blob = json.dumps({"parent": parent, "config": section}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict) or (not d and prefix):
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def _normal(section: dict[str, Any]) -> dict[str, Any]:
    """The section as the marker holds it (JSON types: enums as strings, tuples as lists; credentials masked)."""
    return scrub(json.loads(json.dumps(section, default=str)))


# Settings the pipeline added to a stage's record after runs existed; a marker without them is accepted
# (the check could not be made when the stage ran), with a warning.
UNRECORDED_OK = ("data_file.",)


def config_changes(recorded: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """The result-affecting settings that differ, as 'key: old -> new' (empty: the stage can be reused)."""
    before, now = _flatten(_normal(recorded)), _flatten(_normal(current))
    changes = []
    for key in sorted(before.keys() | now.keys()):
        neutral, legacy = resume_rule(key)
        if neutral:
            continue
        if key not in before:  # a setting added after this stage ran
            if legacy is not NO_LEGACY and _normal({"v": legacy})["v"] == now[key]:
                continue
            if key.startswith(UNRECORDED_OK) and unrecorded_ok(key, before):  # a file added is a change
                log.warning("%s: not recorded by the run that finished this stage (an older drift_exp); "
                            "not checked", key)
                continue
            changes.append(f"{key}: (not recorded) -> {now[key]!r}")
        elif key not in now:
            changes.append(f"{key}: {before[key]!r} -> (no longer set)")
        elif before[key] != now[key]:
            changes.append(f"{key}: {before[key]!r} -> {now[key]!r}")
    return changes


@dataclass
class Stage:
    """One stage of one iteration folder; `done` is True when a previous run finished it with this config."""

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
        markers[self.name] = {"key": self.key, "config": _normal(self.section), "stats": self.stats}
        write_json(self.folder / "DONE", markers)
        self.done = True
        _kill_hook(self.id)

    @property
    def id(self) -> str:
        return stage_id(self.folder.name, self.name)


def read_markers(folder: Path) -> dict[str, Any]:
    """The DONE markers of a folder ({} when none); a damaged file is an error naming it."""
    path = folder / "DONE"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as err:
        raise DamagedRunDir(f"{path}: unreadable ({err}); it records which stages of {folder.name} finished. "
                            f"Delete it to redo every stage of {folder.name}.") from None
    try:
        markers = json.loads(text)
        if not isinstance(markers, dict) or not all(isinstance(m, dict) and "config" in m for m in markers.values()):
            raise ValueError("expected an object of stage markers, each with its config")
    except ValueError as err:
        what = "empty" if not text.strip() else f"damaged ({err})"
        raise DamagedRunDir(f"{path} is {what}; it records which stages of {folder.name} finished. "
                            f"Delete it to redo every stage of {folder.name}.") from None
    return markers


def _kill_hook(stage: str) -> None:
    """Test hook: DRIFT_EXP_KILL_AT=<folder>/<stage> SIGKILLs the process right after that stage."""
    if os.environ.get("DRIFT_EXP_KILL_AT") == stage:
        os.kill(os.getpid(), signal.SIGKILL)


_HELD: set[str] = set()  # run directories this process holds the lock of


class RunDir:
    def __init__(self, root: Path, overwrite: bool):
        self.root = Path(root)
        self.overwrite = overwrite
        self.root.mkdir(parents=True, exist_ok=True)
        self._checked: list[Stage] = []  # every stage looked up so far, in pipeline order
        self._discard: tuple[int | None, str] | None = None  # run.overwrite: discard from here (apply)
        self._rerun: list[Stage] = []  # leaves whose config changed: their markers go (apply)

    @contextmanager
    def locked(self) -> Iterator[RunDir]:
        """Hold an advisory lock on the run directory for the block (reentrant within a process). The
        kernel releases it when the process dies, so kill -9 leaves no stale lock behind."""
        key = str(self.root.resolve())
        if key in _HELD:  # this process holds it already (the CLI locks before the pipeline starts)
            yield self
            return
        with ExitStack() as stack:
            try:
                stack.enter_context(file_lock(self.root / ".lock", wait=False,
                                              holder=f"PID {os.getpid()} on {socket.gethostname()}"))
            except LockHeld as held:
                raise RunDirLocked(f"{self.root} is in use by another drift_exp process ({held.holder}); two "
                                   "processes on one run directory would overwrite each other's stages. Wait for it "
                                   f"to finish, or give this run {OTHER_DIRECTORY}.") from None
            _HELD.add(key)
            try:
                yield self
            finally:
                _HELD.discard(key)

    def folder(self, k: int | None) -> Path:
        return self.root / iteration_folder(k)

    def stage(self, k: int | None, name: str, parent: str, section: dict[str, Any]) -> Stage:
        """Look up stage `name` of iteration k (None: the prepare stage in data/). Reads only; call
        `apply` once every stage was looked up, before running any."""
        folder = self.folder(k)
        st = Stage(folder, name, key_of(parent, section), section)
        old = None if self._discard else read_markers(folder).get(name)
        earlier = [s for s in self._checked if s.name not in LEAVES]
        self._checked.append(st)
        if old is None:
            return st
        where = st.id
        changes = config_changes(old.get("config", {}), section)
        missing = next((s for s in earlier if not s.done), None)
        if not changes and missing is None:
            st.done, st.stats = True, old.get("stats", {})
            log.info("%s: done, reusing it", where)
            return st
        if name in LEAVES:  # nothing depends on it: rerun it, keep everything else
            why = (f"config changed: {'; '.join(changes[:4])}" if changes
                   else f"{missing.id} is not finished")
            log.info("%s: %s; it will run again", where, why)
            self._rerun.append(st)
            return st
        if changes:
            what = f"was finished with a different config ({', '.join(changes[:8])})"
        else:
            assert missing is not None
            what = (f"is recorded as finished, but {missing.id}, which it builds on, is "
                    "not (its DONE marker was removed?), so it would be made again under this stage")
        if not self.overwrite:
            raise StageConflict(
                f"{self.root}: stage {where} {what}. Rerun with the original settings, use {OTHER_DIRECTORY}, or "
                f"pass run.overwrite=true to discard {where} and every stage after it.")
        log.warning("%s %s: discarding it and every later stage (run.overwrite=true)", where, what)
        self._discard = (k, name)
        return st

    def apply(self) -> None:
        """Do what the checks decided: drop the markers of leaves that rerun, discard from a refused stage."""
        for st in self._rerun:
            markers = read_markers(st.folder)
            if markers.pop(st.name, None) is not None:
                write_json(st.folder / "DONE", markers)
        self._rerun = []
        if self._discard is not None:
            self.discard_from(*self._discard)
            self._discard = None

    def checkpoint_after(self, k: int, base: str) -> str:
        """The policy iteration k left behind: its checkpoint, or the base model when iteration 0's
        training was recorded as skipped. Never an older checkpoint: a missing one is an error."""
        folder = self.folder(k)
        marker = read_markers(folder).get(TRAIN)
        where = stage_id(k, TRAIN)
        if marker is None:
            raise DamagedRunDir(f"{self.root}: {where} has not finished (no 'train' entry in {folder / 'DONE'}), "
                                f"but a later stage needs its checkpoint. Rerun the command to train it.")
        if k == 0 and marker.get("stats", {}).get("skipped"):
            return base
        ckpt = folder / "checkpoint"
        if not (ckpt / "config.json").is_file() or not any((ckpt / f).is_file() for f in CHECKPOINT_FILES):
            raise DamagedRunDir(
                f"{ckpt} is missing or incomplete (no config.json or weights), but {folder / 'DONE'} records "
                f"{where} as finished and the next stage starts from it. Restore it, or delete {folder}/ and "
                f"every later iter_* folder and rerun the command to train from {folder.name} on again.")
        return str(ckpt)

    def require(self, path: Path, stage: str) -> Path:
        """An output a finished stage recorded; missing: an error naming it and how to redo the stage."""
        if not path.is_file():
            raise DamagedRunDir(f"{path} is missing, but {path.parent / 'DONE'} records {stage} as finished. "
                                f"Restore it, or delete {path.parent}/ and every later iter_* folder and "
                                "rerun the command to redo them.")
        return path

    def discard_from(self, k: int | None, name: str) -> None:
        """Remove stage `name` of iteration k and everything after it."""
        folder = self.folder(k)
        markers = read_markers(folder)
        names = folder_stages(k)
        for later in names[names.index(name):]:
            markers.pop(later, None)
        write_json(folder / "DONE", markers)
        first_iter = 0 if k is None else k + 1
        for sub in self.root.glob(ITERATION_GLOB):
            k_sub = folder_iteration(sub.name)
            if k_sub is not None and k_sub >= first_iter:
                shutil.rmtree(sub)
