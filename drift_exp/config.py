"""Typed configuration: dataclass schemas registered in Hydra's ConfigStore.

The YAML files under ``conf/`` hold only values; the fields, their types and their defaults
live here. An unknown key or a value of the wrong type is rejected by OmegaConf while Hydra
composes the config; ranges and cross-field rules are checked by :func:`validate`, which runs
before anything heavy is imported. Both name the offending key.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from drift_exp.errors import ConfigError
from drift_exp.evaluation.config import EvalConfig, validate_eval
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
    # Which pair builder in drift_exp/methods/ runs: drift | spin | iterdpo.
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
    trust_remote_code: bool = False
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
    # The global batch: micro batch x gradient accumulation x world size, whatever the world size.
    global_batch_size: int = 4
    # Largest per-device batch; gradient accumulation makes up the rest of the global batch.
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
    # How the reference enters the loss (user-needs #1/#2: a live reference doubles model memory).
    ref_mode: RefModeKind = RefModeKind.auto
    # Paper §5 diagnostics: the share of pairs whose DPO gradient weight sigma(-s) is at least this
    # (logged per step and per stage; does not change training).
    signal_tau: float = 0.5
    # Seconds a collective may wait before the job fails (multi-node: raise it for slow checkpoint saves).
    ddp_timeout: int = 1800
    gradient_checkpointing: bool = True
    max_grad_norm: float = 1.0
    logging_steps: int = 1


@dataclass
class GenerationConfig:
    # hf (transformers generate; CPU and tests) | vllm (GPU, a later issue).
    backend: str = "hf"
    # Authors' gen-drift.py settings.
    temperature: float = 0.7
    top_p: float = 0.9
    # Disabled by default (-1 / 1.0). The model's own generation_config is NOT merged in, so both
    # backends sample with exactly these settings; set these to match e.g. Qwen's shipped defaults.
    top_k: int = -1
    repetition_penalty: float = 1.0
    max_new_tokens: int = 512
    # Prompts longer than this many tokens keep their last tokens (the part next to the reply).
    max_prompt_length: int = 2048
    batch_size: int = 16
    # vLLM only. null: every visible GPU (1 on CPU).
    tensor_parallel_size: int | None = None
    gpu_memory_utilization: float = 0.9
    enforce_eager: bool = False
    # null: max_prompt_length + max_new_tokens.
    max_model_len: int | None = None
    # Any other vllm.LLM argument.
    engine_kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class ScorerConfig:
    # Reward model ranking IterDPO's samples (and the evaluation proxy): a hub id or local folder;
    # 'tiny' builds a random Qwen2 classifier locally (CPU, tests); 'auto' is 'tiny' with the tiny
    # policy or a pkg: policy (model=smollm2), OpenAssistant/reward-model-deberta-v3-large-v2 (the paper's) otherwise.
    path: str = "auto"
    batch_size: int = 16
    # The DeBERTa reward model was trained at 512 tokens; its tokenizer would not truncate by itself.
    max_length: int = 512
    tiny: TinyModelConfig = field(default_factory=lambda: TinyModelConfig(init_seed=1))


@dataclass
class LauncherConfig:
    # inline: every stage in this process (CPU, tests) | local: generation and training as child
    # processes on this node | slurm: as local, on the nodes of a SLURM allocation (launchers/README.md).
    name: str = "inline"
    # Training processes per node (local, slurm); null: one per visible GPU.
    num_processes: int | None = None
    # Nodes the training spans (slurm; SLURM_NNODES wins inside an allocation).
    num_machines: int = 1
    # Train with DeepSpeed ZeRO-3 (local, slurm); the config is generated per stage with concrete values.
    deepspeed: bool = True
    main_process_port: int = 29500


@dataclass
class TrackingConfig:
    mode: TrackingMode = TrackingMode.auto
    project: str = "drift_exp"
    entity: str | None = None


@dataclass
class RunConfig:
    # Stop after this stage: prepare, warm_start, or <stage> / iter_<k>/<stage> with stage in
    # requests, generate, pairs, train.
    stop_after: str | None = None
    # Allow discarding finished stages whose config changed (otherwise refused).
    overwrite: bool = False
    # Folder name under outputs/sweeps/ for multirun.
    sweep_name: str = "multirun"


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
    # K, the number of DRIFT iterations after the warm start.
    iterations: int = 2


DEFAULT_REWARD_MODEL = "OpenAssistant/reward-model-deberta-v3-large-v2"


def scorer_path(cfg: Config) -> str:
    """scorer.path with 'auto' resolved."""
    if cfg.scorer.path != "auto":
        return cfg.scorer.path
    # A model shipped in a pip package (model=smollm2) is a CPU run without the hub: the DeBERTa reward
    # model cannot be had there, so it gets the tiny one too (its scores are noise, said in the README).
    cpu_stand_in = cfg.model.path == "tiny" or cfg.model.path.startswith("pkg:")
    return "tiny" if cpu_stand_in else DEFAULT_REWARD_MODEL


def register_configs() -> None:
    ConfigStore.instance().store(name="drift_exp_schema", node=Config)
    from drift_exp.sweeps import register_sweeps

    register_sweeps()  # groups `sweep` (sweeps/*.yaml) and `cell`


STAGES = ("requests", "generate", "pairs", "train", "eval")
METHOD_KINDS = ("drift", "spin", "iterdpo")
GENERATION_BACKENDS = ("hf", "vllm")
LAUNCHERS = ("inline", "local", "slurm")
DTYPES = ("auto", "float32", "bfloat16", "float16")
DATA_FORMATS = ("auto", "annotation", "released", "ultrafeedback_binarized", "ultrafeedback_raw")
_STOP_AFTER = re.compile(r"^(prepare|warm_start|(iter_(\d+)/)?(requests|generate|pairs|train|eval))$")


def validate(cfg: Config) -> None:
    """Check ranges and choices OmegaConf cannot express; raise ConfigError naming the key."""
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
        ("trainer.global_batch_size", cfg.trainer.global_batch_size >= 1,
         f"must be >= 1, got {cfg.trainer.global_batch_size}"),
        ("trainer.micro_batch_size", cfg.trainer.micro_batch_size >= 1,
         f"must be >= 1, got {cfg.trainer.micro_batch_size}"),
        ("trainer.max_length", cfg.trainer.max_length >= 16, f"must be >= 16, got {cfg.trainer.max_length}"),
        ("trainer.warm_start_epochs", cfg.trainer.warm_start_epochs >= 0,
         f"must be >= 0 (0 skips the warm start), got {cfg.trainer.warm_start_epochs}"),
        ("trainer.epochs", cfg.trainer.epochs >= 1, f"must be >= 1, got {cfg.trainer.epochs}"),
        ("trainer.rpo_alpha", cfg.trainer.rpo_alpha >= 0, f"must be >= 0, got {cfg.trainer.rpo_alpha}"),
        ("trainer.signal_tau", 0 < cfg.trainer.signal_tau < 1, f"must be in (0, 1), got {cfg.trainer.signal_tau}"),
        ("trainer.max_grad_norm", cfg.trainer.max_grad_norm >= 0, f"must be >= 0, got {cfg.trainer.max_grad_norm}"),
        ("trainer.logging_steps", cfg.trainer.logging_steps >= 1, f"must be >= 1, got {cfg.trainer.logging_steps}"),
        ("generation.backend", cfg.generation.backend in GENERATION_BACKENDS,
         f"must be one of {GENERATION_BACKENDS}, got {cfg.generation.backend!r}"),
        ("generation.temperature", cfg.generation.temperature >= 0,
         f"must be >= 0 (0 = greedy), got {cfg.generation.temperature}"),
        ("generation.top_p", 0 < cfg.generation.top_p <= 1, f"must be in (0, 1], got {cfg.generation.top_p}"),
        ("generation.top_k", cfg.generation.top_k == -1 or cfg.generation.top_k >= 1,
         f"must be -1 (off) or >= 1, got {cfg.generation.top_k}"),
        ("generation.repetition_penalty", cfg.generation.repetition_penalty > 0,
         f"must be > 0, got {cfg.generation.repetition_penalty}"),
        ("generation.max_new_tokens", cfg.generation.max_new_tokens >= 1,
         f"must be >= 1, got {cfg.generation.max_new_tokens}"),
        ("generation.max_prompt_length", cfg.generation.max_prompt_length >= 1,
         f"must be >= 1, got {cfg.generation.max_prompt_length}"),
        ("generation.batch_size", cfg.generation.batch_size >= 1, f"must be >= 1, got {cfg.generation.batch_size}"),
        ("launcher.name", cfg.launcher.name in LAUNCHERS, f"must be one of {LAUNCHERS}, got {cfg.launcher.name!r}"),
        ("launcher.num_processes", cfg.launcher.num_processes is None or cfg.launcher.num_processes >= 1,
         f"must be >= 1 or null (one per GPU), got {cfg.launcher.num_processes}"),
        ("launcher.num_machines", cfg.launcher.num_machines >= 1, f"must be >= 1, got {cfg.launcher.num_machines}"),
        ("run.stop_after", cfg.run.stop_after is None or bool(_STOP_AFTER.match(cfg.run.stop_after)),
         "must be prepare, warm_start, or <stage> / iter_<k>/<stage> with stage one of "
         f"{STAGES}, got {cfg.run.stop_after!r}"),
    ]
    for name in ("method.name", "data.name", "model.name", "setting.name"):
        group, key = name.split(".")
        value = getattr(getattr(cfg, group), key)
        checks.append((name, bool(re.fullmatch(r"[A-Za-z0-9_.+-]+", value)),
                       f"is part of the run directory name; use letters, digits, '_', '.', '+', '-', got {value!r}"))
    tiny = cfg.model.tiny
    if cfg.model.path == "tiny":
        checks += [
            ("model.tiny.num_attention_heads", tiny.hidden_size % tiny.num_attention_heads == 0,
             f"must divide hidden_size {tiny.hidden_size}"),
            ("model.tiny.num_key_value_heads", tiny.num_attention_heads % tiny.num_key_value_heads == 0,
             f"must divide num_attention_heads {tiny.num_attention_heads}"),
        ]
    for key, ok, why in checks:
        if not ok:
            raise ConfigError(f"{key} {why}")
    gguf_file_of(cfg.model.path, cfg.model.gguf_file)  # a GGUF / packaged model: the file and the gguf package
    validate_eval(cfg.eval)
    if cfg.run.stop_after:
        m = _STOP_AFTER.match(cfg.run.stop_after)
        if m and m.group(3) is not None and not 1 <= int(m.group(3)) <= cfg.iterations:
            raise ConfigError(f"run.stop_after names iteration {m.group(3)}, but iterations={cfg.iterations}")


def experiment_name(cfg: Config) -> str:
    """The run directory's deterministic name (also the W&B group)."""
    return f"{cfg.data.name}-{cfg.model.name}-{cfg.method.name}-{cfg.setting.name}-s{cfg.seed}"
