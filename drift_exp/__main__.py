"""`python -m drift_exp [overrides]`: compose the config, validate it, run the pipeline."""

import logging
import os
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from drift_exp.config import Config, register_configs, validate
from drift_exp.credentials import check_credentials
from drift_exp.errors import UserError
from drift_exp.multirun import record_failure
from drift_exp.names import variant_of
from drift_exp.stages import RunDir

register_configs()  # before @hydra.main composes: the schema, the sweeps, the run-directory resolver
log = logging.getLogger("drift_exp")


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(dcfg: DictConfig) -> None:
    if dcfg.run.variant is None:  # recorded in config.yaml: the ablation's name without the command line
        dcfg.run.variant = variant_of(HydraConfig.get().overrides.task, dcfg)
    cfg: Config = OmegaConf.to_object(dcfg)
    if os.environ.get("SLURM_PROCID", "0") != "0" and cfg.launcher.name == "slurm":
        return  # one orchestrator per experiment: the job's first task; the others only lend their node
    try:
        validate(cfg)  # before any heavy import: a bad value fails in well under a second
        check_credentials(dcfg)  # a literal password or token would end up in config.yaml and W&B
        # One process per run directory, refused before the heavy imports (the pipeline holds it on).
        with RunDir(Path(HydraConfig.get().runtime.output_dir), cfg.run.overwrite).locked():
            from drift_exp.pipeline import run  # torch, transformers, trl load here

            run(cfg, dcfg)
    except Exception as err:
        multirun = HydraConfig.get().mode == RunMode.MULTIRUN
        if isinstance(err, UserError):
            log.error("%s", err)  # a clear message, no traceback
        elif not multirun:
            raise
        else:
            log.exception("%s failed", HydraConfig.get().runtime.output_dir)
        if not multirun:
            sys.exit(2)
        # The other jobs go on (Hydra's sweeper would stop at the end of the batch with this error alone); the
        # multirun ends with the list of failed jobs and exit status 1 (drift_exp.multirun).
        record_failure(err)


if __name__ == "__main__":
    main()
