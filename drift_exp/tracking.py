"""W&B: one run per experiment, written by the orchestrator alone.

Layout (the keys are drift_exp.names' WANDB_* constants):

- one W&B run per experiment: every iteration, the warm start (iteration 0) and the Base row in it. Its
  name is the experiment name, its group the experiment name without the seed, so a group holds the
  seeds of one configuration and W&B's grouping averages them;
- the numbers a table or Figure 2 compares (eval/, stage/, signal/, heldout/) are history rows that
  carry `iteration`, plotted against it (define_metric), so "x = iteration, one line per method" is an
  ordinary line chart;
- the training curves are train/* against train/global_step, the optimizer steps summed over the
  iterations (train/iteration_step restarts in each training stage, train/iteration says which);
- the Base row's evaluation goes to the summary as base/eval/*.

One writer: only this process opens the run. Generation, evaluation and training children run with
WANDB_MODE=disabled; the training job's curves reach the run through iter_k/train_log.jsonl, which its
main rank appends to at every log (drift_exp.training.logsink) and which the runner reads while it waits
(inline, the same callback hands the rows over directly). The run id is kept in `<run dir>/wandb_id`, so a
resumed experiment logs into the same run; offline, each invocation that logs something leaves its own
`wandb/offline-run-*` folder of that id (a resume adds one), and `wandb sync` uploads them in order.
Nothing is opened until there is something to log: rerunning a finished experiment writes no folder.

With no API key the run is offline (files under the run directory), so nothing waits on the network.
"""

from __future__ import annotations

import logging
import math
import os
import secrets
import string
from pathlib import Path
from typing import Any

from drift_exp.config import Config, TrackingMode
from drift_exp.names import (
    WANDB_ITERATION,
    WANDB_PER_ITERATION,
    WANDB_TRAIN,
    WANDB_TRAIN_ITERATION_STEP,
    WANDB_TRAIN_STEP,
    experiment_group,
    experiment_name,
)

log = logging.getLogger(__name__)

ID_FILE = "wandb_id"  # <run dir>/wandb_id: the experiment's W&B run id
JOB_TYPE = "experiment"
# What a child process of the run gets in its environment: it never opens a W&B run of its own.
CHILD_ENV = {"WANDB_MODE": "disabled", "WANDB_SILENT": "true"}
_TAG_CHARS = 64  # W&B's limit on a tag's length


def resolve_mode(mode: TrackingMode) -> str:
    """auto -> online only when a key is configured (env or ~/.netrc), never a network wait otherwise."""
    if os.environ.get("WANDB_MODE") in ("offline", "disabled", "online") and mode == TrackingMode.auto:
        return os.environ["WANDB_MODE"]
    if mode != TrackingMode.auto:
        return mode.value
    if os.environ.get("WANDB_API_KEY"):
        return "online"
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    if netrc.exists() and "api.wandb.ai" in netrc.read_text(errors="ignore"):
        return "online"
    return "offline"


def _new_run_id() -> str:
    alphabet = string.ascii_lowercase + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(8))


def _env_list(name: str) -> list[str]:
    return [t.strip() for t in os.environ.get(name, "").split(",") if t.strip()]


def identity(cfg: Config) -> dict[str, Any]:
    """Where the experiment's run goes and what it is called: the tracking.* settings, else the WANDB_*
    variables, else drift_exp's own (project drift_exp, name = experiment, group = experiment without seed)."""
    t = cfg.tracking
    tags = [f"method:{cfg.method.name}", f"data:{cfg.data.name}", f"model:{cfg.model.name}",
            f"setting:{cfg.setting.name}", f"seed:{cfg.seed}"]
    if cfg.run.sweep_name != type(cfg.run)().sweep_name:  # a named sweep (sweeps/*.yaml sets it)
        tags.append(f"sweep:{cfg.run.sweep_name}")
    if cfg.run.variant:
        tags.append(f"variant:{cfg.run.variant}")
    tags += list(t.tags) if t.tags else _env_list("WANDB_TAGS")
    return {
        "project": t.project or os.environ.get("WANDB_PROJECT") or "drift_exp",
        "entity": t.entity or os.environ.get("WANDB_ENTITY") or None,
        "group": t.group or os.environ.get("WANDB_RUN_GROUP") or experiment_group(cfg),
        "name": t.name or os.environ.get("WANDB_NAME") or experiment_name(cfg),
        "notes": t.notes or os.environ.get("WANDB_NOTES") or None,
        "tags": list(dict.fromkeys(tag[:_TAG_CHARS] for tag in tags)),
        "job_type": JOB_TYPE,
    }


def _numbers(values: dict[str, Any]) -> dict[str, float]:
    """The finite int/float values of a flat dict (nested dicts, strings and booleans left out)."""
    return {k: v for k, v in values.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
            and math.isfinite(v)}


def prefixed(prefix: str, stats: dict[str, Any]) -> dict[str, Any]:
    """stats with every key under `prefix/`."""
    return {f"{prefix}/{k}": v for k, v in stats.items()}


class Tracker:
    """The experiment's W&B run, opened on first use and closed by `close` (the runner's exit)."""

    def __init__(self, cfg: Config, run_dir: Path, resolved_config: dict[str, Any]):
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.mode = resolve_mode(cfg.tracking.mode)
        self.resolved_config = resolved_config
        self._run = None

    @property
    def enabled(self) -> bool:
        return self.mode != "disabled"

    def run_id(self) -> str:
        id_file = self.run_dir / ID_FILE
        if not id_file.exists():
            id_file.write_text(_new_run_id() + "\n")
        return id_file.read_text().strip()

    @property
    def run(self):
        """The open W&B run (opened now if needed); None when tracking is disabled."""
        if self._run is None and self.enabled:
            import wandb

            os.environ.setdefault("WANDB_SILENT", "true")
            self._run = wandb.init(**identity(self.cfg), id=self.run_id(), resume="allow", dir=str(self.run_dir),
                                   mode=self.mode, config={**self.resolved_config,
                                                           "experiment": experiment_name(self.cfg)})
            self._run.define_metric(WANDB_ITERATION)
            for prefix in WANDB_PER_ITERATION:
                self._run.define_metric(f"{prefix}*", step_metric=WANDB_ITERATION)
            self._run.define_metric(WANDB_TRAIN_STEP)
            self._run.define_metric(f"{WANDB_TRAIN}*", step_metric=WANDB_TRAIN_STEP)
        return self._run

    def close(self) -> None:
        if self._run is not None:
            self._run.finish()
            self._run = None

    def log_iteration(self, k: int, values: dict[str, Any]) -> None:
        """Numbers of iteration k (keys under WANDB_PER_ITERATION prefixes) as one history row with `iteration`."""
        row = _numbers(values)
        if row and self.enabled:
            self.run.log({WANDB_ITERATION: k, **row})

    def log_train(self, k: int, offset: int, logs: dict[str, Any]) -> None:
        """One training log of iteration k (TRL's, with its `step`): train/*, x = train/global_step
        (offset: the optimizer steps of the iterations before k)."""
        if not self.enabled:
            return
        step = int(logs.get("step", 0))
        row = _numbers({f"{WANDB_TRAIN}{key}": v for key, v in logs.items() if key != "step"})
        self.run.log({**row, WANDB_TRAIN_STEP: offset + step, WANDB_TRAIN_ITERATION_STEP: step,
                      f"{WANDB_TRAIN}iteration": k})

    def summary(self, values: dict[str, Any]) -> None:
        """Numbers that are no curve (the Base row: base/eval/*) in the run summary."""
        values = _numbers(values)
        if values and self.enabled:
            self.run.summary.update(values)
