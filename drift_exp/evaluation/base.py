"""The Base row: the starting model evaluated once, before the warm start, with the experiment's eval
config, in `base/` of the run directory (resumable like any stage: base/DONE holds its key).

The jobs of a sweep share one evaluation per (model, eval config): the first job computes it and stores
it in a shared cache, `<eval.base_cache_dir or drift_exp cache root/base_eval>/<key>/`; the others wait
on the entry's file lock and copy it. An entry is built under a temporary name and renamed into place,
and only evaluations that finished (no failed judge call) are stored.

The key covers what changes the numbers: the model (path, dtype, tiny-model shape, the files of a
local folder), the eval config minus its plumbing (cache folders, judge concurrency/retries/prices),
the generation settings the evaluation decodes with, the seed when eval decoding samples, and the
reward model of the proxy: the result-affecting fields of drift_exp.config_fields (batch sizes count:
generation seeds each batch).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from drift_exp.cachedir import cache_root
from drift_exp.locks import file_lock
from drift_exp.names import BASE_FOLDER, EVAL, experiment_name
from drift_exp.records import write_json
from drift_exp.stages import Stage, key_of, read_markers

log = logging.getLogger(__name__)

VERSION = 1  # bump when what a base evaluation writes changes


def eval_identity(cfg: Any) -> dict[str, Any]:
    """What makes the base evaluation's numbers (cfg: drift_exp.config.Config), for the cache key: the
    result-affecting fields (drift_exp.config_fields) of the model, eval config, eval decoding and scorer."""
    from drift_exp.config import result_fields, scorer_path
    from drift_exp.evaluation.stage import eval_generation_config, policy_fingerprint
    from drift_exp.models import base_model_path

    ev = result_fields(cfg.eval)
    gen = result_fields(eval_generation_config(cfg.eval, cfg.generation))
    model = result_fields(cfg.model)
    if cfg.model.path != "tiny":  # the tiny model is built from its config; a folder is known by its files
        model["files"] = policy_fingerprint(base_model_path(cfg.model))
    scorer = {**result_fields(cfg.scorer), "path": scorer_path(cfg)} if "proxy" in cfg.eval.benchmarks else None
    return {"version": VERSION, "model": model, "eval": ev, "generation": gen, "scorer": scorer,
            "seed": cfg.seed if cfg.eval.temperature > 0 else None}


def cache_key(identity: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:24]


def base_stage(root: Path, section: dict[str, Any]) -> Stage:
    """The base/ stage of a run directory. Nothing depends on it, so a changed config reruns just it."""
    folder = Path(root) / BASE_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    st = Stage(folder, EVAL, key_of("", section), section)
    old = read_markers(folder).get(EVAL)
    if old is not None and old.get("key") == st.key:
        st.done, st.stats = True, old.get("stats", {})
        log.info("%s: done, reusing it", st.id)
    elif old is not None:
        log.info("%s: config changed, running it again", st.id)
        write_json(folder / "DONE", {k: v for k, v in read_markers(folder).items() if k != EVAL})
    return st


def cache_folder(base_cache_dir: str | None) -> Path:
    return Path(base_cache_dir).expanduser() if base_cache_dir else cache_root() / "base_eval"


def complete(metrics: dict[str, Any]) -> bool:
    """Whether an evaluation may be shared: no judge call failed (a rerun would retry those)."""
    return not metrics.get("wildbench", {}).get("n_failed", 0)


def shared_base_eval(identity: dict[str, Any], cache_dir: Path, out_dir: Path,
                     compute: Callable[[], dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(metrics, {key, entry, reused}) of the base evaluation, computed by `compute` (which writes out_dir)
    at most once per key across every job using cache_dir; the other jobs get a copy of out_dir."""
    key = cache_key(identity)
    entry = cache_dir / key
    with file_lock(cache_dir / f"{key}.lock"):
        done = entry / "metrics.json"
        if done.exists():
            log.info("base eval: reusing %s", entry)
            if out_dir.exists():
                shutil.rmtree(out_dir)
            shutil.copytree(entry / "eval", out_dir)
            metrics = _moved(json.loads(done.read_text()), HERE, str(out_dir))
            return metrics, {"key": key, "entry": str(entry), "reused": True}
        metrics = compute()
        if complete(metrics):
            tmp = cache_dir / f"{key}.tmp-{os.getpid()}"
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.copytree(out_dir, tmp / "eval")
            write_json(tmp / "identity.json", identity)
            # written last: an entry without it is incomplete; paths into out_dir are kept relative
            write_json(tmp / "metrics.json", _moved(metrics, str(out_dir), HERE))
            if entry.exists():
                shutil.rmtree(entry)
            os.replace(tmp, entry)
        return metrics, {"key": key, "entry": str(entry), "reused": False}


HERE = "<eval dir>"  # stands for the evaluation folder in a cached entry's paths


def _moved(obj: Any, old: str, new: str) -> Any:
    """obj with every string starting with `old` rebased onto `new` (paths in the metrics)."""
    if isinstance(obj, dict):
        return {k: _moved(v, old, new) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_moved(v, old, new) for v in obj]
    if isinstance(obj, str) and obj.startswith(old):
        return new + obj[len(old):]
    return obj


def base_eval_stage(root: Path, cfg: Any, launch: Callable[[], dict[str, Any]]) -> dict[str, Any] | None:
    """base/: the starting model on eval.benchmarks, before the warm start (the report's Base row); return
    its marker's stats when it finished now, None when it was done already or is left unfinished.
    cfg: drift_exp.config.Config; launch: runs the base_eval job and returns its metrics (drift_exp.runner)."""
    if not cfg.eval.benchmarks or not cfg.eval.base_model:
        return None
    from drift_exp.evaluation import flat_metrics

    identity = eval_identity(cfg)
    st = base_stage(root, identity)
    if st.done:
        return None
    metrics, shared = shared_base_eval(identity, cache_folder(cfg.eval.base_cache_dir), st.folder / "eval", launch)
    write_json(st.folder / "metrics.json", {"stage": BASE_FOLDER, "experiment": experiment_name(cfg),
                                            "data": cfg.data.name, "model": cfg.model.name, "seed": cfg.seed,
                                            "eval": metrics, "shared": shared})
    if complete(metrics):
        st.finish({**flat_metrics(metrics), "reused": shared["reused"]})
        return st.stats
    # left unfinished: a rerun sends only the failed judge calls (the others are cached)
    log.warning("%s: some judge calls failed; rerun the command to retry them", st.id)
    return None


def base_stats(root: Path) -> dict[str, Any]:
    """The finished base evaluation's numbers (flat, for W&B), or {} when there is none."""
    return read_markers(Path(root) / BASE_FOLDER).get(EVAL, {}).get("stats", {})
