"""Read an offline W&B run back from its files: the history rows, the summary, the config and the identity.

An offline run is a folder `<dir>/wandb/offline-run-<time>-<id>/` holding `run-<id>.wandb`, the run's
transaction log: a 7-byte header (":W&B", 0xBEE1, version 0), then 32 KiB blocks of chunks in the LevelDB
log layout (a chunk: CRC-32 of its type byte and data, 2-byte length, type FULL/FIRST/MIDDLE/LAST), each
whole record a `wandb_internal_pb2.Record` (history, summary, config, run, metric, ...). The W&B library no
longer ships a Python reader of this file, so this module reads it with the protobuf classes it does ship.

Used by the dashboards' key check (every key a panel names must be in the runs) and by tests that look at
what a run logged, without a network or an API key:

    run = read_offline_run(path)            # an offline-run folder or its .wandb file
    run.history_keys, run.summary_keys      # sets of metric names ("eval/proxy/reward_mean", ...)
    runs = find_offline_runs(sweep_dir)     # every offline run under a folder, resumed pieces merged by id
"""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from drift_exp.errors import UserError

HEADER = b":W&B" + struct.pack("<HB", 0xBEE1, 0)
BLOCK = 32 * 1024
CHUNK_HEADER = 7  # crc32 (4), length (2), type (1)
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


class OfflineRunError(UserError):
    """An offline run's files cannot be read; the message names the file."""


@dataclass
class OfflineRun:
    path: Path  # the .wandb file
    id: str = ""
    name: str = ""
    group: str = ""
    job_type: str = ""
    project: str = ""
    entity: str = ""
    tags: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)  # top-level config keys -> value (as logged)
    history: list[dict[str, Any]] = field(default_factory=list)  # one dict per logged row (with _step)
    summary: dict[str, Any] = field(default_factory=dict)
    step_metrics: dict[str, str] = field(default_factory=dict)  # define_metric: name or glob -> its x axis

    @property
    def history_keys(self) -> set[str]:
        return {k for row in self.history for k in row if not k.startswith("_")}

    @property
    def summary_keys(self) -> set[str]:
        return {k for k in self.summary if not k.startswith("_")}

    @property
    def keys(self) -> set[str]:
        return self.history_keys | self.summary_keys

    # The two reads drift_exp.report.wandb_io makes of a public-API run, so an offline run can stand in for one.
    @property
    def summary_metrics(self) -> dict[str, Any]:
        return self.summary

    def scan_history(self, keys: list[str] | None = None) -> list[dict[str, Any]]:
        """The history rows; with `keys`, only the rows holding all of them, cut to them (as the API does)."""
        if keys is None:
            return [dict(row) for row in self.history]
        return [{k: row[k] for k in keys} for row in self.history if all(k in row for k in keys)]

    def column(self, key: str) -> list[tuple[Any, Any]]:
        """(step value, value) of every history row holding `key`; the step is the key's define_metric axis
        (e.g. `iteration`) where the row has it, else the row's _step."""
        axis = self.step_metric(key)
        return [(row.get(axis, row.get("_step")) if axis else row.get("_step"), row[key])
                for row in self.history if key in row]

    def step_metric(self, key: str) -> str | None:
        """The x axis define_metric gave `key` (an exact name first, then the longest matching glob)."""
        if key in self.step_metrics:
            return self.step_metrics[key]
        globs = [g for g in self.step_metrics if g.endswith("*") and key.startswith(g[:-1])]
        return self.step_metrics[max(globs, key=len)] if globs else None


def _chunks(data: bytes, path: Path):
    """(type, payload) of every chunk after the header; a bad checksum is an error naming the offset."""
    pos = len(HEADER)
    while pos < len(data):
        left = BLOCK - pos % BLOCK
        if left < CHUNK_HEADER:  # the writer pads a block's tail that cannot hold a chunk header
            pos += left
            continue
        if pos + CHUNK_HEADER > len(data):
            return  # a torn tail (the writer was killed): what came before is complete
        crc, length, kind = struct.unpack_from("<IHB", data, pos)
        if kind == 0 and length == 0:  # zero padding to the end of the block
            pos += left
            continue
        payload = data[pos + CHUNK_HEADER:pos + CHUNK_HEADER + length]
        if len(payload) < length:
            return
        if zlib.crc32(payload, zlib.crc32(bytes([kind]))) & 0xFFFFFFFF != crc:
            raise OfflineRunError(f"{path}: corrupt record at byte {pos} (checksum mismatch)")
        yield kind, payload
        pos += CHUNK_HEADER + length


