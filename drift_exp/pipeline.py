"""The DRIFT loop (paper, Algorithm 1), one resumable stage at a time.

    filter DSAT signals                          -> data/records.jsonl, data/stats.json
    evaluate the untouched model (Base row)      -> base/eval/
    warm start on DSAT->SAT seed pairs           -> iter_0/pairs.jsonl, iter_0/checkpoint/
    evaluate pi_0                                -> iter_0/eval/
    for k = 1..K:
        requests  what to sample from pi_{k-1}   -> iter_k/requests.jsonl
        generate  sample it                      -> iter_k/completions.jsonl
        pairs     chosen / rejected per Table 2  -> iter_k/pairs.jsonl
        train     one epoch of DPO               -> iter_k/checkpoint/, iter_k/metrics.json
        eval      evaluate pi_k                  -> iter_k/eval/

Each line is an entry of the stage table (drift_exp.names.STAGES: what it reads, writes and records,
where it runs); the schedule lists them for this run and the runner (drift_exp/runner.py) takes each
through resume, inputs, launch, DONE marker, W&B and run.stop_after.
"""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from drift_exp.config import Config
from drift_exp.credentials import saved_config
from drift_exp.hub import check_hub
from drift_exp.methods import build_method
from drift_exp.models import set_trust_remote_code
from drift_exp.names import experiment_name, parse_stop_after
from drift_exp.provenance import save_hydra_record
from drift_exp.records import write_text
from drift_exp.runner import Runner, build_schedule, final_policy
from drift_exp.stages import RunDir
from drift_exp.tracking import Tracker

log = logging.getLogger(__name__)


def run(cfg: Config, dcfg: DictConfig, run_dir: Path | None = None) -> Path:
    """Run (or resume) one experiment; return its run directory. One process per run directory."""
    if run_dir is None:
        from hydra.core.hydra_config import HydraConfig

        run_dir = Path(HydraConfig.get().runtime.output_dir)
    if cfg.run.preflight:  # python -m drift_exp.plan's checks, before any data is read or anything written
        from drift_exp.plan import preflight

        preflight(cfg, run_dir)
    rd = RunDir(run_dir, cfg.run.overwrite)
    with rd.locked():
        return _run(rd, cfg, dcfg)


def _run(rd: RunDir, cfg: Config, dcfg: DictConfig) -> Path:
    check_hub(cfg)  # offline: whatever the run needs from the hub must be cached (before hours of work)
    set_trust_remote_code(cfg.model.trust_remote_code)
    method = build_method(cfg.method)
    # Check the config against every finished stage before anything runs or is written.
    schedule = build_schedule(rd, cfg, method)
    rd.apply()  # only now: drop changed evaluations' markers, discard from a refused stage (run.overwrite)
    saved = saved_config(dcfg)  # ${oc.env:...} references kept, credentials masked
    write_text(rd.root / "config.yaml", OmegaConf.to_yaml(saved))
    save_hydra_record(rd.root, dcfg)
    tracker = Tracker(cfg, rd.root, saved)
    log.info("experiment %s in %s", experiment_name(cfg), rd.root)

    with Runner(rd, cfg, method, tracker, schedule) as runner:
        for step in schedule:  # prepare, base/eval, iteration 0 (train, eval), then k = 1..K as in the docstring
            if runner.run(step):  # run.stop_after
                return rd.root
    log.info("finished %s: final policy %s", experiment_name(cfg), final_policy(rd, cfg))
    return rd.root


def stop_here(cfg: Config, stage: str, k: int | None = None) -> bool:
    """True after the stage named by run.stop_after (a bare iteration stage means iteration 1)."""
    target = cfg.run.stop_after
    return bool(target) and parse_stop_after(target) == (stage, k)
