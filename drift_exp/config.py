"""Typed configuration: dataclass schemas registered in Hydra's ConfigStore.

The fields, their types and their defaults live here (the decoding fields generation.* and eval.*
share in drift_exp/decoding.py); a YAML file under ``conf/`` sets only what its option changes. An
unknown key or a value of the wrong type is rejected by OmegaConf while Hydra composes the config;
ranges and cross-field rules are checked by :func:`validate`, which runs before anything heavy is
imported. Both name the offending key.
"""

from __future__ import annotations

import ast
import importlib.util
import re
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cache, lru_cache
from operator import attrgetter
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from drift_exp.config_fields import NEUTRAL, NO_LEGACY, non_finite, result_fields, resume_rule_in, since  # noqa: F401
from drift_exp.config_groups import register_sweeps
from drift_exp.decoding import DecodingConfig, decoding_checks
from drift_exp.errors import ConfigError
from drift_exp.evaluation.config import EvalConfig, validate_eval
from drift_exp.names import (
    DATA_FORMATS,
    ITERATION_STAGES,
    LABEL,
    LABEL_KEYS,
    METHOD_KINDS,
    experiment_name,  # noqa: F401  (defined in names; kept importable from here for tests)
    parse_stop_after,
    register_resolvers,
)
from drift_exp.packaged import gguf_file_of


class PromptFormat(StrEnum):
    plain = "plain"  # the authors' gen-drift.py text ("User: ...\nAssistant: ...\nSystem: ..."), no template
    chat = "chat"  # the model's chat template; the instruction joins the feedback turn


class RefMode(StrEnum):
    previous = "previous"  # the iteration's starting model (DRIFT, SPIN, RLHFlow)
    initial = "initial"  # the model the experiment started from (model.path)


class RefModeKind(StrEnum):
    auto = "auto"  # precomputed on GPU, live on CPU
    live = "live"  # a second model in memory (ZeRO-3 partitions it too)
    precomputed = "precomputed"  # reference log-probs computed once before training; one resident model


class Truncation(StrEnum):
    # The prompt keeps its last trainer.max_prompt_length tokens, each completion is cut so that prompt +
    # completion <= trainer.max_length; no pair is dropped (the authors' TRL; drift_exp/training/truncation.py).
    authors = "authors"
    trl = "trl"  # TRL 1.16's own: keep the start of prompt + completion, drop pairs whose prompt fills max_length


class PromptStyle(StrEnum):
    trl = "trl"  # TRL 1.16's conversational tokenisation
    handbook = "handbook"  # the authors' alignment-handbook + TRL 0.12 sequence (drift_exp/training/handbook.py)


class SamplingDefaults(StrEnum):
    # Start from the checkpoint's generation_config.json (as the authors' HF generate did), then the config.
    model = "model"
    none = "none"  # the config's settings only; the checkpoint's defaults are switched off


class TrackingMode(StrEnum):
    auto = "auto"  # online when a W&B API key is configured, offline otherwise
    online = "online"
    offline = "offline"
    disabled = "disabled"


class OnInvalid(StrEnum):
    error = "error"  # stop at the first bad row, naming file, row and field
    skip = "skip"  # skip it, count it by reason in data/stats.json


@dataclass
class MethodConfig:
    # Label used in the run directory name (e.g. drift, drift-unguided).
    name: str = MISSING
    # Which pair builder in drift_exp/methods/ runs: drift | spin | iterdpo (drift_exp.names.METHOD_KINDS).
    kind: str = MISSING
    # Guided sampling conditions the chosen on the DSAT reply + feedback + instruction (Table 6 ablation: false).
    guided: bool = True
    # How the guided prompt is rendered: plain (authors' format) or chat (chat template).
    prompt_format: PromptFormat = PromptFormat.plain
    # The explicit improvement instruction, verbatim from the authors' gen-drift.py.
    instruction: str = (
        "Based on the user's latest feedback, please provide an improved response that addresses their concerns."
    )
    # Policy samples per request; each sample becomes one pair (IterDPO ranking draws 2 per pair).
    n_samples: int = 1
    # Train iteration k on the pairs of iterations 1..k (the SPIN authors' recipe); off in the DRIFT paper.
    accumulate: bool = False


