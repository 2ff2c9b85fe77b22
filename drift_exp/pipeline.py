"""The DRIFT loop (paper, Algorithm 1), one resumable stage at a time.

    filter DSAT signals                          -> data/records.jsonl, data/stats.json
    warm start on DSAT->SAT seed pairs           -> iter_0/
    for k = 1..K:
        requests  what to sample from pi_{k-1}   -> iter_k/requests.jsonl
        generate  sample it                      -> iter_k/completions.jsonl
        pairs     chosen / rejected per Table 2  -> iter_k/pairs.jsonl
        train     one epoch of DPO               -> iter_k/checkpoint/, iter_k/metrics.json
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from drift_exp.config import Config, result_fields, scorer_path
from drift_exp.credentials import saved_config
from drift_exp.data.load import detect_format, load_records, select_records
from drift_exp.data.wildfeedback import EXTRACTOR_VERSION
from drift_exp.errors import UserError
from drift_exp.evaluation import flat_metrics
from drift_exp.evaluation.base import base_eval_stage, base_stats
from drift_exp.heldout import used_counts
from drift_exp.hub import check_hub
from drift_exp.launch import run_stage
from drift_exp.methods import PairBuilder, build_method, seed_pairs
from drift_exp.models import base_model_path, set_trust_remote_code
from drift_exp.names import (
    EVAL,
    GENERATE,
    PAIRS,
    PREPARE,
    REQUESTS,
    TRAIN,
    WARM_START,
    experiment_name,
    parse_stop_after,
)
from drift_exp.preview import write_preview
from drift_exp.provenance import data_identity, save_hydra_record
from drift_exp.records import Completion, FeedbackRecord, read_jsonl, write_json, write_jsonl, write_text
from drift_exp.stages import RunDir, Stage, read_markers
from drift_exp.tracking import Tracker
from drift_exp.training.diagnostics import flat_signal

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
    plan = check_stages(rd, cfg, method)
    rd.apply()  # only now: drop changed evaluations' markers, discard from a refused stage (run.overwrite)
    saved = saved_config(dcfg)  # ${oc.env:...} references kept, credentials masked
    write_text(rd.root / "config.yaml", OmegaConf.to_yaml(saved))
    save_hydra_record(rd.root, dcfg)
    tracker = Tracker(cfg, rd.root, saved)
    log.info("experiment %s in %s", experiment_name(cfg), rd.root)

    # Filter: extract the DSAT signals (and SAT replies, DSAT->SAT seeds) from the wild data, and
    # keep the records the method iterates on (DSAT for DRIFT / IterDPO, SAT for SPIN; Table 2).
    records = prepare(plan, cfg, method)
    if stop_here(cfg, PREPARE):
        return rd.root
    targets = select_records(records, method.record_kind(records), cfg.setting, cfg.seed)

    # Base row: the untouched starting model, evaluated once (shared by every job of a sweep).
    base_eval_stage(rd.root, cfg, tracker)

    # Warm start (iteration 0): DPO on the DSAT->SAT seed pairs.
    base = base_model_path(cfg.model)
    warm_start(plan, cfg, rd, records, tracker)
    if stop_here(cfg, WARM_START):
        return rd.root

    for k in range(1, cfg.iterations + 1):
        st = plan.iterations[k]
        if all(s.done for s in st.values()):
            continue
        with tracker.iteration(k):
            # Sampling: what to ask the current policy pi_{k-1} (Table 2), then ask it.
            requests_stage(st[REQUESTS], method, targets, k, tracker)
            if stop_here(cfg, REQUESTS, k):
                return rd.root
            if not st[GENERATE].done:
                rd.require(st[REQUESTS].folder / "requests.jsonl", st[REQUESTS].id)
            completions = generate_stage(st[GENERATE], cfg, rd, k, tracker, needed=not st[PAIRS].done)
            if stop_here(cfg, GENERATE, k):
                return rd.root
            # Pairs: DRIFT keeps the real DSAT reply as rejected, the fresh sample as chosen.
            pairs_stage(st[PAIRS], cfg, method, records, completions, k, tracker)
            if stop_here(cfg, PAIRS, k):
                return rd.root
            # Loss update: one epoch of DPO from pi_{k-1}.
            if not st[TRAIN].done:
                rd.require(st[PAIRS].folder / "pairs.jsonl", st[PAIRS].id)
                train_stage(st[TRAIN], cfg, rd, k, tracker)
            if stop_here(cfg, TRAIN, k):
                return rd.root
            # Evaluate pi_k (benchmarks per eval.benchmarks).
            eval_stage(st[EVAL], cfg, rd, k, tracker)
            if stop_here(cfg, EVAL, k):
                return rd.root
    log.info("finished %s: final policy %s", experiment_name(cfg), rd.checkpoint_after(cfg.iterations, base))
    return rd.root


@dataclass
class Plan:
    """Every stage of the run, looked up (and checked against its DONE marker) in pipeline order."""

    prepare: Stage
    records: list[FeedbackRecord]
    prepare_stats: dict[str, Any] | None  # extracted now (prepare not done yet): written by prepare()
    warm_start: Stage
    warm_eval: Stage
    iterations: dict[int, dict[str, Stage]]


def check_stages(rd: RunDir, cfg: Config, method: PairBuilder) -> Plan:
    """Look up every stage in order; a finished stage whose config changed raises StageConflict here,
    before anything is written. Reads the records (extracting them when prepare has not finished:
    which stages follow depends on them)."""
    prep = rd.stage(None, PREPARE, "", prepare_section(cfg))
    stats = None
    if prep.done:
        records = read_jsonl(rd.require(prep.folder / "records.jsonl", prep.id), FeedbackRecord)
    else:
        records, stats = load_records(cfg.data, cfg.seed)
    warm = rd.stage(0, TRAIN, prep.key, {"model": result_fields(cfg.model), "trainer": training_section(cfg),
                                           "seed": cfg.seed})
    warm_eval = rd.stage(0, EVAL, warm.key, eval_section(cfg))
    iterations = {}
    key = warm.key
    for k in range(1, cfg.iterations + 1):
        st = {}
        parent = key
        for name, section in iteration_sections(cfg, k, method.needs_scorer(records)).items():
            st[name] = rd.stage(k, name, parent, section)
            parent = st[name].key
        key = st[TRAIN].key  # the next iteration hangs off the training, not the evaluation
        st[EVAL] = rd.stage(k, EVAL, key, eval_section(cfg))
        iterations[k] = st
    return Plan(prep, records, stats, warm, warm_eval, iterations)


def iteration_sections(cfg: Config, k: int, scored: bool) -> dict[str, dict[str, Any]]:
    """The config each stage of iteration k reads (its DONE marker records these: result-affecting fields only)."""
    scorer = {**result_fields(cfg.scorer), "path": scorer_path(cfg)} if scored else None
    return {
        REQUESTS: {"method": result_fields(cfg.method), "setting": result_fields(cfg.setting), "iteration": k},
        GENERATE: {"generation": result_fields(cfg.generation), "seed": cfg.seed},
        PAIRS: {"method": result_fields(cfg.method), "scorer": scorer},
        TRAIN: {"trainer": training_section(cfg), "seed": cfg.seed},
    }


def training_section(cfg: Config) -> dict[str, Any]:
    """The trainer settings that change the trained weights (neutral knobs such as signal_tau left out)."""
    return result_fields(cfg.trainer)


def prepare_section(cfg: Config) -> dict[str, Any]:
    """What the extracted records depend on, the data file's identity included (a replaced file is a change)."""
    section = {"data": result_fields(cfg.data), "setting": result_fields(cfg.setting), "method": cfg.method.kind,
               "seed": cfg.seed, "data_file": data_identity(cfg.data.source)}
    if detect_format(cfg.data) == "annotation":  # what the WildFeedback extractor yields changes with its version
        section["extractor"] = EXTRACTOR_VERSION
    return section


