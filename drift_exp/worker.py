"""The heavy stages' jobs: `python -m drift_exp.worker <job> --run-dir R --iteration K`, one job per stage
of drift_exp.names.STAGES that names one (generate, train, eval, base_eval).

They read their inputs from the run directory and write their outputs there, so the runner can
run them in its own process (inline), in a child process (generation: vLLM wants the GPUs to
itself), or under `accelerate launch` across GPUs and nodes (training with DeepSpeed ZeRO-3), as
the table's `where` says. The orchestrator (drift_exp/runner.py) marks the stage done once the job
has exited cleanly.
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from drift_exp.config import Config
from drift_exp.names import BASE_EVAL, BASE_FOLDER, EVAL, GENERATE, TRAIN, WORKER_JOBS, iteration_run_name, stage_id
from drift_exp.records import Completion, GenRequest, PreferencePair, read_jsonl, write_json, write_jsonl
from drift_exp.stages import RunDir

log = logging.getLogger("drift_exp.worker")


def load_config(run_dir: Path) -> Config:
    """The experiment's resolved config, as the orchestrator saved it."""
    saved = OmegaConf.load(run_dir / "config.yaml")
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(Config), saved))


def generate(cfg: Config, run_dir: Path, k: int) -> dict[str, Any]:
    """Sample iteration k's requests from pi_{k-1}; write completions.jsonl and generate_stats.json.

    The requests are sharded over the data-parallel replicas of `generation_layout` (one process per
    replica when there are several); the completions do not depend on the number of replicas.
    """
    from drift_exp.generation.replicas import generate_replicated
    from drift_exp.generation.sampling import effective_sampling
    from drift_exp.models import base_model_path

    rd = RunDir(run_dir, overwrite=False)
    folder = rd.folder(k)
    requests = read_jsonl(folder / "requests.jsonl", GenRequest)
    policy = rd.checkpoint_after(k - 1, base_model_path(cfg.model))
    layout = generation_layout(cfg, policy)
    log.info("generation: %d requests over %s (replicas x tensor parallel) on %d GPUs", len(requests),
             layout.describe(), layout.gpus)
    t0 = time.time()
    completions, throughput = generate_replicated(cfg.generation, cfg.model.dtype, policy, requests,
                                                  cfg.seed * 1000 + k, layout, folder / ".replicas")
    write_jsonl(folder / "completions.jsonl", completions)
    stats = {**generation_stats(completions, time.time() - t0), **throughput}
    stats["sampling"] = effective_sampling(cfg.generation, policy)  # what both backends applied
    write_json(folder / "generate_stats.json", stats)
    return stats


def generation_layout(cfg: Config, model_path: str):
    """The replicas x tensor-parallel layout on this machine's visible GPUs; ConfigError on a problem."""
    from drift_exp.generation.replicas import node_layout

    return node_layout(cfg.generation, model_path, cfg.launcher.gpu_memory_gb, cfg.model.tiny)