@dataclass
class DataConfig:
    # Label used in the run directory name.
    name: str = MISSING
    # 'sample' (bundled with the package), a local file or folder, or a hub dataset id.
    source: str = MISSING
    # auto (WildFeedback, from the path) | annotation (raw sat_dsat_annotation.json) | released (the
    # DRIFT authors' jsonl files) | ultrafeedback_binarized (HuggingFaceH4) | ultrafeedback_raw (openbmb).
    format: str = "auto"
    # Split of a hub data set read with `datasets` (UltraFeedback binarized: train_prefs / test_prefs).
    split: str = "train_prefs"
    # Hub revision, used only when source is a hub id.
    revision: str | None = None
    # What to do with a malformed row.
    on_invalid: OnInvalid = OnInvalid.error
    # The authors' held-out split (drift_exp/heldout.py): the first `holdout` records the method iterates on, in
    # file order, are sampled and paired as usual but their pairs are evaluated after each training stage, never
    # trained on. 100 as the authors' gen-drift.py; 0 trains on every record. Run directories made before this
    # setting existed trained on all records: they count as holdout=0.
    holdout: int = field(default=100, metadata=since(legacy=0))


@dataclass
class TinyModelConfig:
    # A randomly initialised Qwen2ForCausalLM; head_dim = hidden/heads must be >= 64 for vLLM's CPU backend.
    hidden_size: int = 128
    intermediate_size: int = 256
    num_hidden_layers: int = 2
    num_attention_heads: int = 2
    num_key_value_heads: int = 1
    max_position_embeddings: int = 4096
    # Seed of the random initialisation, so every run builds the same weights.
    init_seed: int = 0


@dataclass
class ModelConfig:
    # Label used in the run directory name.
    name: str = MISSING
    # Hub id, local folder, a .gguf file, or pkg:<module>/<file> (a GGUF inside an installed pip
    # package); the special value 'tiny' builds the tiny model below (no download).
    path: str = MISSING
    # auto: bf16 on GPUs that support it, fp32 otherwise | float32 | bfloat16 | float16.
    dtype: str = "auto"
    # Run the model repository's own Python code (policy, tokenizer, reward model, vLLM); off: only
    # architectures transformers ships. Changes what may run, not the results: neutral.
    trust_remote_code: bool = field(default=False, metadata=NEUTRAL)
    tiny: TinyModelConfig = field(default_factory=TinyModelConfig)
    # With model.path a folder: the .gguf file in it to load (dequantised once into the cache folder).
    # A path ending in .gguf, or pkg:<module>/<file> (a file inside an installed pip package), needs none.
    gguf_file: str | None = None


@dataclass
class SettingConfig:
    # Label used in the run directory name.
    name: str = MISSING
    # controlled: at most this many of the records the method iterates on (DSAT for DRIFT and
    # IterDPO, SAT for SPIN, prompts on UltraFeedback), sampled with the seed; null (full): all.
    max_records: int | None = None


