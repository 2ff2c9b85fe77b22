"""Every name drift_exp gives to a thing on disk or in the config, defined once.

- The experiment name `<data>-<model>-<method>-<setting>-s<seed>`: the run directory (Hydra's
  `hydra.run.dir` / `hydra.sweep.subdir` call :func:`experiment_name` through the OmegaConf resolver
  registered here), the W&B group, and what the report reads back (:func:`parse_experiment_name`).
- The stage table (STAGES: each stage's folder, resume key, inputs, outputs, where it runs) and what is
  derived from it: stage ids `data/prepare`, `iter_<k>/<stage>`, `base/eval`; the worker's jobs; `run.stop_after`.
- The method kinds: each one is the module `drift_exp/methods/<kind>.py`.
- The data formats (`data.format`): each one has a reader in `drift_exp/data/load.py`.

A low layer: nothing heavy and no drift_exp module but config_fields (which settings are neutral) is
imported here, so config, the pipeline, the report and the workers can all use it.
"""

from __future__ import annotations

import dataclasses
import re
from operator import attrgetter
from pathlib import Path
from typing import Any, NamedTuple

from omegaconf import OmegaConf

from drift_exp.config_fields import resume_rule_in

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
VARIANT_SEPARATOR = "+"  # <name>+<variant>: an ablation (run.variant; see variant_of below)
_NAME = re.compile("^" + re.escape(SEPARATOR).join(f"{re.escape(p.prefix)}(?P<{p.field}>{p.pattern})"
                                                       for p in _PARTS)
                   + f"(?:{re.escape(VARIANT_SEPARATOR)}(?P<variant>.+))?$")
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
    variant: str = ""  # the ablation's settings (run.variant), "" for none


def make_experiment_name(data: str, model: str, method: str, setting: str, seed: int, variant: str = "") -> str:
    """The name of one experiment: its run directory's name and its W&B run's name."""
    values = Experiment(data, model, method, setting, seed)._asdict()
    name = SEPARATOR.join(f"{p.prefix}{values[p.field]}" for p in _PARTS)
    return f"{name}{VARIANT_SEPARATOR}{variant}" if variant else name


def parse_experiment_name(name: str) -> Experiment | None:
    """The parts of a name :func:`make_experiment_name` made; None when `name` is not one."""
    m = _NAME.match(name)
    if m is None:
        return None
    return Experiment(**{**m.groupdict(), "seed": int(m["seed"]), "variant": m["variant"] or ""})


def experiment_name(cfg: Any) -> str:
    """The experiment name of a config (the Config dataclass or a composed DictConfig):
    `<data>-<model>-<method>-<setting>-s<seed>`, plus `+<variant>` for an ablation (:func:`run_variant`)."""
    return make_experiment_name(**{p.field: attrgetter(p.key)(cfg) for p in _PARTS}, variant=run_variant(cfg))


def experiment_group(cfg: Any) -> str:
    """The experiment name without its seed: the W&B group, which holds the seeds of one configuration."""
    name = SEPARATOR.join(f"{p.prefix}{attrgetter(p.key)(cfg)}" for p in _PARTS if p.field != "seed")
    variant = run_variant(cfg)
    return f"{name}{VARIANT_SEPARATOR}{variant}" if variant else name


# ---------------------------------------------------------------------------------------------------
# Ablations: a result-affecting override outside the name's fields names its own experiment

# `python -m drift_exp trainer.beta=0.2` runs in outputs/sample-tiny-drift-controlled-s42+trainer.beta_0.2 (Hydra's
# override_dirname idea, spelled so that the name is a legal override value and path: no '=' or ','). The suffix
# is recorded as run.variant in config.yaml, so workers and the report read it back without the command line;
# run.variant=<label> names a variant by hand (run.variant='' keeps the plain name).
# Overrides that never make a variant: the name's own fields and the group selections (method=, data=, +cell=...),
# how and where the run goes (run, tracking, hydra, launcher), the evaluation (a leaf: a changed eval.* reruns
# the evaluations in place), iterations (iterations=3 extends a finished 2-iteration run in place), and where a
# model or the data is read from (a local copy of the same thing). Neutral settings (config_fields.NEUTRAL) and
# values equal to the schema's default never count either, so `-m trainer.beta=0.1,0.2` names only the second.
_NOT_VARIANT_PREFIXES = ("run.", "tracking.", "hydra.", "launcher.", "eval.")
_NOT_VARIANT_KEYS = ("iterations", "seed", *LABEL_KEYS, "model.path", "model.gguf_file", "data.source",
                     "scorer.path")
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")
# Config groups whose options are ablations (drift_exp/config_groups.py): a non-default option joins the variant
# by its name (`+rpo=dpo` -> <name>+dpo), so both readings get their own run directory, W&B name and group.
ABLATION_GROUPS = {"rpo": "rpo"}  # group -> the option that keeps the plain name


