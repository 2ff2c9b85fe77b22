"""Every name drift_exp gives to a thing on disk or in the config, defined once.

- The experiment name `<data>-<model>-<method>-<setting>-s<seed>`: the run directory (Hydra's
  `hydra.run.dir` / `hydra.sweep.subdir` call :func:`experiment_name` through the OmegaConf resolver
  registered here), the W&B group, and what the report reads back (:func:`parse_experiment_name`).
- The stages and their ids: `data/prepare`, `iter_<k>/<stage>`, `base/eval`; `run.stop_after` values.
- The method kinds: each one is the module `drift_exp/methods/<kind>.py`.
- The data formats (`data.format`): each one has a reader in `drift_exp/data/load.py`.

A low layer: no drift_exp module and nothing heavy is imported here, so config, the pipeline, the
report and the workers can all use it.
"""

from __future__ import annotations

import re
from operator import attrgetter
from pathlib import Path
from typing import Any, NamedTuple

from omegaconf import OmegaConf

# ---------------------------------------------------------------------------------------------------
# Experiment names


class _Part(NamedTuple):
    field: str  # the parsed name's field
    key: str  # where the config holds it
    prefix: str  # written before the value
    pattern: str  # what the value may look like when a name is parsed back


SEPARATOR = "-"
# Parts are joined by '-', so a name is only unambiguous when at most one part may hold a '-': that is
# the method label (drift-unguided, iterdpo-unguided); the data, model and setting labels are read
# without one (validate allows a '-' there; such a run is still found by its config.yaml, not its name).
_PARTS = (
    _Part("data", "data.name", "", r"[^-]+"),
    _Part("model", "model.name", "", r"[^-]+"),
    _Part("method", "method.name", "", r".+"),
    _Part("setting", "setting.name", "", r"[^-]+"),
    _Part("seed", "seed", "s", r"\d+"),
)
_NAME = re.compile("^" + re.escape(SEPARATOR).join(f"{re.escape(p.prefix)}(?P<{p.field}>{p.pattern})"
                                                       for p in _PARTS) + "$")
# The characters validate allows in a label that becomes part of the run directory's name.
LABEL = re.compile(r"[A-Za-z0-9_.+-]+")
LABEL_KEYS = tuple(p.key for p in _PARTS if p.key.endswith(".name"))


class Experiment(NamedTuple):
    """What an experiment name says."""

    data: str
    model: str
    method: str
    setting: str
    seed: int


def make_experiment_name(data: str, model: str, method: str, setting: str, seed: int) -> str:
    """The name of one experiment: its run directory's name and its W&B group."""
    values = Experiment(data, model, method, setting, seed)._asdict()
    return SEPARATOR.join(f"{p.prefix}{values[p.field]}" for p in _PARTS)


def parse_experiment_name(name: str) -> Experiment | None:
    """The parts of a name :func:`make_experiment_name` made; None when `name` is not one."""
    m = _NAME.match(name)
    if m is None:
        return None
    return Experiment(**{**m.groupdict(), "seed": int(m["seed"])})


def experiment_name(cfg: Any) -> str:
    """The experiment name of a config (the Config dataclass or a composed DictConfig)."""
    return make_experiment_name(**{p.field: attrgetter(p.key)(cfg) for p in _PARTS})


RESOLVER = "drift_exp.experiment_name"


def _resolve_experiment_name(*, _root_: Any) -> str:
    return experiment_name(_root_)


def register_resolvers() -> None:
    """Let conf/config.yaml write `${drift_exp.experiment_name:}` (Hydra's run dir and sweep subdir).
    Idempotent; runs when this module is first imported, and again wherever a config is composed."""
    if not OmegaConf.has_resolver(RESOLVER):
        OmegaConf.register_new_resolver(RESOLVER, _resolve_experiment_name)


# ---------------------------------------------------------------------------------------------------
# Stages and their ids

PREPARE = "prepare"  # extract the records (folder data/)
WARM_START = "warm_start"  # iteration 0 (a run.stop_after value; its stages are train and eval)
REQUESTS, GENERATE, PAIRS, TRAIN, EVAL = "requests", "generate", "pairs", "train", "eval"
ITERATION_STAGES = (REQUESTS, GENERATE, PAIRS, TRAIN, EVAL)  # iteration k >= 1, in pipeline order
WARM_START_STAGES = (TRAIN, EVAL)  # iteration 0
LEAVES = (EVAL,)  # stages no later stage reads: a changed config reruns just them
DATA_FOLDER = "data"  # the prepare stage's folder
BASE_FOLDER = "base"  # the untouched model's evaluation (drift_exp.evaluation.base)
BASE_EVAL = "base_eval"  # the worker job that evaluates it
WORKER_JOBS = (GENERATE, TRAIN, EVAL, BASE_EVAL)  # python -m drift_exp.worker <job>
_ITERATION_PREFIX = "iter_"
_ITER = re.compile(re.escape(_ITERATION_PREFIX) + r"(\d+)")
ITERATION_GLOB = f"{_ITERATION_PREFIX}*"  # every iteration folder (and possibly more: check with folder_iteration)


def iteration_folder(k: int | None) -> str:
    """The folder of iteration k in a run directory; None: the prepare stage's."""
    return DATA_FOLDER if k is None else f"{_ITERATION_PREFIX}{k}"