@dataclass
class TrainerConfig:
    # Appendix D (Tables 9/10) and the authors' alignment-handbook YAMLs.
    beta: float = 0.1
    learning_rate: float = 5.0e-7
    optim: str = "rmsprop"
    lr_scheduler_type: str = "linear"
    warmup_ratio: float = 0.1
    # null: the authors' batch, micro_batch_size pairs per device and no accumulation, so the effective
    # batch is 4 x world size (32 on 8 GPUs). Set: pins the effective batch (micro x accumulation x world
    # size) whatever the number of GPUs; the world size must divide it.
    global_batch_size: int | None = None
    # Pairs per device per step (the authors' per_device_train_batch_size: 4); with global_batch_size set,
    # the largest per-device batch, gradient accumulation making up the rest.
    micro_batch_size: int = 4
    max_length: int = 2048
    # null: bf16 where the hardware supports it (GPUs with bf16), fp32 otherwise.
    bf16: bool | None = None
    warm_start_epochs: int = 3
    epochs: int = 1
    # DPO + NLL on the chosen (RPO); in TRL 1.16: loss_type=[sigmoid, sft], loss_weights=[1, rpo_alpha].
    rpo_alpha: float = 0.001
    # Reference model of each iteration's DPO.
    ref: RefMode = RefMode.previous
    # How the reference enters the loss (user-needs #1/#2: a live reference doubles model memory); auto:
    # precomputed log-probs on GPU, a live reference model on CPU. The same reference log-probs either
    # way (auto already picks by hardware): neutral.
    ref_mode: RefModeKind = field(default=RefModeKind.auto, metadata=NEUTRAL)
    # Paper §5 diagnostics: the share of pairs whose DPO gradient weight sigma(-s) is at least this
    # (logged per step and per stage; does not change training).
    signal_tau: float = field(default=0.5, metadata=NEUTRAL)
    # Seconds a collective may wait before the job fails (multi-node: raise it for slow checkpoint saves).
    ddp_timeout: int = field(default=1800, metadata=NEUTRAL)
    # Recompute activations in the backward pass (GPU only): memory for time, the same gradients.
    gradient_checkpointing: bool = field(default=True, metadata=NEUTRAL)
    max_grad_norm: float = 1.0
    # Steps between loss logs (and the NaN/inf checks of drift_exp/training/guards.py).
    logging_steps: int = field(default=1, metadata=NEUTRAL)
    # How pairs longer than max_length are cut: authors (the paper's setting; nothing dropped) | trl.
    # Added after runs existed, which truncated TRL's way: their records count as truncation=trl.
    truncation: Truncation = field(default=Truncation.authors, metadata=since(legacy=Truncation.trl))
    # truncation=authors: the prompt tokens kept (its last ones). null: half of max_length, i.e. the authors'
    # 1024 at the paper's max_length 2048 (and still valid when a CPU run lowers max_length).
    max_prompt_length: int | None = None
    # Further DPOConfig fields (e.g. weight_decay, adam_beta2), checked by DPOConfig itself at validation; a field
    # the project sets from its own setting is refused with the setting to use (drift_exp/trainer_extra.py).
    extra: dict[str, Any] = field(default_factory=dict)
    # Who turns a pair into token ids: trl (TRL 1.16's rendering) | handbook (what the authors' alignment-handbook
    # + TRL 0.12 fed DPO: empty system turn, prompt without generation prompt, replies rendered alone; the sweeps).
    prompt_style: PromptStyle = PromptStyle.trl


