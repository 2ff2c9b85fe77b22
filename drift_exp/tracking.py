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

from drift_exp.config import Config, TrackingMode, experiment_name

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
    def __init__(self, cfg: Config, run_dir: Path, resolved_config: dict[str, Any]):
        self.cfg = cfg
        self.run_dir = run_dir
        self.mode = resolve_mode(cfg.tracking.mode)
        self.resolved_config = resolved_config

    @property
    def report_to(self) -> str:
        """What TRL's Trainer should report to (it reuses the run opened by `iteration`)."""
        return "none" if self.mode == "disabled" else "wandb"

    @contextmanager
    def iteration(self, k: int) -> Iterator[Any]:
        """The W&B run of iteration k, closed in `finally` so a crash never leaks it into the next job."""
        if self.mode == "disabled":
            yield None
            return
        import wandb

        id_file = self.run_dir / f"iter_{k}" / "wandb_id"
        id_file.parent.mkdir(parents=True, exist_ok=True)
        if id_file.exists():
            run_id = id_file.read_text().strip()
        else:
            run_id = _new_run_id()
            id_file.write_text(run_id + "\n")
        c = self.cfg
        name = experiment_name(c)
        os.environ.setdefault("WANDB_SILENT", "true")
        run = wandb.init(
            project=c.tracking.project,
            entity=c.tracking.entity,
            group=name,
            name=f"{name}-iter{k}",
            job_type="warm_start" if k == 0 else "iteration",
            tags=[f"method:{c.method.name}", f"data:{c.data.name}", f"model:{c.model.name}",
                  f"setting:{c.setting.name}"],
            config={**self.resolved_config, "iteration": k, "experiment": name},
            id=run_id,
            resume="allow",
            dir=str(self.run_dir),
            mode=self.mode,
        )
        try:
            yield run
        finally:
            run.finish()
