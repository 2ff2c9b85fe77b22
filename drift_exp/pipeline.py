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

import logging
import re
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from drift_exp.config import Config, experiment_name, scorer_path
from drift_exp.data import load_records, select_records
from drift_exp.errors import UserError
from drift_exp.generation import build_generator
from drift_exp.methods import PairBuilder, build_method, seed_pairs
from drift_exp.records import (
    Completion,
    FeedbackRecord,
    GenRequest,
    PreferencePair,
    read_jsonl,
    write_json,
    write_jsonl,
)
from drift_exp.stages import ORDER, RunDir, Stage, read_markers
from drift_exp.tracking import Tracker
from drift_exp.training.dpo import reference_path, train_dpo
from drift_exp.training.models import base_model_path

log = logging.getLogger(__name__)


def run(cfg: Config, dcfg: DictConfig, run_dir: Path | None = None) -> Path:
    """Run (or resume) one experiment; return its run directory."""
    if run_dir is None:
        from hydra.core.hydra_config import HydraConfig

        run_dir = Path(HydraConfig.get().runtime.output_dir)
    rd = RunDir(run_dir, cfg.run.overwrite)
    resolved = OmegaConf.to_container(dcfg, resolve=True)
    (rd.root / "config.yaml").write_text(OmegaConf.to_yaml(resolved))
    tracker = Tracker(cfg, rd.root, resolved)
    log.info("experiment %s in %s", experiment_name(cfg), rd.root)

    # Filter: extract the DSAT signals (and SAT replies, DSAT->SAT seeds) from the wild data, and
    # keep the records the method iterates on (DSAT for DRIFT / IterDPO, SAT for SPIN; Table 2).
    method = build_method(cfg.method)
    records, key = prepare(rd, cfg, method)
    if stop_here(cfg, "prepare"):
        return rd.root
    targets = select_records(records, method.record_kind(records), cfg.setting, cfg.seed)

    # Warm start (iteration 0): DPO on the DSAT->SAT seed pairs.
    base = base_model_path(cfg.model)
    key = warm_start(rd, cfg, records, key, base, tracker)
    if stop_here(cfg, "warm_start"):
        return rd.root

    for k in range(1, cfg.iterations + 1):
        policy = policy_after(rd, k - 1, base)  # pi_{k-1}: samples the positives, starts the training
        st = {name: None for name in ORDER}
        parent = key
        for name, section in iteration_sections(cfg, k, method.needs_scorer(records)).items():
            st[name] = rd.stage(k, name, parent, section)
            parent = st[name].key
        key = st["train"].key
        if all(s.done for s in st.values()):
            continue
        with tracker.iteration(k) as wb:
            # Positive sampling: what to ask pi_{k-1} (Table 2), then ask it.
            requests = requests_stage(st["requests"], method, targets, k, wb)
            if stop_here(cfg, "requests", k):
                return rd.root
            completions = generate_stage(st["generate"], cfg, policy, requests, k, wb)
            if stop_here(cfg, "generate", k):
                return rd.root
            # Pairs: DRIFT keeps the real DSAT reply as rejected, the fresh sample as chosen.
            pairs = pairs_stage(st["pairs"], cfg, method, records, completions, k, wb)
            if stop_here(cfg, "pairs", k):
                return rd.root
            # Loss update: one epoch of DPO from pi_{k-1} (SPIN's recipe adds earlier iterations' pairs).
            if cfg.method.accumulate:
                pairs = [p for j in range(1, k) for p in read_jsonl(rd.folder(j) / "pairs.jsonl", PreferencePair)] \
                    + pairs
            train_stage(st["train"], cfg, k, policy, base, pairs, cfg.trainer.epochs, tracker, wb)
            if stop_here(cfg, "train", k):
                return rd.root
    log.info("finished %s: final policy %s", experiment_name(cfg), policy_after(rd, cfg.iterations, base))
    return rd.root


def iteration_sections(cfg: Config, k: int, scored: bool) -> dict[str, dict[str, Any]]:
    """The config each stage of iteration k reads (its DONE key hashes these, chained)."""
    scorer = {**asdict(cfg.scorer), "path": scorer_path(cfg)} if scored else None
    return {
        "requests": {"method": asdict(cfg.method), "setting": asdict(cfg.setting), "iteration": k},
        "generate": {"generation": asdict(cfg.generation), "seed": cfg.seed},
        "pairs": {"method": asdict(cfg.method), "scorer": scorer},
        "train": {"trainer": asdict(cfg.trainer), "seed": cfg.seed},
    }


def prepare(rd: RunDir, cfg: Config, method: PairBuilder) -> tuple[list[FeedbackRecord], str]:
    st = rd.stage(None, "prepare", "", {"data": asdict(cfg.data), "setting": asdict(cfg.setting),
                                        "method": cfg.method.kind, "seed": cfg.seed})
    path = st.folder / "records.jsonl"
    if st.done:
        return read_jsonl(path, FeedbackRecord), st.key
    records, stats = load_records(cfg.data, cfg.seed)
    kind = method.record_kind(records)
    used = select_records(records, kind, cfg.setting, cfg.seed)
    stats["used"] = {"setting": cfg.setting.name, "kind": kind, "records": len(used),
                     "available": sum(r.kind == kind for r in records),
                     "seed_pairs": sum(r.kind == "seed" for r in records) if cfg.trainer.warm_start_epochs else 0}
    log.info("data: %s", {k: v for k, v in stats.items() if k != "source"})
    write_jsonl(path, records)
    write_json(st.folder / "stats.json", stats)
    st.finish(stats)
    return records, st.key


