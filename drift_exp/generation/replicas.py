"""Data-parallel generation: the requests sharded over `layout.replicas` processes, one engine each.

`generate_replicated` runs one replica in this process, or starts one child process per replica
(`python -m drift_exp.generation.replicas WORKDIR R`) with CUDA_VISIBLE_DEVICES set to the replica's
GPUs (its tensor-parallel group), waits for all of them and merges their completions in request order.
Every child reads the whole request list and generates its own share (`generate_share`), so the shards
need no coordination; seeds are tied to request (vLLM) or batch (HF) indices over the whole list. The
merged completions do not depend on the number of replicas with the HF backend, and with vLLM only when
generation.batch_invariant is on (vLLM's logits otherwise depend on the batch; see generation/vllm.py).
Each replica reports its generated tokens and seconds; the stage reports them per replica and in total.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections import deque
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from drift_exp.config import GenerationConfig, TinyModelConfig
from drift_exp.errors import UserError
from drift_exp.generation.layout import Layout
from drift_exp.records import Completion, GenRequest, read_jsonl, write_jsonl


class ReplicaFailed(UserError):
    """A generation replica's process exited with an error."""


def node_layout(cfg: GenerationConfig, model_path: str, gpu_memory_gb: float | None = None,
                tiny: TinyModelConfig | None = None) -> Layout:
    """The layout on this machine's visible GPUs (CUDA_VISIBLE_DEVICES applies); ConfigError on a problem.

    gpu_memory_gb: launcher.gpu_memory_gb (null: the visible GPU's memory)."""
    from drift_exp.devices import visible_gpus
    from drift_exp.errors import ConfigError
    from drift_exp.generation.layout import choose_layout
    from drift_exp.model_shapes import ShapeUnknown, model_shape

    gpus, seen_memory = visible_gpus()
    try:
        shape = model_shape(model_path, tiny)
    except ShapeUnknown:
        shape = None
    if gpu_memory_gb is None:
        gpu_memory_gb = seen_memory
    layout = choose_layout(cfg, shape, gpus, gpu_memory_gb)
    if layout.problems:
        raise ConfigError("generation layout: " + "; ".join(f"{key} {why}" for key, why in layout.problems))
    return layout


def generate_on_node(cfg: GenerationConfig, model_dtype: str, model_path: str, requests: list[GenRequest],
                     seed: int, workdir: Path) -> tuple[list[Completion], dict[str, Any]]:
    """generate_replicated over node_layout: every visible GPU used, for callers such as the evaluation."""
    return generate_replicated(cfg, model_dtype, model_path, requests, seed, node_layout(cfg, model_path), workdir)


def _generate_one(cfg: GenerationConfig, model_dtype: str, model_path: str, requests: list[GenRequest], seed: int,
                  replica: int, replicas: int) -> tuple[dict[int, Completion], dict[str, Any]]:
    from drift_exp.generation import build_generator

    gen = build_generator(cfg, model_dtype)
    t0 = time.time()
    share = gen.generate_share(model_path, requests, seed, replica, replicas)
    seconds = time.time() - t0
    tokens = int(getattr(gen, "output_tokens", 0))
    return share, {"replica": replica, "requests": len(share), "output_tokens": tokens, "seconds": round(seconds, 2),
                   "tokens_per_s": round(tokens / seconds, 2) if seconds > 0 else 0.0}