@dataclass
class GenerationConfig(DecodingConfig):
    # temperature, top_p, top_k, repetition_penalty, max_new_tokens: DecodingConfig's fields and defaults
    # (drift_exp/decoding.py), the authors' gen-drift.py settings.
    # hf (transformers generate; CPU and tests) | vllm (GPU engine, drift_exp/generation/vllm.py).
    backend: str = "hf"
    # Prompts longer than this many tokens keep their last tokens (the part next to the reply).
    max_prompt_length: int = 2048
    # Result-affecting: the HF backend draws every batch's samples from one random stream, so another
    # batch size gives other samples. Unused by vLLM, which schedules its own batches and seeds each request
    # (but the key cannot tell the backends apart).
    batch_size: int = 16
    # vLLM only: GPUs per engine. null: the smallest size legal for the model's heads that fits its weights
    # and a useful KV cache (drift_exp/generation/layout.py); the node's other GPUs run more replicas.
    # How the engine is laid out and how much memory it takes change the speed, not what is sampled: neutral.
    tensor_parallel_size: int | None = field(default=None, metadata=NEUTRAL)
    # vLLM only: the share of each GPU's memory for weights + KV cache.
    gpu_memory_utilization: float = field(default=0.9, metadata=NEUTRAL)
    # vLLM only: true runs without CUDA graphs (faster start-up, slower decoding; needed on CPU).
    enforce_eager: bool = field(default=False, metadata=NEUTRAL)
    # vLLM only: the engine's context. null: max_prompt_length + max_new_tokens (every prompt and its reply
    # fit; a smaller KV cache than the model's full context would need).
    max_model_len: int | None = None
    # vLLM only: any other vllm.LLM argument, e.g. {swap_space: 8, enable_prefix_caching: true}.
    engine_kwargs: dict[str, Any] = field(default_factory=dict)
    # Data-parallel generation replicas, one process (engine) each; the requests are sharded over them and
    # the completions do not depend on their number. null: vLLM, the GPUs // tensor_parallel_size; HF, one
    # per GPU (1 on CPU). See drift_exp/generation/layout.py.
    replicas: int | None = field(default=None, metadata=NEUTRAL)
    # model: start from the checkpoint's generation_config.json, then apply temperature, top_p,
    # max_new_tokens (and top_k / repetition_penalty where set) | none: the config's settings only.
    # Added after runs existed, which sampled with the config's settings only: their records count as none.
    sampling_defaults: SamplingDefaults = field(default=SamplingDefaults.model,
                                                metadata=since(legacy=SamplingDefaults.none))


@dataclass
class ScorerConfig:
    # Reward model ranking IterDPO's samples (and the evaluation proxy): a hub id or local folder;
    # 'tiny' builds a random Qwen2 classifier locally (CPU, tests); 'auto' is 'tiny' with the tiny
    # policy or a pkg: policy (model=smollm2), OpenAssistant/reward-model-deberta-v3-large-v2 (the paper's) otherwise.
    path: str = "auto"
    # Pairs scored at once; each score depends only on its own pair (padding is masked): neutral.
    batch_size: int = field(default=16, metadata=NEUTRAL)
    # The DeBERTa reward model was trained at 512 tokens; its tokenizer would not truncate by itself.
    max_length: int = 512
    tiny: TinyModelConfig = field(default_factory=lambda: TinyModelConfig(init_seed=1))


# Where and how the stages run (launcher.*, tracking.*, run.*) never enters a resume key; the fields
# are marked neutral all the same, so the schema says it in one place.
@dataclass
class LauncherConfig:
    # inline: every stage in this process (CPU, tests) | local: generation and training as child
    # processes on this node | slurm: as local, on the nodes of a SLURM allocation (launchers/README.md).
    name: str = field(default="inline", metadata=NEUTRAL)
    # Training processes per node (local, slurm); null: one per visible GPU.
    num_processes: int | None = field(default=None, metadata=NEUTRAL)
    # Nodes the training spans (slurm; SLURM_NNODES wins inside an allocation).
    num_machines: int = field(default=1, metadata=NEUTRAL)
    # Train with DeepSpeed ZeRO-3 (local, slurm); the config is generated per stage with concrete values.
    deepspeed: bool = field(default=True, metadata=NEUTRAL)
    # The rendezvous port of accelerate's launcher.
    main_process_port: int = field(default=29500, metadata=NEUTRAL)
    # Memory of one GPU in GB (GiB), for the preflight's memory checks (python -m drift_exp.plan).
    # null: the visible GPU's, or no memory check where there is none.
    gpu_memory_gb: float | None = field(default=None, metadata=NEUTRAL)


@dataclass
class TrackingConfig:
    # W&B: where the numbers are sent, not what they are.
    mode: TrackingMode = field(default=TrackingMode.auto, metadata=NEUTRAL)
    project: str = field(default="drift_exp", metadata=NEUTRAL)
    entity: str | None = field(default=None, metadata=NEUTRAL)