def warm_start(rd: RunDir, cfg: Config, records: list[FeedbackRecord], parent: str, base: str,
               tracker: Tracker) -> str:
    st = rd.stage(0, "train", parent, {"model": asdict(cfg.model), "trainer": asdict(cfg.trainer),
                                       "seed": cfg.seed})
    if st.done:
        return st.key
    pairs = seed_pairs(records)
    write_jsonl(st.folder / "pairs.jsonl", pairs)
    if not pairs or cfg.trainer.warm_start_epochs == 0:
        why = "no DSAT->SAT seed pairs in the data" if not pairs else "trainer.warm_start_epochs=0"
        log.warning("warm start skipped: %s; iteration 1 samples from the base model", why)
        write_json(st.folder / "metrics.json", {"iteration": 0, "skipped": why})
        st.finish({"skipped": why})
        return st.key
    with tracker.iteration(0) as wb:
        train_stage(st, cfg, 0, base, base, pairs, cfg.trainer.warm_start_epochs, tracker, wb)
    return st.key


def requests_stage(st: Stage, method, targets: list[FeedbackRecord], k: int, wb) -> list[GenRequest]:
    if st.done:
        requests = read_jsonl(st.folder / "requests.jsonl", GenRequest)
    else:
        requests = method.requests(targets, k)
        write_jsonl(st.folder / "requests.jsonl", requests)
        st.finish({"requests": len(requests), "records": len(targets), "samples": sum(r.n for r in requests)})
    log_to(wb, "stage/requests", st.stats)
    return requests


def generate_stage(st: Stage, cfg: Config, policy: str, requests: list[GenRequest], k: int,
                   wb) -> list[Completion]:
    if st.done:
        return read_jsonl(st.folder / "completions.jsonl", Completion)
    t0 = time.time()
    generator = build_generator(cfg.generation, cfg.model.dtype)
    completions = generator.generate(policy, requests, seed=cfg.seed * 1000 + k)
    write_jsonl(st.folder / "completions.jsonl", completions)
    st.finish(generation_stats(completions, time.time() - t0))
    log_to(wb, "stage/generation", st.stats)
    return completions


def pairs_stage(st: Stage, cfg: Config, method, records: list[FeedbackRecord], completions: list[Completion],
                k: int, wb) -> list[PreferencePair]:
    if st.done:
        return read_jsonl(st.folder / "pairs.jsonl", PreferencePair)
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
    st.finish(dict(method.stats))
    log_to(wb, "stage/pairs", st.stats)
    return pairs


def train_stage(st: Stage, cfg: Config, k: int, policy: str, base: str, pairs: list[PreferencePair],
                epochs: int, tracker: Tracker, wb) -> None:
    t0 = time.time()
    ref = reference_path(cfg.trainer.ref, policy, base)
    stats = train_dpo(policy, ref, pairs, st.folder / "checkpoint", cfg.trainer, epochs, cfg.seed,
                      tracker.report_to, f"{experiment_name(cfg)}-iter{k}", f"iter_{k}/train")
    stats["reference"] = ref or policy
    stats["wall_s"] = round(time.time() - t0, 2)
    metrics = {"iteration": k, "experiment": experiment_name(cfg), "method": cfg.method.name,
               "data": cfg.data.name, "model": cfg.model.name, "setting": cfg.setting.name, "seed": cfg.seed,
               "policy_start": policy, "train": stats}
    metrics.update({name: s.get("stats", {}) for name, s in read_markers(st.folder).items() if name != "train"})
    write_json(st.folder / "metrics.json", metrics)
    log_to(wb, "stage/train", {key: v for key, v in stats.items() if isinstance(v, (int, float))})
    st.finish({key: v for key, v in stats.items() if key != "history"})


def policy_after(rd: RunDir, k: int, base: str) -> str:
    """The checkpoint iteration k produced (the warm start may have been skipped: then the base model)."""
    for j in range(k, -1, -1):
        if (rd.folder(j) / "checkpoint" / "config.json").exists():
            return str(rd.folder(j) / "checkpoint")
    return base


def generation_stats(completions: list[Completion], seconds: float) -> dict[str, Any]:
    outputs = [o for c in completions for o in c.outputs]
    finished = [f for c in completions for f in c.finished]
    return {
        "requests": len(completions),
        "samples": len(outputs),
        "empty_samples": sum(not o.strip() for o in outputs),
        "mean_chars": round(sum(map(len, outputs)) / max(len(outputs), 1), 1),
        "finished_with_eos": sum(finished),
        "truncated_prompts": sum(c.truncated_prompt for c in completions),
        "mean_prompt_tokens": round(sum(c.prompt_tokens for c in completions) / max(len(completions), 1), 1),
        "seconds": round(seconds, 2),
    }


def log_to(wb, prefix: str, stats: dict[str, Any]) -> None:
    if wb is not None:
        wb.summary.update({f"{prefix}/{k}": v for k, v in stats.items() if isinstance(v, (int, float))})


_STOP = re.compile(r"^(?:iter_(\d+)/)?(\w+)$")


def stop_here(cfg: Config, stage: str, k: int | None = None) -> bool:
    """True after the stage named by run.stop_after (a bare iteration stage means iteration 1)."""
    target = cfg.run.stop_after
    if not target:
        return False
    if stage in ("prepare", "warm_start"):
        hit = target == stage
    else:
        m = _STOP.match(target)
        hit = m is not None and m.group(2) == stage and int(m.group(1) or 1) == k
    if hit:
        log.info("stopping after %s (run.stop_after)", target)
    return hit
