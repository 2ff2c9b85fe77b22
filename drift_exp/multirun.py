"""A multirun in which a job failed ends with the list of failed jobs and exit status 1.

A failed job is noted in `<sweep dir>/.failed_jobs` (a file, so it works across processes: submitit runs
each job in its own): by drift_exp.__main__ when the job stops with an error (`record_failure`; the job then
returns, so Hydra's sweeper goes on with the other jobs instead of stopping with this one error), or by
this callback for a job Hydra itself saw fail. When the multirun is over, the callback (registered in
conf/config.yaml under hydra.callbacks) logs the list and exits 1, so scripts and schedulers see it.
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


def _note(path: Path, job: Any, output_dir: str, overrides: list[str], error: BaseException) -> None:
    first = str(error).splitlines()[0] if str(error) else ""
    line = {"job": job, "dir": output_dir, "overrides": overrides, "error": f"{type(error).__name__}: {first}"}
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(line) + "\n")


def record_failure(error: BaseException) -> None:
    """Note the running multirun job as failed (called inside the job, where HydraConfig is set)."""
    from hydra.core.hydra_config import HydraConfig

    hc = HydraConfig.get()
    _note(Path(hc.sweep.dir) / FAILED, hc.job.num, hc.runtime.output_dir, list(hc.overrides.task), error)


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
        _note(_record(config), hydra.job.num, hydra.runtime.output_dir, list(hydra.overrides.task), error)

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