def folder_iteration(folder: str) -> int | None:
    """k of an `iter_<k>` folder name; None for any other name."""
    m = _ITER.fullmatch(folder)
    return int(m[1]) if m else None


def stage_id(k: int | str | None, stage: str) -> str:
    """How logs, errors and DRIFT_EXP_KILL_AT name a stage: data/prepare, iter_<k>/<stage>, base/eval.
    k: the iteration, None for the prepare stage, or a folder's name (base)."""
    return f"{k if isinstance(k, str) else iteration_folder(k)}/{stage}"


def iteration_run_name(cfg: Any, k: int) -> str:
    """The W&B run (and TRL run_name / judge output name) of iteration k: <experiment>-iter<k>."""
    return f"{experiment_name(cfg)}-iter{k}"


# W&B job types: iteration 0 and every later one (the report reads back only these).
WANDB_JOB_TYPES = (WARM_START, "iteration")


def wandb_job_type(k: int) -> str:
    return WANDB_JOB_TYPES[0] if k == 0 else WANDB_JOB_TYPES[1]


def folder_stages(k: int | None) -> tuple[str, ...]:
    """The stages of iteration k's folder, in pipeline order (None: the prepare folder)."""
    return (PREPARE,) if k is None else WARM_START_STAGES if k == 0 else ITERATION_STAGES


class StopPoint(NamedTuple):
    stage: str  # prepare, warm_start or one of ITERATION_STAGES
    iteration: int | None  # None for prepare / warm_start; a bare iteration stage means iteration 1


_STOP_AFTER = re.compile(rf"(?:{_ITER.pattern}/)?(\w+)")


def parse_stop_after(value: str) -> StopPoint | None:
    """A run.stop_after value: prepare, warm_start, <stage> or iter_<k>/<stage>; None when it is none of them."""
    m = _STOP_AFTER.fullmatch(value)
    if m is None:
        return None
    k, stage = m[1], m[2]
    if stage in (PREPARE, WARM_START) and k is None:
        return StopPoint(stage, None)
    if stage in ITERATION_STAGES:
        return StopPoint(stage, int(k) if k is not None else 1)
    return None


# ---------------------------------------------------------------------------------------------------
# Methods

# method.kind: each kind is a module drift_exp/methods/<kind>.py that defines PAIR_BUILDER (its pair builder). The
# kinds are the modules present, found without importing them (the config check runs before anything heavy), so
# adding a method is its module and its conf/method/ file, nothing else.
METHODS_DIR = Path(__file__).parent / "methods"


def method_kinds() -> tuple[str, ...]:
    """The method kinds: the modules of drift_exp/methods that assign PAIR_BUILDER at top level, sorted."""
    return tuple(sorted(p.stem for p in METHODS_DIR.glob("*.py")
                        if not p.stem.startswith("_") and _defines_pair_builder(p)))


def _defines_pair_builder(path: Path) -> bool:
    return any(line.startswith("PAIR_BUILDER =") or line.startswith("PAIR_BUILDER:")
               for line in path.read_text(encoding="utf-8").splitlines())


# ---------------------------------------------------------------------------------------------------
# Data formats

# data.format: each one a reader in drift_exp/data/load.py's READERS; auto picks annotation or released from
# what the source looks like (WildFeedback only).
DATA_FORMATS = ("auto", "annotation", "released", "ultrafeedback_binarized", "ultrafeedback_raw")

# ---------------------------------------------------------------------------------------------------
# W&B: what one experiment's run holds (the tracker writes these keys; the dashboards and the report read them)

# One W&B run per experiment (every iteration, the warm start and the Base row in it), named by the experiment,
# grouped by the experiment without its seed (so a group is the seeds of one configuration).
WANDB_ITERATION = "iteration"  # the x axis of every per-iteration number (define_metric step_metric)
WANDB_TRAIN_STEP = "train/global_step"  # optimizer steps summed over the iterations: the training curves' x axis
WANDB_TRAIN_ITERATION_STEP = "train/iteration_step"  # the step within one training stage (restarts at 1)
WANDB_TRAIN = "train/"  # TRL's per-step logs: train/loss, train/rewards/margins, train/signal/...
WANDB_EVAL = "eval/"  # pi_k's evaluation, per iteration: eval/<benchmark>/<metric>
WANDB_STAGE = "stage/"  # the stages' numbers, per iteration: stage/<requests|generation|pairs|train>/<number>
WANDB_SIGNAL = "signal/"  # the section 5 whole-stage summaries, per iteration
WANDB_HELDOUT = "heldout/"  # the held-out pairs at the end of each training stage: loss, reward_accuracy, ...
WANDB_BASE = "base/"  # the untouched starting model's evaluation (summary): base/eval/<benchmark>/<metric>
WANDB_PAIRS_TABLE = "pairs/preview"  # a table per iteration of the pairs it built
WANDB_PER_ITERATION = (WANDB_EVAL, WANDB_STAGE, WANDB_SIGNAL, WANDB_HELDOUT)  # plotted against WANDB_ITERATION

register_resolvers()  # a SLURM job (submitit) resolves the sweep subdir in a process that composed nothing
