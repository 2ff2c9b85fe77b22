"""W&B both ways: pull the iteration runs that drift_exp.tracking logged, and log the report as a run of its own.

Pulled runs become the same records as iter_k/metrics.json: identity from the run's config (the resolved
Hydra config plus `iteration` and `experiment`), training numbers from the summary's `train/*` keys (TRL's
last logged values), evaluation numbers from `eval/<benchmark>/<key>` summary keys (`stage/eval/...` too;
WildBench groups as `eval/wildbench/groups/<group>`), and the per-step history from `train/loss`,
`train/rewards/chosen`, `train/rewards/rejected`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from drift_exp.names import WANDB_JOB_TYPES
from drift_exp.report.collect import Record, ReportError, value_at

HISTORY_KEYS = ("train/loss", "train/rewards/chosen", "train/rewards/rejected")
EVAL_PREFIXES = ("eval/", "stage/eval/")


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


def run_to_record(run: Any, path: str, with_history: bool = True) -> Record | None:
    """A W&B run of drift_exp.tracking as a Record; None for runs that are not an iteration (e.g. a report)."""
    cfg = dict(run.config)
    if run.job_type not in WANDB_JOB_TYPES or "iteration" not in cfg:
        return None
    summary = {k: v for k, v in dict(run.summary_metrics).items() if not k.startswith("_")}
    k = int(cfg["iteration"])
    train = {"final": {key[len("train/"):]: v for key, v in summary.items() if key.startswith("train/")}}
    if "train_loss" in train["final"]:
        train["train_loss"] = train["final"]["train_loss"]
    if with_history:
        keys = [*HISTORY_KEYS, "train/global_step"]
        rows = list(run.scan_history(keys=keys)) or list(run.scan_history(keys=keys[:3]))  # no step logged
        train["history"] = [{**{key[len("train/"):]: row[key] for key in keys[:3] if key in row},
                             "step": row.get("train/global_step", i + 1)} for i, row in enumerate(rows)]
    metrics = {"iteration": k, "train": train, "eval": _unflatten(summary, EVAL_PREFIXES), "wandb_run": run.id}
    experiment = cfg.get("experiment") or run.group
    return Record(data=value_at(cfg, ("data", "name")), model=value_at(cfg, ("model", "name")),
                  setting=value_at(cfg, ("setting", "name")) if k else "",
                  method=value_at(cfg, ("method", "name")) if k else "seed", iteration=k, seed=cfg.get("seed"),
                  experiment=experiment, source=f"wandb:{path}/{experiment}",
                  sweep=value_at(cfg, ("run", "sweep_name")), metrics=metrics, tracking=cfg.get("tracking") or {})


def pull(path: str, groups: list[str] = (), tags: list[str] = (), timeout: int = 30) -> list[Record]:
    """The iteration runs of ENTITY/PROJECT, filtered by group (any of) and tag (all of)."""
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
        records = [run_to_record(r, path) for r in runs]
    except Exception as err:  # wandb raises CommError, UsageError, ValueError, requests errors...
        raise ReportError(f"W&B API ({path}): {type(err).__name__}: {err}") from err
    return [r for r in records if r is not None]


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
