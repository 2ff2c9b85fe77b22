"""`python -m drift_exp [overrides]`: compose the config, validate it, run the pipeline.

Order of the checks: the command line's values for literal credentials (before Hydra composes: its own errors
print values), then the composed config's keys (a `+key` the schema lacks), its credentials (before anything
prints or stores a value), its values (validate), the kinds of its paths and the model folders; only then is the
run directory locked and written. Every log line is masked for credentials (drift_exp/credentials.py)."""

import logging
import os
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from drift_exp.config import Config, register_configs
from drift_exp.config_keys import check_known_keys, check_stop_after
from drift_exp.credentials import check_credentials, check_overrides, install_log_mask, mask_text
from drift_exp.errors import UserError
from drift_exp.multirun import record_failure
from drift_exp.names import variant_of
from drift_exp.plan import validate  # the config check: sections, method, this machine
from drift_exp.provenance import check_input_paths
from drift_exp.run_dir_check import disk_problem
from drift_exp.stages import RunDir

register_configs()  # before @hydra.main composes: the schema, the cells, the run-directory resolver
log = logging.getLogger("drift_exp")


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(dcfg: DictConfig) -> None:
    install_log_mask()  # Hydra has configured the console and the run's log file by now
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    own_log = _fresh_job_log(run_dir)  # the log file Hydra just opened in a folder holding nothing else
    started = False
    if dcfg.run.variant is None:  # recorded in config.yaml: the ablation's name without the command line
        dcfg.run.variant = variant_of(HydraConfig.get().overrides.task, dcfg)
    try:
        check_known_keys(dcfg)  # +trainer.learnig_rate=1 is refused like the plain form
        check_credentials(dcfg)  # a literal password or token would end up in config.yaml and W&B
        cfg: Config = OmegaConf.to_object(dcfg)
        if os.environ.get("SLURM_PROCID", "0") != "0" and cfg.launcher.name == "slurm":
            return  # one orchestrator per experiment: the job's first task; the others only lend their node
        check_stop_after(cfg.run.stop_after)  # iter_0/<stage>: the warm start has a name of its own
        validate(cfg)  # before any heavy import: a bad value fails in well under a second
        check_input_paths(cfg)  # FIFOs, devices, a model.path that is no model: before anything is written
        # One process per run directory, refused before the heavy imports (the pipeline holds it on).
        with RunDir(run_dir, cfg.run.overwrite).locked():
            started = True
            from drift_exp.pipeline import run  # torch, transformers, trl load here

            run(cfg, dcfg)
    except Exception as err:
        multirun = HydraConfig.get().mode == RunMode.MULTIRUN
        if isinstance(err, UserError):
            log.error("%s", mask_text(str(err)))  # a clear message, no traceback
            if not started:
                _drop_job_log(own_log)  # a refused run leaves no outputs/<exp>/__main__.log behind
            err.args = (mask_text(str(err)),)  # the multirun's list of failed jobs repeats it
        elif (why := disk_problem(err, run_dir)) is not None:  # a full or read-only disk: one line
            log.error("%s: cannot write the run directory (%s); free disk space or fix its permissions and rerun the "
                      "command (finished stages are kept)", run_dir, mask_text(why))
        elif not multirun:
            raise
        else:
            log.exception("%s failed", run_dir)
        if not multirun:
            sys.exit(2)
        # The other jobs go on (Hydra's sweeper would stop at the end of the batch with this error alone); the
        # multirun ends with the list of failed jobs and exit status 1 (drift_exp.multirun).
        record_failure(err)


def _fresh_job_log(run_dir: Path) -> logging.FileHandler | None:
    """Hydra's file handler for the job's log when that file is empty and alone in the run directory (so this
    process made it), else None."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            path = Path(handler.baseFilename)
            try:
                alone = path.parent == run_dir.resolve() and [p.name for p in run_dir.iterdir()] == [path.name]
                if alone and path.stat().st_size == 0:
                    return handler
            except OSError:
                return None
    return None


def _drop_job_log(handler: logging.FileHandler | None) -> None:
    if handler is None:
        return
    logging.getLogger().removeHandler(handler)
    handler.close()
    path = Path(handler.baseFilename)
    path.unlink(missing_ok=True)
    try:
        path.parent.rmdir()  # the run directory Hydra made for this refused run, now empty
    except OSError:
        pass


def cli() -> None:
    """`drift-exp` and `python -m drift_exp`: the command line's overrides are checked for credentials before
    Hydra sees them (Hydra's own errors would print a value), then Hydra composes and runs `main`."""
    try:
        check_overrides(sys.argv[1:])
    except UserError as err:
        sys.stderr.write(f"drift_exp: error: {err}\n")
        sys.exit(2)
    main()


if __name__ == "__main__":
    cli()