@dataclass
class RunConfig:
    # Stop after this stage: prepare, warm_start, or <stage> / iter_<k>/<stage> with stage in
    # requests, generate, pairs, train.
    stop_after: str | None = field(default=None, metadata=NEUTRAL)
    # Allow discarding finished stages whose config changed (otherwise refused).
    overwrite: bool = field(default=False, metadata=NEUTRAL)
    # Folder name under outputs/sweeps/ for multirun.
    sweep_name: str = field(default="multirun", metadata=NEUTRAL)
    # Run the preflight checks of `python -m drift_exp.plan` (layout, batch, memory, data, judge keys,
    # disk) before anything is read or written; false skips them.
    preflight: bool = field(default=True, metadata=NEUTRAL)


@dataclass
class Config:
    method: MethodConfig = field(default_factory=MethodConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    setting: SettingConfig = field(default_factory=SettingConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    scorer: ScorerConfig = field(default_factory=ScorerConfig)
    # The evaluation stage after every iteration (AlpacaEval 2, WildBench v2, reward-model proxy).
    eval: EvalConfig = field(default_factory=EvalConfig)
    launcher: LauncherConfig = field(default_factory=LauncherConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    run: RunConfig = field(default_factory=RunConfig)
    # Seeds data sampling (controlled setting), generation and training.
    seed: int = 42
    # K, the number of DRIFT iterations after the warm start (how far to run, not how: neutral).
    iterations: int = field(default=2, metadata=NEUTRAL)


DEFAULT_REWARD_MODEL = "OpenAssistant/reward-model-deberta-v3-large-v2"


def scorer_path(cfg: Config) -> str:
    """scorer.path with 'auto' resolved."""
    if cfg.scorer.path != "auto":
        return cfg.scorer.path
    # A model shipped in a pip package (model=smollm2) is a CPU run without the hub: the DeBERTa reward
    # model cannot be had there, so it gets the tiny one too (its scores are noise, said in the README).
    cpu_stand_in = cfg.model.path == "tiny" or cfg.model.path.startswith("pkg:")
    return "tiny" if cpu_stand_in else DEFAULT_REWARD_MODEL


def resume_rule(path: str) -> tuple[bool, Any]:
    """(neutral, legacy value) of a dotted setting as it appears in a stage's recorded config (config_fields)."""
    return resume_rule_in(_defaults(), path)


@lru_cache(maxsize=1)
def _defaults() -> Config:
    return Config()


def register_configs() -> None:
    """Everything Hydra needs before it composes conf/config.yaml (idempotent)."""
    register_resolvers()  # ${drift_exp.experiment_name:} in hydra.run.dir / hydra.sweep.subdir
    ConfigStore.instance().store(name="drift_exp_schema", node=Config)
    register_sweeps()  # groups `sweep` (sweeps/*.yaml) and `cell`


GENERATION_BACKENDS = ("hf", "vllm")
LAUNCHERS = ("inline", "local", "slurm")
DTYPES = ("auto", "float32", "bfloat16", "float16")


def validate(cfg: Config, environment: bool = True) -> None:
    """Check ranges and choices OmegaConf cannot express; raise ConfigError naming the key.

    environment=False leaves out what depends on this machine (installed packages, local paths): the
    preflight plans jobs for another node and reports those as warnings (`environment_problems`).
    """
    stop = parse_stop_after(cfg.run.stop_after) if cfg.run.stop_after else None
    checks: list[tuple[str, bool, str]] = [
        ("iterations", cfg.iterations >= 1, f"must be >= 1, got {cfg.iterations}"),
        ("method.kind", cfg.method.kind in METHOD_KINDS, f"must be one of {METHOD_KINDS}, got {cfg.method.kind!r}"),
        ("method.n_samples", cfg.method.n_samples >= 1, f"must be >= 1, got {cfg.method.n_samples}"),
        ("method.instruction", bool(cfg.method.instruction.strip()), "must not be empty"),
        ("data.format", cfg.data.format in DATA_FORMATS, f"must be one of {DATA_FORMATS}, got {cfg.data.format!r}"),
        ("data.source", bool(cfg.data.source.strip()), "must name 'sample', a path or a hub id"),
        ("model.path", bool(cfg.model.path.strip()), "must name 'tiny', a local folder or a hub id"),
        ("model.dtype", cfg.model.dtype in DTYPES, f"must be one of {DTYPES}, got {cfg.model.dtype!r}"),
        ("setting.max_records", cfg.setting.max_records is None or cfg.setting.max_records >= 1,
         f"must be >= 1 or null (all), got {cfg.setting.max_records}"),
        ("trainer.beta", cfg.trainer.beta > 0, f"must be > 0, got {cfg.trainer.beta}"),
        ("trainer.learning_rate", cfg.trainer.learning_rate > 0, f"must be > 0, got {cfg.trainer.learning_rate}"),
        ("trainer.warmup_ratio", 0 <= cfg.trainer.warmup_ratio < 1,
         f"must be in [0, 1), got {cfg.trainer.warmup_ratio}"),
        ("trainer.global_batch_size", cfg.trainer.global_batch_size is None or cfg.trainer.global_batch_size >= 1,
         f"must be >= 1 or null (micro_batch_size per device), got {cfg.trainer.global_batch_size}"),
        ("trainer.micro_batch_size", cfg.trainer.micro_batch_size >= 1,
         f"must be >= 1, got {cfg.trainer.micro_batch_size}"),
        ("trainer.max_length", cfg.trainer.max_length >= 16, f"must be >= 16, got {cfg.trainer.max_length}"),
        ("trainer.max_prompt_length", cfg.trainer.max_prompt_length is None
         or 1 <= cfg.trainer.max_prompt_length < cfg.trainer.max_length,
         f"must be null (half of max_length) or in [1, trainer.max_length={cfg.trainer.max_length}), "
         f"got {cfg.trainer.max_prompt_length}"),
        ("trainer.warm_start_epochs", cfg.trainer.warm_start_epochs >= 0,
         f"must be >= 0 (0 skips the warm start), got {cfg.trainer.warm_start_epochs}"),
        ("trainer.epochs", cfg.trainer.epochs >= 1, f"must be >= 1, got {cfg.trainer.epochs}"),
        ("trainer.rpo_alpha", cfg.trainer.rpo_alpha >= 0, f"must be >= 0, got {cfg.trainer.rpo_alpha}"),
        ("trainer.signal_tau", 0 < cfg.trainer.signal_tau < 1, f"must be in (0, 1), got {cfg.trainer.signal_tau}"),
        ("trainer.max_grad_norm", cfg.trainer.max_grad_norm >= 0, f"must be >= 0, got {cfg.trainer.max_grad_norm}"),
        ("trainer.logging_steps", cfg.trainer.logging_steps >= 1, f"must be >= 1, got {cfg.trainer.logging_steps}"),
        ("generation.backend", cfg.generation.backend in GENERATION_BACKENDS,
         f"must be one of {GENERATION_BACKENDS}, got {cfg.generation.backend!r}"),
        *decoding_checks("generation", cfg.generation),
        ("generation.max_prompt_length", cfg.generation.max_prompt_length >= 1,
         f"must be >= 1, got {cfg.generation.max_prompt_length}"),
        ("generation.batch_size", cfg.generation.batch_size >= 1, f"must be >= 1, got {cfg.generation.batch_size}"),
        ("launcher.name", cfg.launcher.name in LAUNCHERS, f"must be one of {LAUNCHERS}, got {cfg.launcher.name!r}"),
        ("launcher.num_processes", cfg.launcher.num_processes is None or cfg.launcher.num_processes >= 1,
         f"must be >= 1 or null (one per GPU), got {cfg.launcher.num_processes}"),
        ("launcher.num_machines", cfg.launcher.num_machines >= 1, f"must be >= 1, got {cfg.launcher.num_machines}"),
        ("run.stop_after", cfg.run.stop_after is None or stop is not None,
         "must be prepare, warm_start, or <stage> / iter_<k>/<stage> with stage one of "
         f"{ITERATION_STAGES}, got {cfg.run.stop_after!r}"),
    ]
    for name in LABEL_KEYS:
        value = attrgetter(name)(cfg)
        checks.append((name, bool(LABEL.fullmatch(value)),
                       f"is part of the run directory name; use letters, digits, '_', '.', '+', '-', got {value!r}"))
    bad = non_finite(cfg)  # inf / nan pass every range check written as a comparison
    if bad:
        raise ConfigError(f"{bad[0]} must be a finite number, got {attrgetter(bad[0])(cfg)}")
    for key in ("seed", "model.tiny.init_seed", "scorer.tiny.init_seed"):
        value = attrgetter(key)(cfg)
        checks.append((key, 0 <= value <= 2**32 - 1, f"must be in 0 .. 2**32-1, got {value}"))
    for key, choices in (("trainer.optim", transformers_choices("training_args.py", "OptimizerNames")),
                         ("trainer.lr_scheduler_type", transformers_choices("trainer_utils.py", "SchedulerType"))):
        value = attrgetter(key)(cfg)
        checks.append((key, choices is None or value in choices,
                       f"must be one transformers accepts ({', '.join(sorted(choices or []))}), got {value!r}"))
    if cfg.model.path == "tiny":
        checks += _tiny_checks("model.tiny", cfg.model.tiny)
    if scorer_path(cfg) == "tiny":
        checks += _tiny_checks("scorer.tiny", cfg.scorer.tiny)
    greedy = cfg.generation.temperature == 0
    checks += [
        ("generation.temperature", not (greedy and cfg.method.n_samples > 1),
         f"is 0 (greedy), so the method.n_samples={cfg.method.n_samples} samples of a request would be identical; "
         "sample with a temperature > 0 or set method.n_samples=1"),
        ("generation.temperature", not (greedy and cfg.method.kind == "iterdpo" and not cfg.method.guided),
         "is 0 (greedy), so unguided IterDPO's two samples of a prompt would be identical (chosen == rejected)"),
    ]
    # trainer.extra, trainer.prompt_style, data.holdout (the trainer branch's fields)
    checks += [
        ("data.holdout", cfg.data.holdout >= 0, f"must be >= 0 (0 holds nothing out), got {cfg.data.holdout}"),
        ("trainer.prompt_style", cfg.trainer.prompt_style in tuple(PromptStyle),
         f"must be one of {tuple(str(s) for s in PromptStyle)}, got {cfg.trainer.prompt_style!r}"),
    ]
    if environment:
        checks += _environment_checks(cfg)
    for key, ok, why in checks:
        if not ok:
            raise ConfigError(f"{key} {why}")
    gguf_file_of(cfg.model.path, cfg.model.gguf_file)  # a GGUF / packaged model: the file and the gguf package
    from drift_exp.trainer_extra import check_extra

    check_extra(cfg.trainer.extra)  # DPOConfig's own checks of trainer.extra (imports TRL only when it is set)
    validate_eval(cfg.eval)
    if environment:
        check_local_paths(cfg)
    if stop is not None and stop.iteration is not None and not 1 <= stop.iteration <= cfg.iterations:
        raise ConfigError(f"run.stop_after names iteration {stop.iteration}, but iterations={cfg.iterations}")


def _environment_checks(cfg: Config) -> list[tuple[str, bool, str]]:
    """The packages this run needs on this machine."""
    return [
        ("generation.backend", cfg.generation.backend != "vllm" or _installed("vllm"),
         "is vllm, but the vllm package is not installed (pip install -e '.[gpu]', or generation=hf)"),
        ("launcher.deepspeed", not (cfg.launcher.name != "inline" and cfg.launcher.deepspeed)
         or _installed("deepspeed"),
         f"is true with launcher={cfg.launcher.name}, but the deepspeed package is not installed "
         "(pip install -e '.[gpu]', or pass launcher.deepspeed=false)"),
    ]


def environment_problems(cfg: Config) -> list[tuple[str, str]]:
    """What this machine lacks for the run (packages, local paths), as (key, why) pairs."""
    problems = [(key, why) for key, ok, why in _environment_checks(cfg) if not ok]
    try:
        check_local_paths(cfg)
    except ConfigError as err:
        key = re.match(r"[\w.]+", str(err))
        problems.append((key.group(0) if key else "config", str(err)))
    return problems


def _installed(package: str) -> bool:
    return importlib.util.find_spec(package) is not None


def _tiny_checks(prefix: str, tiny: TinyModelConfig) -> list[tuple[str, bool, str]]:
    sizes = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
             "max_position_embeddings")
    checks = [(f"{prefix}.{n}", getattr(tiny, n) >= 1, f"must be >= 1, got {getattr(tiny, n)}") for n in sizes]
    if all(ok for _, ok, _ in checks):  # only then is dividing by them safe
        checks += [
            (f"{prefix}.num_attention_heads", tiny.hidden_size % tiny.num_attention_heads == 0,
             f"must divide hidden_size {tiny.hidden_size}"),
            (f"{prefix}.num_key_value_heads", tiny.num_attention_heads % tiny.num_key_value_heads == 0,
             f"must divide num_attention_heads {tiny.num_attention_heads}"),
        ]
    return checks


@cache
def transformers_choices(module_file: str, enum_name: str) -> frozenset[str] | None:
    """The string values of a transformers enum, read from its source (importing transformers takes
    seconds and pulls in torch; validate must stay fast). None when it cannot be read: not checked."""
    spec = importlib.util.find_spec("transformers")
    if spec is None or not spec.submodule_search_locations:
        return None
    try:
        tree = ast.parse((Path(list(spec.submodule_search_locations)[0]) / module_file).read_text(encoding="utf-8"))
    except (OSError, SyntaxError):
        return None
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == enum_name:
            return frozenset(st.value.value for st in node.body if isinstance(st, ast.Assign)
                             and isinstance(st.value, ast.Constant) and isinstance(st.value.value, str)) or None
    return None


def looks_local(value: str) -> bool:
    """A value meant as a local path: absolute, ./ ../ ~, or more than one '/' (a hub id has exactly one)."""
    return value.startswith(("/", "./", "../", "~", ".\\")) or value in (".", "..") or value.count("/") > 1


def check_local_paths(cfg: Config) -> None:
    """Local paths the run reads must exist (a missing one would otherwise be taken for a hub id)."""
    bench = cfg.eval.benchmarks
    scorer_used = "proxy" in bench or cfg.method.kind == "iterdpo"
    named = [("model.path", cfg.model.path, cfg.model.path != "tiny", "a local model folder or a hub id"),
             ("scorer.path", cfg.scorer.path, scorer_used and cfg.scorer.path not in ("tiny", "auto"),
              "a local reward model folder, a hub id, tiny or auto"),
             ("data.source", cfg.data.source, cfg.data.source != "sample", "'sample', a local file or folder, "
              "or a hub dataset id"),
             ("eval.alpaca_eval_source", cfg.eval.alpaca_eval_source,
              "alpaca_eval" in bench and cfg.eval.alpaca_eval_source != "sample", "'sample', a file or a hub id"),
             ("eval.wildbench_source", cfg.eval.wildbench_source,
              "wildbench" in bench and cfg.eval.wildbench_source != "sample", "'sample', a file or a hub id")]
    for key, value, used, what in named:
        if used and looks_local(value) and not Path(value).expanduser().exists():
            raise ConfigError(f"{key}={value!r}: no such file or folder (expected {what})")
    proxy = cfg.eval.proxy_source
    if "proxy" in bench and proxy != "sample" and not Path(proxy).expanduser().is_file():
        raise ConfigError(f"eval.proxy_source={proxy!r}: no such file (expected 'sample' or a local .json/.jsonl)")