def iter_records(path: Path):
    """Every `wandb_internal_pb2.Record` of a .wandb file, in order."""
    from wandb.proto import wandb_internal_pb2 as pb

    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise OfflineRunError(f"{path}: cannot read ({err.strerror or err})") from None
    if not data.startswith(HEADER):
        raise OfflineRunError(f"{path}: not a W&B transaction log (no ':W&B' header)")
    parts: list[bytes] = []
    for kind, payload in _chunks(data, path):
        if kind == FULL:
            parts = [payload]
        elif kind == FIRST:
            parts = [payload]
            continue
        elif kind == MIDDLE:
            parts.append(payload)
            continue
        else:
            parts.append(payload)
        record = pb.Record()
        try:
            record.ParseFromString(b"".join(parts))
        except Exception as err:  # protobuf's DecodeError
            raise OfflineRunError(f"{path}: a record does not parse ({err})") from None
        parts = []
        yield record


def _value(item: Any) -> Any:
    return json.loads(item.value_json) if item.value_json else None


def _update(into: dict[str, Any], items: Any) -> dict[str, Any]:
    """Apply items (key or nested_key, value_json) to a dict: a nested key (the summary of a logged table,
    ["pairs/preview", "_type"]) fills a dict under its first part, as W&B shows it."""
    for item in items:
        path = [item.key] if item.key else list(item.nested_key)
        node = into
        for part in path[:-1]:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[path[-1]] = _value(item)
    return into


def _remove(into: dict[str, Any], items: Any) -> None:
    for item in items:
        path = [item.key] if item.key else list(item.nested_key)
        node = into
        for part in path[:-1]:
            node = node.get(part) if isinstance(node.get(part), dict) else {}
        node.pop(path[-1], None)


def read_offline_run(path: Path) -> OfflineRun:
    """An offline run from its folder (offline-run-*) or its .wandb file."""
    path = Path(path)
    if path.is_dir():
        files = sorted(path.glob("*.wandb"))
        if len(files) != 1:
            raise OfflineRunError(f"{path}: expected one .wandb file in an offline-run folder, found {len(files)}")
        path = files[0]
    run = OfflineRun(path=path)
    for rec in iter_records(path):
        which = rec.WhichOneof("record_type")
        if which == "run":
            r = rec.run  # a run may be recorded more than once (an update may leave fields empty)
            for attr, value in (("id", r.run_id), ("name", r.display_name), ("group", r.run_group),
                                ("job_type", r.job_type), ("project", r.project), ("entity", r.entity)):
                if value:
                    setattr(run, attr, value)
            run.tags = list(dict.fromkeys([*run.tags, *r.tags]))
            _update(run.config, r.config.update)
        elif which == "config":
            _update(run.config, rec.config.update)
        elif which == "history":
            row = _update({}, rec.history.item)
            if rec.history.HasField("step"):
                row.setdefault("_step", rec.history.step.num)
            run.history.append(row)
        elif which == "summary":
            _update(run.summary, rec.summary.update)
            _remove(run.summary, rec.summary.remove)
        elif which == "metric":
            m = rec.metric
            if m.step_metric:
                run.step_metrics[m.name or m.glob_name] = m.step_metric
    if not run.id:
        raise OfflineRunError(f"{path}: no run record in it (is W&B still writing it? a run's files are complete "
                              "once its process, or wandb.teardown(), has ended)")
    return run


def find_offline_runs(root: Path) -> list[OfflineRun]:
    """Every offline run under `root` (searched for offline-run-*/run-*.wandb), one per run id: the pieces of a
    resumed run (several folders with one id) are merged in time order (history appended, summary updated)."""
    root = Path(root)
    files = sorted(root.glob("**/offline-run-*/run-*.wandb"), key=lambda p: p.parent.name)
    merged: dict[str, OfflineRun] = {}
    for f in files:
        run = read_offline_run(f)
        if run.id in merged:
            into = merged[run.id]
            into.history += run.history
            into.summary.update(run.summary)
            into.config.update(run.config)
            into.step_metrics.update(run.step_metrics)
            into.tags = list(dict.fromkeys([*into.tags, *run.tags]))
        else:
            merged[run.id] = run
    return list(merged.values())
