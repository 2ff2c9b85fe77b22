"""W&B both ways: pull the runs that drift_exp.tracking logged, and log the report as a run of its own.

Pulled runs become the same records as iter_k/metrics.json (the run directories stay the primary source; this
is for a project whose run folders are elsewhere). Two layouts are read:

- one run per experiment (names.py's WANDB_* layout): identity from the run's config (the resolved Hydra
  config); per iteration, the history rows that carry `iteration` (eval/, stage/, signal/, heldout/ numbers);
  the training curves are the rows with train/global_step, each given to the iteration whose training steps
  contain it (stage/train/steps summed over the iterations); the Base row from the base/eval/ summary keys;
- one run per iteration (before it): the config's `iteration`, the summary's train/* and eval/* keys.

WildBench groups arrive as `eval/wildbench/groups/<group>`; the per-step history keeps train/loss and the
chosen and rejected rewards.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from drift_exp.names import (
    WANDB_BASE,
    WANDB_EVAL,
    WANDB_HELDOUT,
    WANDB_ITERATION,
    WANDB_JOB_TYPES,
    WANDB_PER_ITERATION,
    WANDB_SIGNAL,
    WANDB_STAGE,
    WANDB_TRAIN,
    WANDB_TRAIN_STEP,
)
from drift_exp.report.collect import Record, ReportError, value_at

HISTORY_KEYS = ("train/loss", "train/rewards/chosen", "train/rewards/rejected")
EVAL_PREFIXES = ("eval/", "stage/eval/")
NOT_EXPERIMENTS = ("report", "coverage")  # job types of runs that are no experiment


def has_api_key() -> bool:
    """A W&B API key in the environment or ~/.netrc (for WANDB_BASE_URL's host); never asks the network."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname or "api.wandb.ai"
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    return netrc.is_file() and host in netrc.read_text(errors="ignore")


def _unflatten(flat: dict[str, Any], prefixes: tuple[str, ...]) -> dict[str, Any]:
    nested: dict[str, Any] = {}
    for key, value in flat.items():
        prefix = next((p for p in prefixes if key.startswith(p)), None)
        if prefix is None or isinstance(value, dict):
            continue
        *parents, leaf = key[len(prefix):].split("/")
        node = nested
        for p in parents:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                break
        else:
            node[leaf] = value
    return nested


def _history_point(row: dict[str, Any], i: int) -> dict[str, Any]:
    return {**{key[len(WANDB_TRAIN):]: row[key] for key in HISTORY_KEYS if key in row},
            "step": row.get(WANDB_TRAIN_STEP, i + 1)}


def run_to_record(run: Any, path: str, with_history: bool = True) -> Record | None:
    """A W&B run of the one-run-per-iteration layout as a Record; None for runs that are not an iteration."""
    cfg = dict(run.config)
    if run.job_type not in WANDB_JOB_TYPES or WANDB_ITERATION not in cfg:
        return None
    summary = {k: v for k, v in dict(run.summary_metrics).items() if not k.startswith("_")}
    k = int(cfg[WANDB_ITERATION])
    train = {"final": {key[len(WANDB_TRAIN):]: v for key, v in summary.items() if key.startswith(WANDB_TRAIN)}}
    if "train_loss" in train["final"]:
        train["train_loss"] = train["final"]["train_loss"]
    if with_history:
        keys = [*HISTORY_KEYS, WANDB_TRAIN_STEP]
        rows = list(run.scan_history(keys=keys)) or list(run.scan_history(keys=keys[:3]))  # no step logged
        train["history"] = [_history_point(row, i) for i, row in enumerate(rows)]
    metrics = {"iteration": k, "train": train, "eval": _unflatten(summary, EVAL_PREFIXES), "wandb_run": run.id}
    experiment = cfg.get("experiment") or run.group
    return _record(cfg, k, experiment, path, metrics)


def _record(cfg: dict[str, Any], k: int, experiment: str, path: str, metrics: dict[str, Any],
            method: str | None = None) -> Record:
    return Record(data=value_at(cfg, ("data", "name")), model=value_at(cfg, ("model", "name")),
                  setting=value_at(cfg, ("setting", "name")) if k and not method else "",
                  method=method or (value_at(cfg, ("method", "name")) if k else "seed"), iteration=k,
                  seed=cfg.get("seed"), experiment=experiment, source=f"wandb:{path}/{experiment}",
                  sweep=value_at(cfg, ("run", "sweep_name")), metrics=metrics, tracking=cfg.get("tracking") or {})


def _assign_training_rows(rows: list[dict[str, Any]], steps: dict[int, float]) -> dict[int, list[dict[str, Any]]]:
    """The training rows (those with train/global_step) of each iteration: a row that names its iteration goes
    there; otherwise the iteration whose steps (stage/train/steps, summed in iteration order) contain its global
    step. A stage rerun after a crash logs its steps again: the later row of a global step wins."""
    ends, total = [], 0.0
    for k in sorted(steps):
        total += steps[k]
        ends.append((total, k))
    out: dict[int, dict[Any, dict[str, Any]]] = {}
    for i, row in enumerate(rows):
        if WANDB_TRAIN_STEP not in row:
            continue
        step = row[WANDB_TRAIN_STEP]
        k = row.get(WANDB_ITERATION)
        if k is None:
            k = next((k for end, k in ends if step <= end), ends[-1][1] if ends else 0)
        out.setdefault(int(k), {})[step if step is not None else i] = row
    return {k: list(v.values()) for k, v in out.items()}


def experiment_run_to_records(run: Any, path: str, with_history: bool = True) -> list[Record]:
    """A W&B run of the one-run-per-experiment layout: a record per iteration with numbers, plus the Base row."""
    cfg = dict(run.config)
    experiment = run.name or run.group
    per_iteration: dict[int, dict[str, Any]] = {}
    rows = list(run.scan_history()) if with_history else []
    for row in rows:
        if row.get(WANDB_ITERATION) is None:
            continue
        numbers = {key: v for key, v in row.items() if key.startswith(WANDB_PER_ITERATION) and not isinstance(v, dict)}
        if numbers:
            per_iteration.setdefault(int(row[WANDB_ITERATION]), {}).update(numbers)
    stage_train = WANDB_STAGE + "train/"
    steps = {k: v[stage_train + "steps"] for k, v in per_iteration.items()
             if isinstance(v.get(stage_train + "steps"), (int, float))}
    training = _assign_training_rows(rows, steps)
    records = []
    for k in sorted(set(per_iteration) | set(training)):
        flat = per_iteration.get(k, {})
        history = [_history_point(row, i) for i, row in enumerate(training.get(k, []))]
        last = next((row for row in reversed(training.get(k, [])) if "train/loss" in row), {})
        train = {key[len(stage_train):]: v for key, v in flat.items() if key.startswith(stage_train)}
        train["final"] = {key[len(WANDB_TRAIN):]: v for key, v in last.items()
                          if key.startswith(WANDB_TRAIN) and key != WANDB_TRAIN_STEP}
        train["history"] = history
        metrics = {"iteration": k, "train": train, "eval": _unflatten(flat, (WANDB_EVAL,)),
                   "signal": _unflatten(flat, (WANDB_SIGNAL,)), "heldout": _unflatten(flat, (WANDB_HELDOUT,)),
                   "stage": _unflatten(flat, (WANDB_STAGE,)), "wandb_run": run.id}
        records.append(_record(cfg, k, experiment, path, metrics))
    summary = {key: v for key, v in dict(run.summary_metrics).items() if key.startswith(WANDB_BASE)}
    base = _unflatten(summary, (WANDB_BASE,))
    if base.get("eval"):
        records.append(_record(cfg, 0, experiment, path, {"iteration": 0, "stage": "base", "eval": base["eval"],
                                                          "wandb_run": run.id}, method="base"))
    return records


def records_of(run: Any, path: str, with_history: bool = True) -> list[Record]:
    """The records of one W&B run, whichever layout wrote it; none for a report or coverage run."""
    if run.job_type in NOT_EXPERIMENTS:
        return []
    if WANDB_ITERATION in dict(run.config):  # one run per iteration
        rec = run_to_record(run, path, with_history)
        return [rec] if rec is not None else []
    return experiment_run_to_records(run, path, with_history)


def pull(path: str, groups: list[str] = (), tags: list[str] = (), timeout: int = 30) -> list[Record]:
    """The experiment runs of ENTITY/PROJECT (either layout), filtered by group (any of) and tag (all of)."""
    if path.count("/") != 1 or not all(path.split("/")):
        raise ReportError(f"--wandb wants ENTITY/PROJECT, got {path!r}")
    if not has_api_key():
        raise ReportError("--wandb needs a W&B API key: set WANDB_API_KEY or run `wandb login` (none found in the "
                          "environment or ~/.netrc). Without one, point the report at the run directories instead.")
    import wandb

    filters: dict[str, Any] = {}
    if groups:
        filters["group"] = {"$in": list(groups)}
    if tags:
        filters["$and"] = [{"tags": {"$in": [t]}} for t in tags]
    try:
        runs = wandb.Api(timeout=timeout).runs(path, filters=filters or None, lazy=False)
        return [rec for r in runs for rec in records_of(r, path)]
    except Exception as err:  # wandb raises CommError, UsageError, ValueError, requests errors...
        raise ReportError(f"W&B API ({path}): {type(err).__name__}: {err}") from err


def log_report(out: Path, project: str, entity: str | None, name: str, tables: dict[str, tuple[list, list]],
               images: list[Path], files: list[Path], tags: list[str]) -> str | None:
    """Log the tables, figures and files as a run with job_type "report"; offline without an API key.
    Returns where the run went (URL or offline folder), None when W&B is disabled."""
    from drift_exp.config import TrackingMode
    from drift_exp.tracking import resolve_mode

    mode = resolve_mode(TrackingMode.auto)
    if mode == "disabled":
        return None
    import wandb

    os.environ.setdefault("WANDB_SILENT", "true")
    run = wandb.init(project=project, entity=entity, job_type="report", group="report", name=name, tags=tags,
                     dir=str(out), mode=mode, config={"report": {"out": str(out)}})
    try:
        run.log({f"tables/{key}": wandb.Table(columns=header, data=body) for key, (header, body) in tables.items()}
                | {f"figures/{p.stem}": wandb.Image(str(p)) for p in images})
        for f in files:
            run.save(str(f), base_path=str(out), policy="now")
        return run.url if mode == "online" else str(Path(run.dir).parent)
    finally:
        run.finish()
