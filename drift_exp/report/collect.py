"""Read finished iterations: `iter_k/metrics.json` of run directories (the source of truth)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from drift_exp.errors import UserError
from drift_exp.names import BASE_FOLDER, ITERATION_GLOB, folder_iteration, parse_experiment_name


class ReportError(UserError):
    """The report cannot be built; the message says why and what to do."""


@dataclass
class Record:
    """One evaluated (or at least trained) policy: iteration k of one experiment."""

    data: str
    model: str
    setting: str  # '' for the base and seed models
    method: str  # the run's method label, or 'seed' (warm start, k=0) / 'base' (the untrained model)
    iteration: int
    seed: int | None
    experiment: str  # the run directory's name (the W&B group)
    source: str  # run directory, or W&B run path
    sweep: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)  # iter_k/metrics.json, or its W&B equivalent
    tracking: dict[str, Any] = field(default_factory=dict)  # the run's tracking config (project, entity)

    @property
    def row_key(self) -> tuple[str, str, str, str, int, int | None]:
        return (self.data, self.model, self.setting, self.method, self.iteration, self.seed)


def value_at(obj: Any, path: tuple[str, ...]) -> Any:
    """obj[path[0]][path[1]]...; None where any step is missing."""
    for step in path:
        if not isinstance(obj, dict) or step not in obj:
            return None
        obj = obj[step]
    return obj


def identity(run_dir: Path) -> dict[str, Any]:
    """data/model/method/setting/seed of a run: its config.yaml, else its directory name."""
    for cfg_path in (run_dir / "config.yaml", run_dir / ".hydra" / "config.yaml"):
        if cfg_path.exists():
            cfg = OmegaConf.to_container(OmegaConf.load(cfg_path), resolve=False)
            return {"data": value_at(cfg, ("data", "name")), "model": value_at(cfg, ("model", "name")),
                    "method": value_at(cfg, ("method", "name")), "setting": value_at(cfg, ("setting", "name")),
                    "seed": cfg.get("seed"), "sweep": value_at(cfg, ("run", "sweep_name")),
                    "tracking": cfg.get("tracking") or {}}
    parsed = parse_experiment_name(run_dir.name)
    if parsed is None:
        raise ReportError(f"{run_dir}: no config.yaml and the name is not <data>-<model>-<method>-<setting>-s<seed>")
    return {**parsed._asdict(), "sweep": None, "tracking": {}}


def find_runs(path: Path) -> list[Path]:
    """Run directories at or under `path` (a run, a sweep folder or outputs/): those holding iter_*/metrics.json."""
    if not path.exists():
        raise ReportError(f"{path}: no such directory")
    runs = {p.parent.parent for p in path.glob(f"**/{ITERATION_GLOB}/metrics.json") if "wandb" not in p.parts}
    return sorted(runs)


def read_run(run_dir: Path) -> list[Record]:
    """One record per iteration with a metrics.json (k = 0: the seed model, or the base model when the
    warm start was skipped), plus base/metrics.json (the untouched model's evaluation before the warm
    start, written by drift_exp.evaluation.base; the same numbers in every job of a sweep)."""
    ident = identity(run_dir)
    records = []
    files = [(p, k) for p in run_dir.glob(f"{ITERATION_GLOB}/metrics.json")
             if (k := folder_iteration(p.parent.name)) is not None]
    if (run_dir / BASE_FOLDER / "metrics.json").exists():
        files.append((run_dir / BASE_FOLDER / "metrics.json", -1))
    for path, k in sorted(files, key=lambda f: f[1]):
        try:
            metrics = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise ReportError(f"{path}: not readable as JSON ({err})") from err
        if k <= 0:
            method, setting = ("base" if k < 0 or "skipped" in metrics else "seed"), ""
        else:
            method, setting = metrics.get("method", ident["method"]), metrics.get("setting", ident["setting"])
        records.append(Record(
            data=metrics.get("data", ident["data"]), model=metrics.get("model", ident["model"]), setting=setting,
            method=method, iteration=max(k, 0), seed=metrics.get("seed", ident["seed"]), experiment=run_dir.name,
            source=str(run_dir), sweep=ident["sweep"], metrics=metrics, tracking=dict(ident["tracking"])))
    return records


def collect_local(paths: list[Path]) -> list[Record]:
    records = []
    for path in paths:
        runs = find_runs(path)
        if not runs:
            raise ReportError(f"{path}: no run directory with an iter_*/metrics.json under it")
        for run in runs:
            records.extend(read_run(run))
    return records
