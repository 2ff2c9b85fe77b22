"""W&B: one run per iteration (the warm start is iteration 0), grouped by experiment.

The run id is kept in `iter_k/wandb_id`, so every stage of an iteration and every resume logs
into the same run. With no API key the run is offline (files under the run directory; upload
later with `wandb sync`), so nothing waits on the network.
"""

from __future__ import annotations

import logging
import os
import secrets
import string
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from drift_exp.config import Config, TrackingMode
from drift_exp.names import experiment_name, iteration_folder, iteration_run_name, wandb_job_type

log = logging.getLogger(__name__)


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


class Tracker:
    """Holds at most one open W&B run: iteration k's. Stages log their summaries through `log`."""

    def __init__(self, cfg: Config, run_dir: Path, resolved_config: dict[str, Any]):
        self.cfg = cfg
        self.run_dir = run_dir
        self.mode = resolve_mode(cfg.tracking.mode)
        self.resolved_config = resolved_config
        self.run = None
        self.k: int | None = None

    @property
    def report_to(self) -> str:
        """What TRL's Trainer should report to (in this process it reuses the open run)."""
        return "none" if self.mode == "disabled" else "wandb"

    def run_id(self, k: int) -> str:
        id_file = self.run_dir / iteration_folder(k) / "wandb_id"
        if not id_file.exists():
            id_file.parent.mkdir(parents=True, exist_ok=True)
            id_file.write_text(_new_run_id() + "\n")
        return id_file.read_text().strip()

    def _identity(self, k: int) -> dict[str, Any]:
        c = self.cfg
        return {
            "project": c.tracking.project,
            "entity": c.tracking.entity,
            "group": experiment_name(c),
            "name": iteration_run_name(c, k),
            "job_type": wandb_job_type(k),
            "tags": [f"method:{c.method.name}", f"data:{c.data.name}", f"model:{c.model.name}",
                     f"setting:{c.setting.name}"],
            "id": self.run_id(k),
        }

    @contextmanager
    def iteration(self, k: int) -> Iterator[Tracker]:
        """Open iteration k's run; it is closed in `finally`, so a crash never leaks it into the next job."""
        self.k = k
        self._open()
        try:
            yield self
        finally:
            self._close()
            self.k = None

    def _open(self) -> None:
        if self.mode == "disabled" or self.k is None:
            return
        import wandb

        os.environ.setdefault("WANDB_SILENT", "true")
        self.run = wandb.init(**self._identity(self.k), config={**self.resolved_config, "iteration": self.k,
                                                                "experiment": experiment_name(self.cfg)},
                              resume="allow", dir=str(self.run_dir), mode=self.mode)

    def _close(self) -> None:
        if self.run is not None:
            self.run.finish()
            self.run = None

    def log(self, prefix: str, stats: dict[str, Any]) -> None:
        """Put a stage's numbers in the run summary (the curves come from TRL)."""
        if self.run is not None:
            self.run.summary.update({f"{prefix}/{k}": v for k, v in stats.items() if isinstance(v, (int, float))})

    @contextmanager
    def paused(self) -> Iterator[dict[str, str]]:
        """Close the run while a child process logs into it; yield the env that points the child at it."""
        if self.mode == "disabled" or self.k is None:
            yield {"WANDB_MODE": "disabled"}
            return
        ident = self._identity(self.k)
        env = {"WANDB_RUN_ID": ident["id"], "WANDB_RESUME": "allow", "WANDB_PROJECT": ident["project"],
               "WANDB_RUN_GROUP": ident["group"], "WANDB_NAME": ident["name"], "WANDB_JOB_TYPE": ident["job_type"],
               "WANDB_TAGS": ",".join(ident["tags"]), "WANDB_DIR": str(self.run_dir), "WANDB_MODE": self.mode,
               "WANDB_SILENT": "true"}
        if ident["entity"]:
            env["WANDB_ENTITY"] = ident["entity"]
        self._close()
        try:
            yield env
        finally:
            self._open()