def train(cfg: Config, run_dir: Path, k: int, deepspeed_config: str | None = None,
          forward: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """One DPO stage: iteration 0 trains the base model on the seed pairs, k >= 1 trains pi_{k-1}.

    The job never opens W&B: each training log goes to iter_k/train_log.jsonl (and, in the orchestrator's
    process, to `forward`), from where the orchestrator's run takes it (drift_exp/tracking.py)."""
    from drift_exp.heldout import split_for_training
    from drift_exp.models import base_model_path
    from drift_exp.training.dpo import reference_path, train_dpo
    from drift_exp.training.logsink import TRAIN_LOG, TrainLogSink

    rd = RunDir(run_dir, overwrite=False)
    folder = rd.folder(k)
    base = base_model_path(cfg.model)
    policy = base if k == 0 else rd.checkpoint_after(k - 1, base)
    pairs = read_jsonl(folder / "pairs.jsonl", PreferencePair)
    if cfg.method.accumulate and k > 1:  # SPIN's recipe: iteration k also sees the pairs of 1..k-1
        pairs = [p for j in range(1, k) for p in read_jsonl(rd.folder(j) / "pairs.jsonl", PreferencePair)] + pairs
    pairs, heldout = split_for_training(cfg, run_dir, k, pairs)  # data.holdout: evaluated, not trained on
    ref = reference_path(cfg.trainer.ref, policy, base)
    epochs = cfg.trainer.warm_start_epochs if k == 0 else cfg.trainer.epochs
    t0 = time.time()
    stats = train_dpo(policy, ref, pairs, folder / "checkpoint", cfg.trainer, epochs, cfg.seed, "none",
                      iteration_run_name(cfg, k), stage_id(k, TRAIN), deepspeed_config=deepspeed_config,
                      callbacks=[TrainLogSink(folder / TRAIN_LOG, forward)], heldout=heldout)
    if stats is not None:  # the main process of a distributed run
        stats.update(reference=ref or policy, policy_start=policy, wall_s=round(time.time() - t0, 2))
        write_json(folder / "train_stats.json", stats)
    return stats


def evaluate(cfg: Config, run_dir: Path, k: int) -> dict[str, Any]:
    """Evaluate pi_k on eval.benchmarks; write iter_k/eval/ and eval_stats.json."""
    from dataclasses import replace

    from drift_exp.config import scorer_path
    from drift_exp.evaluation.stage import evaluate as run_benchmarks
    from drift_exp.models import base_model_path

    rd = RunDir(run_dir, overwrite=False)
    folder = rd.folder(k)
    policy = rd.checkpoint_after(k, base_model_path(cfg.model))
    metrics = run_benchmarks(cfg.eval, cfg.generation, cfg.model.dtype, replace(cfg.scorer, path=scorer_path(cfg)),
                             policy, folder / "eval", iteration_run_name(cfg, k), cfg.seed)
    write_json(folder / "eval_stats.json", metrics)
    return metrics


def evaluate_base(cfg: Config, run_dir: Path, k: int = 0) -> dict[str, Any]:
    """Evaluate the untouched starting model on eval.benchmarks; write base/eval/ and base_eval_stats.json
    (k: unused, every job takes one)."""
    from dataclasses import replace

    from drift_exp.config import scorer_path
    from drift_exp.evaluation.stage import evaluate as run_benchmarks
    from drift_exp.models import base_model_path

    folder = Path(run_dir) / BASE_FOLDER
    metrics = run_benchmarks(cfg.eval, cfg.generation, cfg.model.dtype, replace(cfg.scorer, path=scorer_path(cfg)),
                             base_model_path(cfg.model), folder / "eval", f"{cfg.model.name}-base", cfg.seed)
    write_json(folder / "base_eval_stats.json", metrics)
    return metrics


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


# The job of each stage that has one (drift_exp.names.STAGES: `job`), called as fn(cfg, run_dir, k).
JOBS: dict[str, Callable[..., dict[str, Any] | None]] = {
    GENERATE: generate, TRAIN: train, EVAL: evaluate, BASE_EVAL: evaluate_base}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m drift_exp.worker", description=__doc__.splitlines()[0])
    parser.add_argument("stage", choices=WORKER_JOBS)
    parser.add_argument("--run-dir", type=Path, required=True)
    parser.add_argument("--iteration", type=int, required=True)
    parser.add_argument("--deepspeed-config", default=None, help="train: a DeepSpeed ZeRO-3 json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format=f"[%(asctime)s][rank {os.environ.get('RANK', 0)}]"
                                                   "[%(name)s][%(levelname)s] - %(message)s")
    cfg = load_config(args.run_dir)
    from drift_exp.models import set_trust_remote_code

    set_trust_remote_code(cfg.model.trust_remote_code)
    opts = {"deepspeed_config": args.deepspeed_config} if args.stage == TRAIN else {}
    JOBS[args.stage](cfg, args.run_dir, args.iteration, **opts)


if __name__ == "__main__":
    main()