def generate_replicated(cfg: GenerationConfig, model_dtype: str, model_path: str, requests: list[GenRequest],
                        seed: int, layout: Layout, workdir: Path) -> tuple[list[Completion], dict[str, Any]]:
    """All requests' completions in request order, and the throughput stats (per replica and total)."""
    t0 = time.time()
    # Each engine gets its own tensor-parallel size explicitly: it sees exactly its own GPUs.
    tp = layout.tensor_parallel if cfg.backend == "vllm" else cfg.tensor_parallel_size
    one = replace(cfg, tensor_parallel_size=tp, replicas=1)
    if layout.replicas == 1:
        share, stat = _generate_one(one, model_dtype, model_path, requests, seed, 0, 1)
        merged, per_replica = share, [stat]
    else:
        merged, per_replica = _run_children(one, model_dtype, model_path, requests, seed, layout, workdir)
    missing = [i for i in range(len(requests)) if i not in merged]
    if missing:
        raise ReplicaFailed(f"generation replicas returned no completion for {len(missing)} requests "
                            f"(first: {requests[missing[0]].record_id})")
    wall = time.time() - t0
    tokens = sum(s["output_tokens"] for s in per_replica)
    stats = {"replicas": layout.replicas, "tensor_parallel_size": layout.tensor_parallel,
             "output_tokens": tokens, "tokens_per_s": round(tokens / wall, 2) if wall > 0 else 0.0,
             "per_replica": per_replica}
    for s in per_replica:  # flat keys for the W&B summary (which keeps numbers only)
        stats[f"replica{s['replica']}_tokens_per_s"] = s["tokens_per_s"]
    return [merged[i] for i in range(len(requests))], stats


def _run_children(cfg: GenerationConfig, model_dtype: str, model_path: str, requests: list[GenRequest], seed: int,
                  layout: Layout, workdir: Path) -> tuple[dict[int, Completion], list[dict[str, Any]]]:
    shutil.rmtree(workdir, ignore_errors=True)  # shares of an earlier, failed attempt
    workdir.mkdir(parents=True)
    write_jsonl(workdir / "requests.jsonl", requests)
    spec = {"generation": asdict(cfg), "model_dtype": model_dtype, "model_path": model_path, "seed": seed,
            "replicas": layout.replicas}
    (workdir / "spec.json").write_text(json.dumps(spec, indent=1))
    procs = []
    for r, devices in enumerate(layout.device_groups()):
        env = dict(os.environ)
        if devices:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, devices))
        elif layout.gpus == 0:  # CPU: share the cores instead of each replica using all of them
            env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // layout.replicas))
        log = open(workdir / f"replica_{r}.log", "w", encoding="utf-8")
        procs.append((r, log, subprocess.Popen([sys.executable, "-m", "drift_exp.generation.replicas", str(workdir),
                                                str(r)], env=env, stdout=log, stderr=subprocess.STDOUT)))
    failed = []
    for r, log, proc in procs:
        rc = proc.wait()
        log.close()
        if rc != 0:
            failed.append((r, rc))
    if failed:
        r, rc = failed[0]
        tail = deque((workdir / f"replica_{r}.log").read_text(errors="replace").splitlines(), maxlen=30)
        raise ReplicaFailed(f"generation replica {r} exited with code {rc} ({len(failed)} of {layout.replicas} "
                            f"failed). Last lines of {workdir / f'replica_{r}.log'}:\n" + "\n".join(tail))
    merged: dict[int, Completion] = {}
    per_replica = []
    for r in range(layout.replicas):
        out = json.loads((workdir / f"share_{r}.json").read_text())
        merged.update({int(i): Completion(**c) for i, c in out["completions"].items()})
        per_replica.append(out["stats"])
    for name in ["requests.jsonl", "spec.json", *(f"share_{r}.json" for r in range(layout.replicas))]:
        (workdir / name).unlink()  # merged into completions.jsonl by the caller; the replica logs stay
    return merged, per_replica


def main(argv: list[str]) -> None:
    """Child process: generate replica R's share of WORKDIR/requests.jsonl into WORKDIR/share_R.json."""
    workdir, replica = Path(argv[0]), int(argv[1])
    spec = json.loads((workdir / "spec.json").read_text())
    cfg = GenerationConfig(**spec["generation"])
    requests = read_jsonl(workdir / "requests.jsonl", GenRequest)
    share, stats = _generate_one(cfg, spec["model_dtype"], spec["model_path"], requests, spec["seed"], replica,
                                 spec["replicas"])
    out = {"completions": {str(i): asdict(c) for i, c in share.items()}, "stats": stats}
    tmp = workdir / f".share_{replica}.json.tmp"
    tmp.write_text(json.dumps(out))
    os.replace(tmp, workdir / f"share_{replica}.json")


if __name__ == "__main__":
    main(sys.argv[1:])
