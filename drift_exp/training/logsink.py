"""The training curves' way out of the training job, which never opens W&B itself.

`TrainLogSink` is a TrainerCallback for train_dpo's `callbacks`: on the main rank it appends every log
of the Trainer (TRL's loss, rewards, the section 5 signal..., with its optimizer `step`) as one JSON
line to iter_k/train_log.jsonl and, when the job runs in the orchestrator (launcher=inline), hands the
same row to `forward` at once. When the job is a child process (launcher=local/slurm), the orchestrator
reads the new lines with `TrainLogTail` while it waits for the child, so the curves still arrive live,
through the orchestrator's one W&B run (drift_exp/tracking.py).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

TRAIN_LOG = "train_log.jsonl"  # in the training stage's folder

Row = dict[str, Any]


class TrainLogSink(TrainerCallback):
    def __init__(self, path: Path, forward: Callable[[Row], None] | None = None):
        self.path = Path(path)
        self.forward = forward

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kw: Any) -> None:
        if not logs or not state.is_world_process_zero:
            return
        row = {"step": state.global_step, **{k: v for k, v in logs.items() if isinstance(v, (int, float, str))}}
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
        if self.forward is not None:
            self.forward(row)


class TrainLogTail:
    """Reads the rows a TrainLogSink appended since the last call (a partly written last line waits)."""

    def __init__(self, path: Path, on_row: Callable[[Row], None]):
        self.path, self.on_row, self.offset = Path(path), on_row, 0

    def __call__(self) -> None:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return
        end = data.rfind(b"\n") + 1
        for line in data[:end].splitlines():
            if line.strip():
                self.on_row(json.loads(line))
        self.offset += end
