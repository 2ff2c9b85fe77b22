"""Preflight: `python -m drift_exp.plan [OVERRIDES...]` proves every job of a run or sweep before a GPU-hour is spent.

It takes exactly the overrides a run or a sweep takes (`+sweep=table3 launcher.num_processes=8`), expands
the jobs as Hydra's multirun would, composes each job's config and checks, without loading any weights:

- generation: tensor parallel legal for the model's heads; replicas x tensor parallel = the node's GPUs;
  weights + KV cache fit `launcher.gpu_memory_gb` (for the generate stage and for the evaluation);
- training: the batch divides the world size; the generated DeepSpeed ZeRO-3 config validates; the
  launchers/MEMORY.md estimate (plus ~8 GiB of CUDA context, NCCL buffers, fragmentation) fits;
- the data and benchmark sources exist or are hub ids; judge keys are set where the evaluation needs them;
  the disk holds the 16-bit checkpoints the job keeps;
- an estimate of GPU-hours and wall time: tokens to generate (expected reply lengths from the data where it
  can be read, else the stated assumptions below) and to train, at the assumed throughputs below, plus the
  fixed cost of every stage (engine start-up, ZeRO-3 initialisation, checkpoint gather and save); and of
  judge cost.

The verdict is the run's: whatever the run would refuse (a config value, a missing package or path, too
little disk) is a problem here, and a job with a problem fails the plan. It prints one row per job, then every
problem with the config key to change, and exits 1 if there is any. `preflight(cfg, run_dir)` runs the same
checks at the start of every run (`run.preflight=false` skips them). The GPU count is `launcher.num_processes`
(else the visible GPUs) and the GPU memory `launcher.gpu_memory_gb` (else the visible GPU's); every number
here is an estimate.

`validate(cfg)` is the config check every run starts with (before anything heavy is imported): the
sections' own checks (drift_exp/config.py), what the method needs of the config (drift_exp/methods), and
what this machine must have (packages, local paths).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path

from drift_exp.config import Config, require
from drift_exp.devices import visible_gpus
from drift_exp.errors import ConfigError
from drift_exp.generation.layout import Problem, choose_layout
from drift_exp.hub import scorer_uses
from drift_exp.locations import Kind, locate
from drift_exp.methods import build_method, data_family, method_needs
from drift_exp.model_shapes import Shape, ShapeUnknown, model_shape
from drift_exp.names import experiment_name, iteration_folder

log = logging.getLogger(__name__)
GIB = 2**30
# CUDA context, NCCL buffers and allocator fragmentation on top of the training estimate (launchers/MEMORY.md).
TRAIN_OVERHEAD_GIB = 8.0
# Assumed throughputs on H100-class GPUs (not measurements; correct them from generate_stats.json and
# train_stats.json of a real run): vLLM decoding ~2,500 tokens/s per GPU for a 7.6 B model at large batch,
# inversely proportional to the parameter count; DPO training at 400 TFLOP/s per GPU (~40 % of bf16 peak),
# 10 x params FLOPs per token (forward + backward of the policy, recomputation, reference forward).
GEN_TOKENS_PER_S_7B = 2500.0
TRAIN_FLOPS_PER_S = 400e12
# Expected lengths. Tokens are converted from characters at CHARS_PER_TOKEN (about 4 characters per token for
# English text with the Qwen2.5 and Gemma 3 tokenizers; our estimate). Policy samples and the pairs' replies are
# taken as long as the replies of the records the method iterates on, measured from the data where the plan can
# read it cheaply (the bundled samples, local sources under DATA_READ_LIMIT bytes); otherwise these assumptions
# (our estimates, not measurements: correct them from a real run's data/stats.json and completions):
CHARS_PER_TOKEN = 4.0
DATA_READ_LIMIT = 64 * 2**20
ASSUMED_CHARS = {  # family -> (conversation context before the judged reply, the reply)
    "wildfeedback": (2000.0, 1500.0),  # WildChat conversations: a few turns of context, GPT-4-length replies
    "ultrafeedback": (600.0, 1200.0),  # one instruction, one reply
}
# Evaluation replies: WildBench, Qwen2.5-14B-Instruct's mean output length before training (paper Table 5:
# 3,683 characters); AlpacaEval and the proxy prompts: our estimate.
EVAL_REPLY_CHARS = {"wildbench": 3683.0, "alpaca_eval": 2000.0, "proxy": 1500.0}
# Fixed costs per stage (our estimates for H100-class nodes reading weights from a network file system; a real
# run's generate.log / train.log timestamps correct them). A weight-dependent part is the 16-bit checkpoint moved
# at the given rate.
PROCESS_START_S = 30.0  # a child process importing torch, transformers, TRL (every generate / train / eval stage)
VLLM_START_S = 120.0  # vLLM engine: memory profiling, CUDA-graph capture and compilation, after loading weights
LOAD_BYTES_PER_S = 1.0e9  # reading a checkpoint from disk (vLLM, ZeRO-3, the reference model)
# DeepSpeed ZeRO-3 set-up: transformers loads the checkpoint under zero.Init, partitioning parameter by parameter
# (minutes for 7-14 B), then the engine and the optimizer states.
ZERO3_INIT_S = 180.0
SAVE_BYTES_PER_S = 0.25e9  # gathering the ZeRO-3 shards to one rank and writing the 16-bit safetensors
# The last reply of a generation stage decodes almost alone: max length at ~80 tokens/s for a 7.6 B model (our
# estimate of single-sequence vLLM decoding on one H100), slower in proportion to the parameters.
TAIL_TOKENS_PER_S_7B = 80.0
# A WildBench judge call (gpt-4o, ~2,500 prompt and ~800 reply tokens at ~80-100 tokens/s) takes about 10 s (our
# estimate); eval.judge.max_concurrency of them run at once.
JUDGE_CALL_S = 10.0
# TRL pads each micro-batch (chosen and rejected of micro_batch_size pairs) to its longest sequence. For a length
# spread like WildChat's (a coefficient of variation around 0.6), the longest of 8 sequences is ~1.8x the mean
# (our estimate), up to trainer.max_length.
PADDED_OVER_MEAN = 1.8

# Records the paper's data sets hold (paper §3 / Table 1: 10,632 DSAT and 4,478 SAT conversations, 491
# DSAT->SAT seed pairs; UltraFeedback binarized train_prefs: 61,135 prompts), for full-setting estimates.
PAPER_RECORDS = {"wildfeedback": {"dsat": 10632, "sat": 4478, "seed": 491}, "ultrafeedback": {"prompt": 61135}}
BENCHMARK_PROMPTS = {"alpaca_eval": 805, "wildbench": 1024, "proxy": 16}
# Judge cost per evaluation: WildBench WB-Score, ~2,500 prompt + ~800 reply tokens per task at eval.judge.price_*;
# AlpacaEval 2's GPT-4-Turbo annotator, assumed ~$5 per 805 instructions.
WB_JUDGE_TOKENS = (2500, 800)
ALPACA_EVAL_USD = 5.0


# ---------------------------------------------------------------------------------------- the config check


def validate(cfg: Config, environment: bool = True) -> None:
    """Check the config; raise ConfigError naming the key. Every run does this before anything heavy.

    The sections' values (Config.validate), then what the method needs of them, then (environment=True)
    what this machine must have: the packages and the local paths the run reads. environment=False leaves
    that last part out: the preflight plans jobs for another node and reports it as warnings
    (`environment_problems`)."""
    cfg.validate()
    method_checks(cfg)
    if environment:
        require(_package_checks(cfg))
        check_local_paths(cfg)


def method_checks(cfg: Config) -> None:
    """The settings the configured method cannot work with on the configured data (its config_problems)."""
    for key, why in build_method(cfg.method).config_problems(data_family(cfg.data.format), cfg.generation):
        raise ConfigError(f"{key} {why}")


def _package_checks(cfg: Config) -> list[tuple[str, bool, str]]:
    """The packages this run needs on this machine."""
    return [
        ("generation.backend", cfg.generation.backend != "vllm" or _installed("vllm"),
         "is vllm, but the vllm package is not installed (pip install -e '.[gpu]', or generation=hf)"),
        ("launcher.deepspeed", not (cfg.launcher.name != "inline" and cfg.launcher.deepspeed)
         or _installed("deepspeed"),
         f"is true with launcher={cfg.launcher.name}, but the deepspeed package is not installed "
         "(pip install -e '.[gpu]', or pass launcher.deepspeed=false)"),
    ]


def _installed(package: str) -> bool:
    return importlib.util.find_spec(package) is not None


def environment_problems(cfg: Config) -> list[tuple[str, str]]:
    """What this machine lacks for the run (packages, local paths), as (key, why) pairs."""
    problems = [(key, why) for key, ok, why in _package_checks(cfg) if not ok]
    try:
        check_local_paths(cfg)
    except ConfigError as err:
        key = re.match(r"[\w.]+", str(err))
        problems.append((key.group(0) if key else "config", str(err)))
    return problems


def check_local_paths(cfg: Config) -> None:
    """Local paths the run reads must exist (drift_exp.locations decides what is a local path). The reward
    model is checked only where it is loaded: the proxy evaluation, or a method that ranks with it."""
    bench = cfg.eval.benchmarks
    named = [("model.path", cfg.model.path, ("tiny",), True, "a local model folder or a hub id"),
             ("scorer.path", cfg.scorer.path, ("tiny", "auto"), bool(scorer_uses(cfg)),
              "a local reward model folder, a hub id, tiny or auto"),
             ("data.source", cfg.data.source, ("sample",), True, "'sample', a local file or folder, "
              "or a hub dataset id"),
             ("eval.alpaca_eval_source", cfg.eval.alpaca_eval_source, ("sample",), "alpaca_eval" in bench,
              "'sample', a file or a hub id"),
             ("eval.wildbench_source", cfg.eval.wildbench_source, ("sample",), "wildbench" in bench,
              "'sample', a file or a hub id")]
    for key, value, builtins, used, what in named:
        where = locate(value, builtins)
        if used and where.kind == Kind.local and not where.exists:
            raise ConfigError(f"{key}={value!r}: no such file or folder (expected {what})")
    proxy = cfg.eval.proxy_source
    if "proxy" in bench and proxy != "sample" and not Path(proxy).expanduser().is_file():
        raise ConfigError(f"eval.proxy_source={proxy!r}: no such file (expected 'sample' or a local .json/.jsonl)")


# ------------------------------------------------------------------------------------------------- the plan


@dataclass
class JobPlan:
    name: str
    overrides: list[str]
    row: dict[str, str] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    disk_bytes: float = 0.0
    disk_root: Path | None = None


def check(cfg: Config, run_dir: Path | None = None, runtime: bool = False) -> JobPlan:
    """Every preflight check of one job. runtime: GPUs as visible here (not the planned node's)."""
    job = JobPlan(experiment_name(cfg), [])
    problems, warnings = job.problems, job.warnings
    try:
        validate(cfg, environment=runtime)  # planning for another node: what this machine lacks is a warning
    except ConfigError as err:
        problems.append((str(err).split(" ", 1)[0], str(err).split(" ", 1)[-1]))
    if not runtime:
        # Packages: the plan usually runs on a login node without the GPU stack, so what it lacks is the job
        # node's business (a warning). Local paths: the same shared file system, so a missing one fails the job.
        warnings += [(key, f"{why} (here; the job's node needs it)") for key, ok, why in _package_checks(cfg)
                     if not ok]
        try:
            check_local_paths(cfg)
        except ConfigError as err:
            problems.append((str(err).split("=", 1)[0], str(err)))
    for key, value in (("generation.replicas", cfg.generation.replicas), ("launcher.gpu_memory_gb",
                                                                          cfg.launcher.gpu_memory_gb)):
        if value is not None and value <= 0:
            problems.append((key, f"must be > 0 or null, got {value}"))
    seen, seen_memory = visible_gpus()
    if runtime:
        gpus = seen
    elif cfg.launcher.num_processes is not None:
        gpus = cfg.launcher.num_processes
    elif cfg.launcher.gpu_memory_gb is not None:
        gpus = max(seen, 1)  # a GPU memory was named: plan for (at least) one GPU of that size
    else:
        gpus = seen
        if not seen and cfg.generation.backend == "vllm":
            warnings.append(("launcher.num_processes", "null and no GPU visible here: planned for one process; "
                             "pass launcher.num_processes=<GPUs per node> to plan a GPU node"))
    memory = cfg.launcher.gpu_memory_gb if cfg.launcher.gpu_memory_gb is not None else seen_memory
    if gpus and memory is None:
        warnings.append(("launcher.gpu_memory_gb", "not set and no GPU visible: memory not checked"))
    try:
        shape: Shape | None = model_shape(cfg.model.path, cfg.model.tiny)
    except ShapeUnknown as err:
        shape = None
        # The plan must prove the memory and tensor-parallel checks; a run can still go on without them.
        (warnings if runtime else problems).append(("model.path", f"{err}; the memory and tensor-parallel checks "
                                                    "need the model's shape"))
    _generation(cfg, shape, gpus, memory, job)
    _training(cfg, shape, gpus, memory, job, runtime)
    _sources(cfg, job)
    _judge(cfg, job)
    _disk(cfg, shape, run_dir, job, runtime)
    _cost(cfg, shape, gpus, job)
    return job


def _generation(cfg: Config, shape: Shape | None, gpus: int, memory: float | None, job: JobPlan) -> None:
    from drift_exp.evaluation.stage import eval_generation_config

    gen = choose_layout(cfg.generation, shape, gpus, memory)
    job.problems += gen.problems
    job.row["generate"] = f"{gen.describe()}" + (f" {gen.memory_gib:.0f}G" if gen.memory_gib and gpus else "")
    if cfg.eval.benchmarks:
        ev_cfg = eval_generation_config(cfg.eval, cfg.generation)
        # The evaluation runs one engine at the default tensor-parallel size for its longer sequences.
        ev = choose_layout(replace(ev_cfg, replicas=None), shape, gpus, memory)
        job.problems += [(k, f"(evaluation, {ev_cfg.max_prompt_length}+{ev_cfg.max_new_tokens} tokens) {w}")
                         for k, w in ev.problems if (k, w) not in gen.problems]
        job.row["eval"] = f"TP{ev.tensor_parallel}" + (f" {ev.memory_gib:.0f}G" if ev.memory_gib and gpus else "")


def _training(cfg: Config, shape: Shape | None, gpus: int, memory: float | None, job: JobPlan,
              runtime: bool) -> None:
    from drift_exp.training.deepspeed import OPTIMIZER_BYTES, estimate_gpu_memory
    from drift_exp.training.dpo import derive_batch

    if cfg.launcher.name == "inline" and (cfg.launcher.num_processes or 1) > 1:
        # Planned as the node the user names; running it inline would silently train on one process.
        job.problems.append(("launcher.name", f"inline trains in one process, not launcher.num_processes="
                             f"{cfg.launcher.num_processes}; use launcher=local (or slurm)"))
    if cfg.launcher.name == "inline" and not cfg.launcher.num_processes:
        world = 1
    else:
        from drift_exp.launch import nodes

        world = (cfg.launcher.num_processes or max(gpus, 1)) * nodes(cfg)  # SLURM_NNODES wins in an allocation
    try:
        micro, accum = derive_batch(cfg.trainer.global_batch_size, cfg.trainer.micro_batch_size, world)
    except ConfigError as err:
        job.problems.append(("trainer.global_batch_size", str(err).split(" ", 1)[-1]))
        job.row["batch"] = "-"
        return
    job.row["batch"] = f"{micro}x{accum}x{world}={micro * accum * world}"
    if cfg.launcher.name != "inline" and cfg.launcher.deepspeed:
        bf16 = bool(gpus) and cfg.trainer.bf16 is not False
        job.problems += deepspeed_problems(cfg, world, bf16)
    if shape is None or not gpus:
        return
    optim = "adamw" if "adam" in cfg.trainer.optim else cfg.trainer.optim
    live = cfg.trainer.ref_mode == "live"  # auto precomputes the reference log-probs on GPUs
    est = estimate_gpu_memory(shape.training(), world, micro, cfg.trainer.max_length,
                              optim if optim in OPTIMIZER_BYTES else "adamw", live)
    need = est["peak"] + TRAIN_OVERHEAD_GIB
    job.row["train"] = f"{need:.0f}G"
    if memory is not None and need > memory:
        job.problems.append(("launcher.gpu_memory_gb", f"training needs ~{need:.1f} GiB per GPU (ZeRO-3 estimate "
                             f"{est['peak']} + {TRAIN_OVERHEAD_GIB:g} overhead, micro-batch {micro}, world {world}), "
                             f"over {memory:g}; lower trainer.micro_batch_size (pin trainer.global_batch_size to keep "
                             "the batch) or train on more GPUs (launcher.num_processes / launcher.num_machines)"))


def deepspeed_problems(cfg: Config, world: int, bf16: bool) -> list[Problem]:
    """The generated ZeRO-3 json, validated by DeepSpeed's own DeepSpeedConfig for this world size."""
    from drift_exp.training.deepspeed import zero3_config

    try:
        config = zero3_config(cfg.trainer, world, bf16)
    except ConfigError as err:
        return [("trainer.global_batch_size", str(err).split(" ", 1)[-1])]
    try:
        from deepspeed.runtime.config import DeepSpeedConfig
    except ImportError:
        return [("launcher.deepspeed", "DeepSpeed is not installed (pip install -e '.[gpu]'); or set it false")]
    micro, accum = config["train_micro_batch_size_per_gpu"], config["gradient_accumulation_steps"]
    if config["train_batch_size"] != micro * accum * world:  # what DeepSpeed asserts at launch
        return [("trainer.global_batch_size", f"train_batch_size {config['train_batch_size']} != {micro} x {accum} "
                 f"x {world}")]
    try:
        # Outside a process group DeepSpeedConfig reads the world size as 1: hand it the one-rank batch, so
        # it checks every key and value of the json; the world-size identity is checked above.
        DeepSpeedConfig(dict(config, train_batch_size=micro * accum))
    except Exception as err:  # pydantic ValidationError, AssertionError: the json itself is wrong
        return [("launcher.deepspeed", f"DeepSpeed rejects the generated ZeRO-3 config: {type(err).__name__}: {err}")]
    return []


def _sources(cfg: Config, job: JobPlan) -> None:
    sources = [("data.source", cfg.data.source)]
    names = {"alpaca_eval": "eval.alpaca_eval_source", "wildbench": "eval.wildbench_source",
             "proxy": "eval.proxy_source"}
    sources += [(names[b], getattr(cfg.eval, names[b].split(".")[1])) for b in cfg.eval.benchmarks if b in names]
    for key, source in sources:
        where = locate(source, ("sample",))
        if where.kind == Kind.local and not where.exists:
            if key not in {k for k, _ in job.problems}:  # check_local_paths may have named it already
                job.problems.append((key, f"{key}={source!r}: no such file or folder"))


def _judge(cfg: Config, job: JobPlan) -> None:
    ev = cfg.eval
    if "wildbench" in ev.benchmarks and ev.judge.enabled:
        if not ev.judge.base_url:
            job.warnings.append(("eval.judge.base_url", "not set (DRIFT_JUDGE_BASE_URL): WildBench outputs are "
                                 "written but not scored"))
        elif ev.judge.api_key_env and not os.environ.get(ev.judge.api_key_env):
            job.problems.append(("eval.judge.api_key_env", f"the judge at {ev.judge.base_url} needs "
                                 f"${ev.judge.api_key_env}, which is not set (export it, or set "
                                 "eval.judge.api_key_env='' for no auth)"))
    if "alpaca_eval" in ev.benchmarks and ev.alpaca_eval_judge and not (
            os.environ.get("OPENAI_API_KEY") or os.environ.get("OPENAI_CLIENT_CONFIG_PATH")):
        job.warnings.append(("eval.alpaca_eval_judge", "OPENAI_API_KEY is not set: AlpacaEval 2 win rates will "
                             "be skipped (outputs are still written)"))


def _disk(cfg: Config, shape: Shape | None, run_dir: Path | None, job: JobPlan, runtime: bool) -> None:
    if shape is None:
        return
    if run_dir is None:
        run_dir = Path("outputs") / "sweeps" / cfg.run.sweep_name / experiment_name(cfg)
    # One 16-bit checkpoint per stage (warm start + K iterations); a checkpoint already there costs nothing more.
    kept = [k for k in range(cfg.iterations + 1) if not (run_dir / iteration_folder(k) / "checkpoint").is_dir()]
    job.disk_bytes = len(kept) * shape.weight_bytes()
    root = run_dir.resolve()
    while not root.exists():
        root = root.parent
    job.disk_root = root
    job.row["disk"] = f"{job.disk_bytes / 1e9:.0f}GB"
    free = free_bytes(root)
    if job.disk_bytes > free:
        # The run refuses to start on a disk that cannot hold its checkpoints, so the plan fails the job too
        # (it reads the disk the run directory would be on from here: a cluster's shared file system).
        job.problems.append((
            "hydra.run.dir", f"the job keeps {len(kept)} checkpoints, ~{job.disk_bytes / 1e9:.0f} GB; {root} has "
            f"{free / 1e9:.0f} GB free (run elsewhere: hydra.run.dir / hydra.sweep.dir)"))


def free_bytes(root: Path) -> float:
    """Free space of the file system holding `root`."""
    return float(shutil.disk_usage(root).free)


@dataclass(frozen=True)
class Lengths:
    """Expected characters of a record's context and reply, and where the numbers come from."""

    context: float
    reply: float
    source: str


@lru_cache(maxsize=16)
def _measured(source: str, fmt: str, split: str, record_kind: str) -> tuple[float, float] | None:
    """Mean characters of the context and the reply of the records of `record_kind` in a source the plan can
    read quickly (the bundled sample, a local source under DATA_READ_LIMIT); None otherwise."""
    from drift_exp.config import DataConfig, OnInvalid

    where = locate(source, ("sample",))
    if where.kind == Kind.local and where.path is not None:
        if _size_within(where.path, DATA_READ_LIMIT) is None:
            return None
    elif where.kind != Kind.builtin:
        return None
    from drift_exp.data.load import load_records
    from drift_exp.errors import UserError

    try:
        records, _ = load_records(DataConfig(name="plan", source=source, format=fmt, split=split,
                                             on_invalid=OnInvalid.skip))
    except (UserError, OSError, ValueError):
        return None
    pool = [r for r in records if r.kind == record_kind]
    if not pool:
        return None
    # The reply a method's samples stand in for: the DSAT reply (dsat), the SAT reply (sat), the data set's
    # chosen (pref); the context is every message before it.
    replies = [(r.rejected if r.kind == "dsat" else r.chosen) or "" for r in pool]
    contexts = [sum(len(m["content"]) for m in r.prompt) for r in pool]
    return sum(contexts) / len(pool), sum(map(len, replies)) / len(pool)


def _size_within(path: Path, limit: int, max_entries: int = 256) -> int | None:
    """Bytes of a regular file, or of the regular files in a small folder; None when it is anything else (a FIFO,
    a device), larger than `limit`, or a folder of more than `max_entries` entries (never walked further)."""
    if path.is_file():
        size = path.stat().st_size
        return size if size <= limit else None
    if not path.is_dir():
        return None
    total, seen = 0, 0
    for entry in path.rglob("*"):
        seen += 1
        if seen > max_entries:
            return None
        if entry.is_file():
            total += entry.stat().st_size
            if total > limit:
                return None
    return total


def expected_lengths(cfg: Config, record_kind: str) -> Lengths:
    measured = _measured(cfg.data.source, cfg.data.format, cfg.data.split, record_kind)
    if measured is not None:
        return Lengths(*measured, source=f"measured on {cfg.data.source}")
    context, reply = ASSUMED_CHARS[data_family(cfg.data.format)]
    return Lengths(context, reply, source="assumed")


def _tokens(chars: float, cap: int) -> float:
    return min(float(cap), chars / CHARS_PER_TOKEN)


def _cost(cfg: Config, shape: Shape | None, gpus: int, job: JobPlan) -> None:
    needs = method_needs(cfg.method, cfg.data.format)
    counts = PAPER_RECORDS.get(cfg.data.name, {})
    available = counts.get(needs.record_kind, counts.get("prompt"))
    records = min(x for x in (cfg.setting.max_records, available) if x is not None) if (
        cfg.setting.max_records or available) else None
    if records is None or shape is None:
        job.row["GPU-h"] = "?"
        return
    lengths = expected_lengths(cfg, needs.record_kind)
    reply = _tokens(lengths.reply, cfg.generation.max_new_tokens)
    gen_tokens = cfg.iterations * records * needs.samples_per_record * reply
    evals = cfg.iterations + 1 + (1 if cfg.eval.base_model and cfg.eval.benchmarks else 0)
    eval_prompts = {b: min(BENCHMARK_PROMPTS[b], cfg.eval.limit or 10**9) for b in cfg.eval.benchmarks}
    gen_tokens += evals * sum(n * _tokens(EVAL_REPLY_CHARS[b], cfg.eval.max_new_tokens)
                              for b, n in eval_prompts.items())
    pairs = cfg.iterations * records * needs.pairs_per_record
    seed_epochs = counts.get("seed", 0) * cfg.trainer.warm_start_epochs
    # Each pair trains on two sequences (prompt + chosen, prompt + rejected), cut to trainer.max_length and
    # padded to the longest of their micro-batch.
    prompt = _tokens(lengths.context, cfg.trainer.max_prompt_length or cfg.trainer.max_length // 2)
    per_pair = 2 * min(float(cfg.trainer.max_length), PADDED_OVER_MEAN * (prompt + reply))
    train_tokens = (pairs * cfg.trainer.epochs + seed_epochs) * per_pair
    scale = 7.62e9 / shape.params  # the throughputs above are for a 7.6 B model
    gen_s = gen_tokens / (GEN_TOKENS_PER_S_7B * scale)  # GPU-seconds
    train_s = 10 * shape.params * train_tokens / TRAIN_FLOPS_PER_S
    fixed_s = fixed_seconds(cfg, shape, evals)
    gpu_h = (gen_s + train_s) / 3600
    job.row["gen Mtok"] = f"{gen_tokens / 1e6:.0f}"
    job.row["train Mtok"] = f"{train_tokens / 1e6:.0f}"
    nodes_gpus = max(gpus, 1)
    wall_s = (gen_s + train_s) / nodes_gpus + fixed_s
    usd, judge_s = _judge_cost(cfg, evals)
    wall_s += judge_s
    job.row["GPU-h"] = f"{gpu_h + fixed_s * nodes_gpus / 3600:.0f}"
    job.row["fixed h"] = f"{fixed_s / 3600:.1f}"
    job.row["wall h"] = f"{wall_s / 3600:.1f}" + ("" if gpus else " (1 GPU)")
    job.row["lengths"] = f"{lengths.reply:.0f}c {lengths.source.split()[0]}"
    job.row["judge $"] = f"{usd:.0f}"


def fixed_seconds(cfg: Config, shape: Shape, evals: int) -> float:
    """Wall seconds a job spends outside decoding and training steps: each generation or evaluation stage starts
    a process and a vLLM engine (or loads the HF model) and decodes a last reply almost alone; each training
    stage starts a process, loads policy and reference, sets up ZeRO-3 and gathers and saves the checkpoint."""
    weights = shape.weight_bytes()
    load = weights / LOAD_BYTES_PER_S
    engine = VLLM_START_S if cfg.generation.backend == "vllm" else 0.0
    tail = lambda tokens: tokens / (TAIL_TOKENS_PER_S_7B * 7.62e9 / shape.params)  # noqa: E731
    generate = PROCESS_START_S + load + engine + tail(cfg.generation.max_new_tokens)
    evaluate = PROCESS_START_S + load + engine + tail(cfg.eval.max_new_tokens) if cfg.eval.benchmarks else 0.0
    zero3 = ZERO3_INIT_S if cfg.launcher.name != "inline" and cfg.launcher.deepspeed else 0.0
    # The policy, and a second model where the reference is not the policy's own starting weights or is held live.
    loads = 2 if cfg.trainer.ref_mode == "live" or cfg.trainer.ref == "initial" else 1
    train = PROCESS_START_S + loads * load + zero3 + weights / SAVE_BYTES_PER_S
    trainings = cfg.iterations + (1 if cfg.trainer.warm_start_epochs else 0)
    return cfg.iterations * generate + evals * evaluate + trainings * train


def _judge_cost(cfg: Config, evals: int) -> tuple[float, float]:
    """(USD, wall seconds) of the judges of every evaluation of the job."""
    usd, seconds = 0.0, 0.0
    ev = cfg.eval
    if "wildbench" in ev.benchmarks and ev.judge.enabled:
        tin, tout = WB_JUDGE_TOKENS
        tasks = min(BENCHMARK_PROMPTS["wildbench"], ev.limit or 10**9)
        usd += evals * tasks * (tin * ev.judge.price_in_per_1k + tout * ev.judge.price_out_per_1k) / 1000
        if ev.judge.base_url:  # the judge runs only where it is served
            seconds += evals * tasks * JUDGE_CALL_S / ev.judge.max_concurrency
    if "alpaca_eval" in ev.benchmarks and ev.alpaca_eval_judge:
        usd += evals * ALPACA_EVAL_USD * min(805, ev.limit or 805) / 805
    return usd, seconds


def preflight(cfg: Config, run_dir: Path | None = None) -> None:
    """The plan's checks for this run, on this machine's GPUs; ConfigError listing every problem."""
    job = check(cfg, run_dir, runtime=True)
    for key, why in job.warnings:
        log.warning("preflight: %s %s", key, why)
    if job.problems:
        raise ConfigError("preflight found problems (run.preflight=false skips these checks):\n"
                          + "\n".join(f"  {key}: {why}" for key, why in job.problems))
    log.info("preflight: ok (%s)", ", ".join(f"{k} {v}" for k, v in job.row.items()))


# --------------------------------------------------------------------------------------------- the CLI


def compose(overrides: Sequence[str]) -> list[tuple[list[str], Config]]:
    """Each job of `python -m drift_exp [-m] OVERRIDES` with its task config, as Hydra composes it."""
    return [(job, cfg) for job, cfg, _ in _compose(overrides)]


def _compose(overrides: Sequence[str]) -> list[tuple[list[str], Config, Path | None]]:
    """`compose`, plus each sweep job's run directory as Hydra would make it (hydra.sweep.dir/subdir, so a
    `hydra.sweep.dir=` override moves the disk check there); None outside a sweep."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf, open_dict, read_write

    from drift_exp.config import register_configs
    from drift_exp.sweeps import CONF_DIR, compose_jobs

    overrides = [o for o in overrides if o not in ("-m", "--multirun")]
    sweep = [o for o in overrides if o.startswith("+sweep=")]
    if sweep:
        name = sweep[-1].split("=", 1)[1]
        composed = compose_jobs(name, [o for o in overrides if not o.startswith("+sweep=")])
    else:
        register_configs()
        jobs = BasicSweeper.split_arguments(OverridesParser.create().parse_overrides(list(overrides)), None)[0]
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            composed = [(job, hydra_compose("config", overrides=job)) for job in jobs]
    out = []
    for job, dcfg in composed:
        sweep_dir = OmegaConf.select(dcfg, "hydra.sweep.dir") if sweep else None
        run_dir = Path(sweep_dir) / OmegaConf.select(dcfg, "hydra.sweep.subdir") if sweep_dir else None
        with read_write(dcfg), open_dict(dcfg):
            dcfg.pop("hydra", None)  # as Hydra's run_job does
        out.append((job, OmegaConf.to_object(dcfg), run_dir))
    return out


COLUMNS = ("job", "generate", "eval", "batch", "train", "disk", "lengths", "gen Mtok", "train Mtok", "GPU-h", "fixed h",
           "wall h", "judge $", "ok")


LEGEND = f"""
columns: generate = replicas x tensor parallel (+ GiB per GPU), eval = the evaluation engine, batch = per-device x
accumulation x world = effective, train = GiB per GPU, disk = checkpoints kept; lengths = expected reply characters
(measured on the data, or assumed), at {CHARS_PER_TOKEN:g} characters per token; train Mtok with batches padded to
{PADDED_OVER_MEAN:g}x the mean length; GPU-h = decoding at
{GEN_TOKENS_PER_S_7B:g} tok/s per GPU for 7.6B and training at {TRAIN_FLOPS_PER_S / 1e12:g} TFLOP/s, plus the fixed
costs on every GPU; fixed h = per-stage costs on the node: process start {PROCESS_START_S:g} s, vLLM engine start
{VLLM_START_S:g} s, weights read at {LOAD_BYTES_PER_S / 1e9:g} GB/s, ZeRO-3 set-up {ZERO3_INIT_S:g} s, checkpoint
gather + save at {SAVE_BYTES_PER_S / 1e9:g} GB/s, the last reply decoded alone at {TAIL_TOKENS_PER_S_7B:g} tok/s
(7.6B); wall h = GPU work over the node's GPUs + fixed h (+ the WildBench judge at {JUDGE_CALL_S:g} s per call over
eval.judge.max_concurrency, where it is served); judge $ = WildBench + AlpacaEval 2. All assumed, not measured
(drift_exp/plan.py says where each number comes from)."""


def render(jobs: list[JobPlan]) -> str:
    rows = [[j.name, *(j.row.get(c, "-") for c in COLUMNS[1:-1]), "no" if j.problems else "yes"] for j in jobs]
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(COLUMNS)]
    line = "  ".join(c.ljust(w) for c, w in zip(COLUMNS, widths, strict=True))
    return "\n".join([line, "-" * len(line)] + ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True))
                                                for r in rows])


def main(argv: Sequence[str]) -> int:
    logging.basicConfig(level=logging.WARNING)
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__)
        return 0
    try:
        jobs = [(o, check(cfg, run_dir)) for o, cfg, run_dir in _compose(argv)]
    except Exception as err:  # a composition error (unknown key, bad value) names the key itself
        print(f"plan: cannot compose the config: {type(err).__name__}: {err}", file=sys.stderr)
        return 1
    plans = [p for _, p in jobs]
    for overrides, p in jobs:
        p.overrides = overrides
    print(render(plans))
    print(LEGEND)
    by_root: dict[Path, float] = {}
    for p in plans:
        if p.disk_root is not None:
            by_root[p.disk_root] = by_root.get(p.disk_root, 0.0) + p.disk_bytes
    problems = [(p, key, why) for p in plans for key, why in p.problems]
    warnings = sorted({(key, why) for p in plans for key, why in p.warnings})
    for root, need in by_root.items():
        free = free_bytes(root)
        if len(plans) > 1 and need > free:  # the jobs that start last would be refused
            sweep = JobPlan("sweep", [])
            problems.append((sweep, "hydra.sweep.dir", f"all jobs together keep ~{need / 1e9:.0f} GB of "
                             f"checkpoints; {root} has {free / 1e9:.0f} GB free"))
    for key, why in warnings:
        print(f"warning: {key}: {why}")
    if problems:
        print(f"\n{len(problems)} problem(s):")
        for p, key, why in problems:
            print(f"  {p.name}: {key}: {why}")
        return 1
    print(f"\nall {len(plans)} job(s) pass.")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