def prepare(plan: Plan, cfg: Config, method: PairBuilder) -> list[FeedbackRecord]:
    st, records = plan.prepare, plan.records
    if st.done:
        return records
    stats = dict(plan.prepare_stats or {})
    kind = method.record_kind(records)
    used = select_records(records, kind, cfg.setting, cfg.seed)
    stats["used"] = {"setting": cfg.setting.name, "kind": kind, "records": len(used),
                     "available": sum(r.kind == kind for r in records),
                     "seed_pairs": sum(r.kind == "seed" for r in records) if cfg.trainer.warm_start_epochs else 0}
    stats["used"].update(used_counts(cfg, records))  # data.holdout (drift_exp/heldout.py)
    log.info("data: %s", {k: v for k, v in stats.items() if k != "source"})
    write_jsonl(st.folder / "records.jsonl", records)
    write_json(st.folder / "stats.json", stats)
    st.finish(stats)
    return records


def warm_start(plan: Plan, cfg: Config, rd: RunDir, records: list[FeedbackRecord], tracker: Tracker) -> None:
    st, ev = plan.warm_start, plan.warm_eval
    if st.done and ev.done:
        return
    with tracker.iteration(0):
        tracker.log("base_eval", base_stats(rd.root))  # the Base row's numbers, in iteration 0's run
        if not st.done:
            pairs = seed_pairs(records)
            write_jsonl(st.folder / "pairs.jsonl", pairs)
            if pairs and cfg.trainer.warm_start_epochs > 0:
                train_stage(st, cfg, rd, 0, tracker)
            else:
                why = "no DSAT->SAT seed pairs in the data" if not pairs else "trainer.warm_start_epochs=0"
                log.warning("warm start skipped: %s; iteration 1 samples from the base model", why)
                write_json(st.folder / "metrics.json", {"iteration": 0, "skipped": why})
                st.finish({"skipped": why})
        eval_stage(ev, cfg, rd, 0, tracker)  # the warm-started policy (or the base model if skipped)