def run_variant(cfg: Any) -> str:
    """The variant suffix of a config: run.variant when set; for a config Hydra is composing (with its
    `hydra` node, e.g. while it resolves hydra.run.dir) the one its overrides make (:func:`variant_of`)."""
    run = getattr(cfg, "run", None)
    variant = getattr(run, "variant", None) if run is not None else None
    if variant is None and OmegaConf.is_config(cfg) and "hydra" in cfg:
        variant = variant_of(OmegaConf.select(cfg, "hydra.overrides.task") or [], cfg)
    return variant or ""


def variant_of(overrides: Any, cfg: Any) -> str:
    """The variant named by command-line (or sweep) overrides `key=value` of a composed config `cfg`: each
    result-affecting setting outside the name whose value is not its schema default, as `key_value`, sorted,
    joined by '+'; "" for none."""
    schema = OmegaConf.get_type(cfg)
    defaults = schema() if dataclasses.is_dataclass(schema) else None
    if OmegaConf.is_list(overrides):  # Hydra's record: read the overrides as typed, references unresolved
        overrides = OmegaConf.to_container(overrides, resolve=False)
    parts = []
    for override in overrides:
        key, sep, option = str(override).lstrip("+").partition("=")
        if key in ABLATION_GROUPS:
            if option != ABLATION_GROUPS[key]:
                parts.append(_UNSAFE.sub("-", option))
            continue
        if not sep or key.startswith("~") or "@" in key or key in _NOT_VARIANT_KEYS \
                or key.startswith(_NOT_VARIANT_PREFIXES):
            continue
        if "${" in option:  # a reference (${oc.env:...}): what it resolves to may be a secret; never in a name
            continue
        value = OmegaConf.select(cfg, key, default=None, throw_on_missing=False)
        if value is None or OmegaConf.is_dict(value):  # no such setting, or a whole section (a group selection)
            continue
        if defaults is not None:
            neutral, _ = resume_rule_in(defaults, key)
            if neutral or _same(_default_at(defaults, key), value):
                continue
        if OmegaConf.is_list(value):
            value = ",".join(map(str, OmegaConf.to_container(value)))
        from drift_exp.credentials import mask_value

        if mask_value(key, str(value)) != str(value):  # named or shaped like a credential (refused anyway)
            continue
        parts.append(f"{key}_{_UNSAFE.sub('-', str(value))}")
    return VARIANT_SEPARATOR.join(sorted(set(parts)))


def _default_at(defaults: Any, key: str) -> Any:
    node = defaults
    for part in key.split("."):
        node = node.get(part, _NO_DEFAULT) if isinstance(node, dict) else getattr(node, part, _NO_DEFAULT)
        if node is _NO_DEFAULT:
            break
    return node


_NO_DEFAULT = object()


def _same(default: Any, value: Any) -> bool:
    if default is _NO_DEFAULT:
        return False
    if OmegaConf.is_list(value):
        value = OmegaConf.to_container(value)
    if isinstance(default, tuple):
        default = list(default)
    return default == value or str(getattr(default, "value", default)) == str(value)


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
DATA_FOLDER = "data"  # the prepare stage's folder
BASE_FOLDER = "base"  # the untouched model's evaluation (drift_exp.evaluation.base)
BASE_EVAL = "base_eval"  # the worker job that evaluates it

# Where a stage's work runs. In process: in the orchestrator itself. child: `python -m drift_exp.worker <job>`
# as its own process (launcher=local/slurm; inline runs the same job function in the orchestrator).
# accelerate: the same job under `accelerate launch` over the node's (or allocation's) GPUs.
IN_PROCESS, CHILD, ACCELERATE = "in_process", "child", "accelerate"
# Which folder and iterations a stage belongs to: data/ once, base/ once, iteration 0 (the warm start),
# every iteration k >= 1, or every iteration k >= 0.
ONCE_DATA, ONCE_BASE, WARM, LOOP, EVERY = "data", "base", "warm", "loop", "every"


class StageDef(NamedTuple):
    """One stage, declared once: the pipeline's schedule, the resume check, the launcher, the worker's jobs,
    run.stop_after and the run directory's layout are all read from STAGES."""

    name: str  # its DONE marker's key in its folder, and the <stage> of its id <folder>/<stage>
    scope: str  # ONCE_DATA, ONCE_BASE, WARM, LOOP or EVERY
    where: str  # IN_PROCESS, CHILD or ACCELERATE
    # What its DONE marker records, i.e. its resume key: `key` or `key=source`, source a config section
    # (its result-affecting fields) or a value the runner knows (iteration, data_file, extractor, scorer: null
    # where the stage does not use the reward model, eval_identity); a trailing `?`: recorded only where it
    # applies (drift_exp/runner.py: section).
    records: tuple[str, ...]
    reads: tuple[str, ...] = ()  # files of its folder that earlier stages wrote (checked before it runs)
    writes: tuple[str, ...] = ()  # what it leaves in its folder (a trailing / marks a folder)
    leaf: bool = False  # no later stage reads it: a changed config reruns just it
    job: str | None = None  # `python -m drift_exp.worker <job>` (CHILD / ACCELERATE)
    wandb: str | None = None  # the prefix of its numbers in W&B

    def runs_at(self, k: int | None) -> bool:
        """Whether the stage belongs to iteration k (None: the stages outside the iterations)."""
        if k is None:
            return self.scope in (ONCE_DATA, ONCE_BASE)
        return self.scope == EVERY or self.scope == (WARM if k == 0 else LOOP)


