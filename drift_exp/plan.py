"""Preflight: `python -m drift_exp.plan [OVERRIDES...]` proves every job of a run or sweep before a GPU-hour is spent.

It takes exactly the overrides a run or a sweep takes (`+sweep=table3 launcher.num_processes=8`), expands
the jobs as Hydra's multirun would, composes each job's config and checks, without loading any weights:

- generation: tensor parallel legal for the model's heads; replicas x tensor parallel = the node's GPUs;
  weights + KV cache fit `launcher.gpu_memory_gb` (for the generate stage and for the evaluation);
- training: the batch divides the world size; the generated DeepSpeed ZeRO-3 config validates; the
  launchers/MEMORY.md estimate (plus ~8 GiB of CUDA context, NCCL buffers, fragmentation) fits;
- the data and benchmark sources exist or are hub ids; judge keys are set where the evaluation needs them;
  the disk holds the 16-bit checkpoints the job keeps;
- an estimate of GPU-hours (tokens to generate and to train, at the assumed throughputs below) and of
  judge cost.

It prints one row per job, then every problem with the config key to change, and exits 1 if there is
any. `preflight(cfg, run_dir)` runs the same checks at the start of every run (`run.preflight=false`
skips them). The GPU count is `launcher.num_processes` (else the visible GPUs) and the GPU memory
`launcher.gpu_memory_gb` (else the visible GPU's); every number here is an estimate.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from drift_exp.config import Config
from drift_exp.errors import ConfigError
from drift_exp.generation.layout import Problem, choose_layout
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
# Records the paper's data sets hold (paper §3 / Table 1: 10,632 DSAT and 4,478 SAT conversations, 491
# DSAT->SAT seed pairs; UltraFeedback binarized train_prefs: 61,135 prompts), for full-setting estimates.
PAPER_RECORDS = {"wildfeedback": {"dsat": 10632, "sat": 4478, "seed": 491}, "ultrafeedback": {"prompt": 61135}}
BENCHMARK_PROMPTS = {"alpaca_eval": 805, "wildbench": 1024, "proxy": 16}
# Judge cost per evaluation: WildBench WB-Score, ~2,500 prompt + ~800 reply tokens per task at eval.judge.price_*;
# AlpacaEval 2's GPT-4-Turbo annotator, assumed ~$5 per 805 instructions.
WB_JUDGE_TOKENS = (2500, 800)
ALPACA_EVAL_USD = 5.0


@dataclass
class JobPlan:
    name: str
    overrides: list[str]
    row: dict[str, str] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    disk_bytes: float = 0.0
    disk_root: Path | None = None


def visible_gpus() -> tuple[int, float | None]:
    import torch

    if not torch.cuda.is_available():
        return 0, None
    return torch.cuda.device_count(), torch.cuda.get_device_properties(0).total_memory / GIB


def check(cfg: Config, run_dir: Path | None = None, runtime: bool = False) -> JobPlan:
    """Every preflight check of one job. runtime: GPUs as visible here (not the planned node's)."""
    from drift_exp.config import environment_problems, validate

    job = JobPlan(experiment_name(cfg), [])
    problems, warnings = job.problems, job.warnings
    try:
        validate(cfg, environment=runtime)  # planning for another node: what this machine lacks is a warning
    except ConfigError as err:
        problems.append((str(err).split(" ", 1)[0], str(err).split(" ", 1)[-1]))
    if not runtime:
        warnings += [(key, f"{why} (here; the job's node needs it)") for key, why in environment_problems(cfg)]
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
    from drift_exp.data.sources import local_or_hub
    from drift_exp.errors import DataError

    sources = [("data.source", cfg.data.source)]
    names = {"alpaca_eval": "eval.alpaca_eval_source", "wildbench": "eval.wildbench_source",
             "proxy": "eval.proxy_source"}
    sources += [(names[b], getattr(cfg.eval, names[b].split(".")[1])) for b in cfg.eval.benchmarks if b in names]
    for key, source in sources:
        if source == "sample":
            continue
        try:
            local_or_hub(source)
        except DataError as err:
            job.problems.append((key, str(err)))


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
    free = shutil.disk_usage(root).free
    if job.disk_bytes > free:
        # At the start of a run this is the run's own disk: a problem. The plan usually runs on another
        # machine (a login node) than the jobs, so there it is a warning about this machine's disk.
        (job.problems if runtime else job.warnings).append((
            "hydra.run.dir", f"the job keeps {len(kept)} checkpoints, ~{job.disk_bytes / 1e9:.0f} GB; {root} has "
            f"{free / 1e9:.0f} GB free (run elsewhere: hydra.run.dir / hydra.sweep.dir)"))


def _cost(cfg: Config, shape: Shape | None, gpus: int, job: JobPlan) -> None:
    kind = {"spin": "sat"}.get(cfg.method.kind, "dsat")
    counts = PAPER_RECORDS.get(cfg.data.name, {})
    available = counts.get(kind, counts.get("prompt"))
    records = min(x for x in (cfg.setting.max_records, available) if x is not None) if (
        cfg.setting.max_records or available) else None
    samples = cfg.method.n_samples * (2 if cfg.method.kind == "iterdpo" else 1)
    if records is None or shape is None:
        job.row["GPU-h"] = "?"
        return
    gen_tokens = cfg.iterations * records * samples * cfg.generation.max_new_tokens
    evals = cfg.iterations + 1
    prompts = sum(min(BENCHMARK_PROMPTS[b], cfg.eval.limit or 10**9) for b in cfg.eval.benchmarks)
    gen_tokens += evals * prompts * cfg.eval.max_new_tokens
    pairs = cfg.iterations * records * cfg.method.n_samples
    seed_epochs = counts.get("seed", 0) * cfg.trainer.warm_start_epochs
    train_tokens = (pairs * cfg.trainer.epochs + seed_epochs) * 2 * cfg.trainer.max_length  # chosen + rejected
    gpu_h = (gen_tokens / (GEN_TOKENS_PER_S_7B * 7.62e9 / shape.params)
             + 10 * shape.params * train_tokens / TRAIN_FLOPS_PER_S) / 3600
    job.row["gen Mtok"] = f"{gen_tokens / 1e6:.0f}"
    job.row["train Mtok"] = f"{train_tokens / 1e6:.0f}"
    job.row["GPU-h"] = f"{gpu_h:.0f}" + (f" ({gpu_h / gpus:.1f}h)" if gpus else "")
    usd = 0.0
    if "wildbench" in cfg.eval.benchmarks and cfg.eval.judge.enabled:
        tin, tout = WB_JUDGE_TOKENS
        tasks = min(BENCHMARK_PROMPTS["wildbench"], cfg.eval.limit or 10**9)
        usd += evals * tasks * (tin * cfg.eval.judge.price_in_per_1k + tout * cfg.eval.judge.price_out_per_1k) / 1000
    if "alpaca_eval" in cfg.eval.benchmarks and cfg.eval.alpaca_eval_judge:
        usd += evals * ALPACA_EVAL_USD * min(805, cfg.eval.limit or 805) / 805
    job.row["judge $"] = f"{usd:.0f}"


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
        with read_write(dcfg), open_dict(dcfg):
            dcfg.pop("hydra", None)  # as Hydra's run_job does
        out.append((job, OmegaConf.to_object(dcfg)))
    return out


COLUMNS = ("job", "generate", "eval", "batch", "train", "disk", "gen Mtok", "train Mtok", "GPU-h", "judge $", "ok")


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
        jobs = [(o, check(cfg)) for o, cfg in compose(argv)]
    except Exception as err:  # a composition error (unknown key, bad value) names the key itself
        print(f"plan: cannot compose the config: {type(err).__name__}: {err}", file=sys.stderr)
        return 1
    plans = [p for _, p in jobs]
    for overrides, p in jobs:
        p.overrides = overrides
    print(render(plans))
    print("\ncolumns: generate = replicas x tensor parallel (+ GiB per GPU), eval = the evaluation engine, batch = "
          "per-device x accumulation x world = effective, train = GiB per GPU, disk = checkpoints kept; GPU-h at "
          f"{GEN_TOKENS_PER_S_7B:g} tok/s per GPU for 7.6B generation and {TRAIN_FLOPS_PER_S / 1e12:g} TFLOP/s "
          "training (assumed), (h) = wall hours on the node; judge $ = WildBench + AlpacaEval 2 (estimated).")
    by_root: dict[Path, float] = {}
    for p in plans:
        if p.disk_root is not None:
            by_root[p.disk_root] = by_root.get(p.disk_root, 0.0) + p.disk_bytes
    problems = [(p, key, why) for p in plans for key, why in p.problems]
    warnings = sorted({(key, why) for p in plans for key, why in p.warnings})
    for root, need in by_root.items():
        free = shutil.disk_usage(root).free
        if len(plans) > 1 and need > free:
            warnings.append(("hydra.sweep.dir", f"all jobs together keep ~{need / 1e9:.0f} GB of checkpoints; "
                             f"{root} has {free / 1e9:.0f} GB free on this machine"))
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
