"""A multirun in which a job failed ends with the list of failed jobs and exit status 1.

Hydra records a failed job and goes on with the others, then exits 0. This callback (registered in
conf/config.yaml under hydra.callbacks) notes each failed job in `<sweep dir>/.failed_jobs` as it ends (the
file works across processes: submitit runs each job in its own) and, when the multirun is over, logs the
list and exits 1, so scripts and schedulers see the failure.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

log = logging.getLogger("drift_exp")

FAILED = ".failed_jobs"


def _record(config: DictConfig) -> Path:
    return Path(config.hydra.sweep.dir) / FAILED


class FailedJobs(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        _record(config).unlink(missing_ok=True)

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if job_return.status != JobStatus.FAILED:
            return
        hydra = config.hydra
        if hydra.mode != RunMode.MULTIRUN:
            return
        error = job_return._return_value  # the exception; .return_value would raise it
        line = {"job": hydra.job.num, "dir": hydra.runtime.output_dir, "overrides": list(hydra.overrides.task),
                "error": f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"}
        path = _record(config)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(line) + "\n")

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        path = _record(config)
        if not path.exists():
            return
        failed = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        if not failed:
            return
        lines = [f"  #{f['job']} {' '.join(f['overrides'])}\n      {f['dir']}\n      {f['error']}" for f in failed]
        log.error("%d job(s) of the multirun failed (rerun the same command: finished stages are kept):\n%s",
                  len(failed), "\n".join(lines))
        sys.exit(1)