# Algorithm 1 in schedule order: data/ and base/ once, then for k = 0..K every stage that runs at k, in this order.
STAGES: tuple[StageDef, ...] = (
    StageDef(PREPARE, ONCE_DATA, IN_PROCESS, ("data", "setting", "method=method.kind", "seed", "data_file",
                                              "extractor?"),
             writes=("records.jsonl", "stats.json")),
    StageDef(EVAL, ONCE_BASE, CHILD, ("eval_identity",), writes=("eval/", "base_eval_stats.json", "metrics.json"),
             leaf=True, job=BASE_EVAL, wandb="base/eval"),
    StageDef(TRAIN, WARM, ACCELERATE, ("model", "trainer", "seed"),
             writes=("pairs.jsonl", "checkpoint/", "train_stats.json", "train_log.jsonl", "metrics.json"), job=TRAIN,
             wandb="stage/train"),
    StageDef(REQUESTS, LOOP, IN_PROCESS, ("method", "setting", "iteration"), writes=("requests.jsonl",),
             wandb="stage/requests"),
    StageDef(GENERATE, LOOP, CHILD, ("generation", "seed"), reads=("requests.jsonl",),
             writes=("completions.jsonl", "generate_stats.json"), job=GENERATE, wandb="stage/generation"),
    StageDef(PAIRS, LOOP, IN_PROCESS, ("method", "scorer"), reads=("completions.jsonl",),
             writes=("pairs.jsonl", "pairs_preview.md"), wandb="stage/pairs"),
    StageDef(TRAIN, LOOP, ACCELERATE, ("trainer", "seed"), reads=("pairs.jsonl",),
             writes=("checkpoint/", "train_stats.json", "train_log.jsonl", "metrics.json"), job=TRAIN,
             wandb="stage/train"),
    StageDef(EVAL, EVERY, CHILD, ("eval", "generation", "scorer"), writes=("eval/", "eval_stats.json", "metrics.json"),
             leaf=True, job=EVAL, wandb="eval"),
)


def stages_at(k: int | None) -> tuple[StageDef, ...]:
    """The stages of iteration k in schedule order (None: those of data/ and base/)."""
    return tuple(s for s in STAGES if s.runs_at(k))


ITERATION_STAGES = tuple(s.name for s in stages_at(1))  # iteration k >= 1, in pipeline order
WARM_START_STAGES = tuple(s.name for s in stages_at(0))  # iteration 0
LEAVES = tuple(dict.fromkeys(s.name for s in STAGES if s.leaf))  # a changed config reruns just them
WORKER_JOBS = tuple(dict.fromkeys(s.job for s in STAGES if s.job))  # python -m drift_exp.worker <job>
_ITERATION_PREFIX = "iter_"
_ITER = re.compile(re.escape(_ITERATION_PREFIX) + r"(\d+)")
ITERATION_GLOB = f"{_ITERATION_PREFIX}*"  # every iteration folder (and possibly more: check with folder_iteration)


def job_stage(job: str) -> StageDef:
    """The (first) stage a worker job runs for: its `where` says how the launcher starts it."""
    return next(s for s in STAGES if s.job == job)


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


# The job types of the W&B runs of an earlier layout (a run per iteration), which drift_exp/report/wandb_io.py
# still reads; drift_exp/tracking.py now writes one run per experiment (job_type "experiment").
WANDB_JOB_TYPES = (WARM_START, "iteration")


def folder_stages(k: int | None) -> tuple[str, ...]:
    """The stages of iteration k's folder, in pipeline order (None: the prepare folder)."""
    return tuple(s.name for s in STAGES if s.scope == ONCE_DATA) if k is None else tuple(s.name for s in stages_at(k))


class StopPoint(NamedTuple):
    stage: str  # prepare (the data stage), warm_start (the end of iteration 0) or one of ITERATION_STAGES
    iteration: int | None  # None for prepare / warm_start; a bare iteration stage means iteration 1


_STOP_AFTER = re.compile(rf"(?:{_ITER.pattern}/)?(\w+)")


def parse_stop_after(value: str) -> StopPoint | None:
    """A run.stop_after value: prepare, warm_start, <stage> or iter_<k>/<stage>; None when it is none of them."""
    m = _STOP_AFTER.fullmatch(value)
    if m is None:
        return None
    k, stage = m[1], m[2]
    if stage in (*folder_stages(None), WARM_START) and k is None:
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