def eval_section(cfg: Config) -> dict[str, Any]:
    scorer = {**result_fields(cfg.scorer), "path": scorer_path(cfg)} if "proxy" in cfg.eval.benchmarks else None
    return {"eval": result_fields(cfg.eval), "generation": result_fields(cfg.generation), "scorer": scorer}


def eval_stage(st: Stage, cfg: Config, rd: RunDir, k: int, tracker: Tracker) -> None:
    if not st.done:
        metrics = run_stage(cfg, rd.root, EVAL, k, tracker) if cfg.eval.benchmarks else {}
        path = st.folder / "metrics.json"
        summary = json.loads(path.read_text()) if path.exists() else {"iteration": k}
        summary["eval"] = metrics
        write_json(path, summary)
        failed = metrics.get("wildbench", {}).get("n_failed", 0)
        if failed:  # left unfinished: a rerun sends only the failed judge calls (the rest are cached)
            log.warning("%s: %d judge calls failed; rerun the command to retry them", st.id, failed)
        else:
            st.finish(flat_metrics(metrics))
    tracker.log("eval", st.stats)


def requests_stage(st: Stage, method: PairBuilder, targets: list[FeedbackRecord], k: int,
                   tracker: Tracker) -> None:
    if not st.done:
        requests = method.requests(targets, k)
        write_jsonl(st.folder / "requests.jsonl", requests)
        st.finish({"requests": len(requests), "records": len(targets), "samples": sum(r.n for r in requests)})
    tracker.log("stage/requests", st.stats)


def generate_stage(st: Stage, cfg: Config, rd: RunDir, k: int, tracker: Tracker, needed: bool) -> list[Completion]:
    """Sample iteration k's requests; return the completions when `needed` (the pairs are still to build)."""
    if not st.done:
        st.finish(run_stage(cfg, rd.root, GENERATE, k, tracker))
    tracker.log("stage/generation", st.stats)
    if not needed:
        return []
    return read_jsonl(rd.require(st.folder / "completions.jsonl", st.id), Completion)


def pairs_stage(st: Stage, cfg: Config, method: PairBuilder, records: list[FeedbackRecord],
                completions: list[Completion], k: int, tracker: Tracker) -> None:
    if st.done:
        tracker.log("stage/pairs", st.stats)
        return
    scorer = None
    if method.needs_scorer(records):
        from drift_exp.scoring import RewardScorer

        scorer = RewardScorer(replace(cfg.scorer, path=scorer_path(cfg)))
    pairs = method.pairs(records, completions, scorer)
    del scorer
    for p in pairs:
        p.meta["iteration"] = k
    if not pairs:
        raise UserError(f"{st.folder}: iteration {k} built no preference pairs ({dict(method.stats)})")
    write_jsonl(st.folder / "pairs.jsonl", pairs)
    write_preview(st.folder, pairs, k, cfg.method.name, tracker.run)  # pairs_preview.md + W&B table
    st.finish(dict(method.stats))
    tracker.log("stage/pairs", st.stats)


def train_stage(st: Stage, cfg: Config, rd: RunDir, k: int, tracker: Tracker) -> None:
    stats = run_stage(cfg, rd.root, TRAIN, k, tracker)
    metrics = {"iteration": k, "experiment": experiment_name(cfg), "method": cfg.method.name,
               "data": cfg.data.name, "model": cfg.model.name, "setting": cfg.setting.name, "seed": cfg.seed,
               "policy_start": stats["policy_start"], "train": stats}
    metrics.update({name: m.get("stats", {}) for name, m in read_markers(st.folder).items() if name != TRAIN})
    write_json(st.folder / "metrics.json", metrics)
    tracker.log("stage/train", {**stats, **flat_signal(stats.get("signal", {}))})
    st.finish({key: v for key, v in stats.items() if key not in ("history", "signal")})


def stop_here(cfg: Config, stage: str, k: int | None = None) -> bool:
    """True after the stage named by run.stop_after (a bare iteration stage means iteration 1)."""
    target = cfg.run.stop_after
    if not target:
        return False
    hit = parse_stop_after(target) == (stage, k)
    if hit:
        log.info("stopping after %s (run.stop_after)", target)
    return hit
