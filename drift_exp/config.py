"""Typed configuration: dataclass schemas registered in Hydra's ConfigStore.

The fields, their types and their defaults live here (the decoding fields generation.* and eval.*
share in drift_exp/decoding.py); a YAML file under ``conf/`` sets only what its option changes. An
unknown key or a value of the wrong type is rejected by OmegaConf while Hydra composes the config;
ranges are checked by each section's own `validate` method, right below its fields, and the rules
that span sections by :func:`cross_section_checks`; `Config.validate()` runs them all, before anything heavy
is imported. Both name the offending key. What a method needs (drift_exp/methods) and what this machine has
(packages, local paths, GPUs) are checked with the preflight, drift_exp.plan.validate (the entry point).

Upper bounds. A number that multiplies memory or time (samples per record, records, iterations, tokens,
batch sizes, processes) has an upper bound far above any real run but low enough to stop a typo (an extra
zero or three) before it reaches an allocation: each bound's comment says why it is where it is.
"""

from __future__ import annotations

import ast
import importlib.util
from collections.abc import Iterable
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
from drift_exp.decoding import MAX_TOKENS, DecodingConfig, decoding_checks
from drift_exp.errors import ConfigError
from drift_exp.evaluation.config import EvalConfig
from drift_exp.names import (
    DATA_FORMATS,
    ITERATION_STAGES,
    LABEL,
    LABEL_KEYS,
    experiment_name,  # noqa: F401  (defined in names; kept importable from here for tests)
    method_kinds,
    parse_stop_after,
    register_resolvers,
)
from drift_exp.packaged import gguf_file_of

Check = tuple[str, bool, str]  # (key, holds, why it must: the message after the key when it does not)


def require(checks: Iterable[Check]) -> None:
    """Raise ConfigError for the first check that does not hold, naming its key."""
    for key, ok, why in checks:
        if not ok:
            raise ConfigError(f"{key} {why}")


def at_most(key: str, value: int | float | None, bound: int | float, what: str) -> Check:
    """An upper bound: `what` says what the bound guards (memory or time) for the message."""
    return (key, value is None or value <= bound, f"must be <= {bound:,} ({what}), got {value:,}"
            if isinstance(value, int | float) else "")


# Sequence lengths: the longest context of the models in reach (Qwen2.5, Gemma 3: 128k tokens). Anything above it
# is a typo that would allocate a KV cache or activations for a context no model has.
MAX_SEQUENCE = MAX_TOKENS
# The other bounds; the check of each says why it is where it is.
MAX_SAMPLES = 64
MAX_RECORDS = 10_000_000
MAX_EPOCHS = 100
MAX_ITERATIONS = 100


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
    # Which pair builder runs: the module drift_exp/methods/<kind>.py (drift | spin | iterdpo; names.method_kinds).
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

    def validate(self, key: str = "method") -> None:
        kinds = method_kinds()
        require([
            (f"{key}.kind", self.kind in kinds, f"must be one of {kinds}, got {self.kind!r}"),
            (f"{key}.n_samples", self.n_samples >= 1, f"must be >= 1, got {self.n_samples}"),
            # Each sample is one pair and one generated reply per record: the paper draws 1, best-of-n recipes
            # up to 16; 64 x 10k records x 4k tokens is already 2.6 G tokens per iteration.
            at_most(f"{key}.n_samples", self.n_samples, MAX_SAMPLES, "policy samples per request; each one is "
                    "generated and trained on"),
            (f"{key}.instruction", bool(self.instruction.strip()), "must not be empty"),
        ])


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

    def validate(self, key: str = "data") -> None:
        require([
            (f"{key}.format", self.format in DATA_FORMATS, f"must be one of {DATA_FORMATS}, got {self.format!r}"),
            (f"{key}.source", bool(self.source.strip()), "must name 'sample', a path or a hub id"),
            (f"{key}.holdout", self.holdout >= 0, f"must be >= 0 (0 holds nothing out), got {self.holdout}"),
        ])


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

    def validate(self, key: str) -> None:
        sizes = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                 "num_key_value_heads", "max_position_embeddings")
        require([(f"{key}.{n}", getattr(self, n) >= 1, f"must be >= 1, got {getattr(self, n)}") for n in sizes])
        # A test-sized model: a width or depth beyond these builds a real-sized random model on the CPU by mistake.
        require([at_most(f"{key}.{n}", getattr(self, n), bound, "a tiny test model")
                 for n, bound in (("hidden_size", 8192), ("intermediate_size", 32768), ("num_hidden_layers", 128),
                                  ("max_position_embeddings", MAX_SEQUENCE))])
        require([
            (f"{key}.num_attention_heads", self.hidden_size % self.num_attention_heads == 0,
             f"must divide hidden_size {self.hidden_size}"),
            (f"{key}.num_key_value_heads", self.num_attention_heads % self.num_key_value_heads == 0,
             f"must divide num_attention_heads {self.num_attention_heads}"),
            (f"{key}.init_seed", 0 <= self.init_seed <= 2**32 - 1, f"must be in 0 .. 2**32-1, got {self.init_seed}"),
        ])


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

    def validate(self, key: str = "model") -> None:
        require([
            (f"{key}.path", bool(self.path.strip()), "must name 'tiny', a local folder or a hub id"),
            (f"{key}.dtype", self.dtype in DTYPES, f"must be one of {DTYPES}, got {self.dtype!r}"),
            (f"{key}.tiny.init_seed", 0 <= self.tiny.init_seed <= 2**32 - 1,
             f"must be in 0 .. 2**32-1, got {self.tiny.init_seed}"),
        ])
        if self.path == "tiny":
            self.tiny.validate(f"{key}.tiny")
        gguf_file_of(self.path, self.gguf_file)  # a GGUF / packaged model: the file and the gguf package


@dataclass
class SettingConfig:
    # Label used in the run directory name.
    name: str = MISSING
    # controlled: at most this many of the records the method iterates on (DSAT for DRIFT and
    # IterDPO, SAT for SPIN, prompts on UltraFeedback), sampled with the seed; null (full): all.
    max_records: int | None = None

    def validate(self, key: str = "setting") -> None:
        require([
            (f"{key}.max_records", self.max_records is None or self.max_records >= 1,
             f"must be >= 1 or null (all), got {self.max_records}"),
            # The paper's largest pool is UltraFeedback's 61,135 prompts (WildFeedback: 10,632 DSAT); 10 M is two
            # orders of magnitude above any data set in reach, and each record is sampled every iteration.
            at_most(f"{key}.max_records", self.max_records, MAX_RECORDS, "records sampled every iteration; "
                    "null takes all of them"),
        ])


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
    # How the reference enters the loss (a live reference model doubles the memory for weights); auto:
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

    def validate(self, key: str = "trainer") -> None:
        require([
            (f"{key}.beta", self.beta > 0, f"must be > 0, got {self.beta}"),
            (f"{key}.learning_rate", self.learning_rate > 0, f"must be > 0, got {self.learning_rate}"),
            (f"{key}.warmup_ratio", 0 <= self.warmup_ratio < 1, f"must be in [0, 1), got {self.warmup_ratio}"),
            (f"{key}.global_batch_size", self.global_batch_size is None or self.global_batch_size >= 1,
             f"must be >= 1 or null (micro_batch_size per device), got {self.global_batch_size}"),
            # The paper's effective batch is 32; 65,536 pairs per optimizer step is more than a whole data set.
            at_most(f"{key}.global_batch_size", self.global_batch_size, 65_536, "pairs per optimizer step"),
            (f"{key}.micro_batch_size", self.micro_batch_size >= 1, f"must be >= 1, got {self.micro_batch_size}"),
            # Pairs held on one device at once (activations scale with it); the authors use 4.
            at_most(f"{key}.micro_batch_size", self.micro_batch_size, 1024, "pairs per device per step"),
            (f"{key}.max_length", self.max_length >= 16, f"must be >= 16, got {self.max_length}"),
            at_most(f"{key}.max_length", self.max_length, MAX_SEQUENCE, "tokens of prompt + reply; the longest "
                    "context of the models in reach"),
            (f"{key}.max_prompt_length", self.max_prompt_length is None
             or 1 <= self.max_prompt_length < self.max_length,
             f"must be null (half of max_length) or in [1, trainer.max_length={self.max_length}), "
             f"got {self.max_prompt_length}"),
            (f"{key}.warm_start_epochs", self.warm_start_epochs >= 0,
             f"must be >= 0 (0 skips the warm start), got {self.warm_start_epochs}"),
            (f"{key}.epochs", self.epochs >= 1, f"must be >= 1, got {self.epochs}"),
            # The paper trains 3 epochs on the seeds and 1 per iteration; 100 passes over DPO pairs is a typo.
            at_most(f"{key}.warm_start_epochs", self.warm_start_epochs, MAX_EPOCHS, "passes over the seed pairs"),
            at_most(f"{key}.epochs", self.epochs, MAX_EPOCHS, "passes over each iteration's pairs"),
            (f"{key}.rpo_alpha", self.rpo_alpha >= 0, f"must be >= 0, got {self.rpo_alpha}"),
            (f"{key}.signal_tau", 0 < self.signal_tau < 1, f"must be in (0, 1), got {self.signal_tau}"),
            (f"{key}.max_grad_norm", self.max_grad_norm >= 0, f"must be >= 0, got {self.max_grad_norm}"),
            (f"{key}.logging_steps", self.logging_steps >= 1, f"must be >= 1, got {self.logging_steps}"),
            (f"{key}.prompt_style", self.prompt_style in tuple(PromptStyle),
             f"must be one of {tuple(str(s) for s in PromptStyle)}, got {self.prompt_style!r}"),
        ])
        from drift_exp.trainer_extra import check_extra

        check_extra(self.extra)  # DPOConfig's own checks of trainer.extra (imports TRL only when it is set)
        for name, choices in (("optim", transformers_choices("training_args.py", "OptimizerNames")),
                              ("lr_scheduler_type", transformers_choices("trainer_utils.py", "SchedulerType"))):
            value = getattr(self, name)
            require([(f"{key}.{name}", choices is None or value in choices,
                      f"must be one transformers accepts ({', '.join(sorted(choices or []))}), got {value!r}")])


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
    # Data-parallel generation replicas, one process (engine) each; the requests are sharded over them. The
    # completions do not depend on their number with the HF backend, nor with vLLM when batch_invariant is on
    # (without it vLLM's completions can change with the replica count). null: vLLM, the GPUs //
    # tensor_parallel_size; HF, one per GPU (1 on CPU). See drift_exp/generation/layout.py.
    replicas: int | None = field(default=None, metadata=NEUTRAL)
    # model: start from the checkpoint's generation_config.json, then apply temperature, top_p,
    # max_new_tokens (and top_k / repetition_penalty where set) | none: the config's settings only.
    # Added after runs existed, which sampled with the config's settings only: their records count as none.
    sampling_defaults: SamplingDefaults = field(default=SamplingDefaults.model,
                                                metadata=since(legacy=SamplingDefaults.none))
    # vLLM only: run the engine batch-invariant (VLLM_BATCH_INVARIANT=1 set before vllm is imported in the
    # generating process; drift_exp/generation/vllm.py). Without it a request's logits, hence its sampled
    # tokens, depend on which requests share its batch, so the GPU (replica) count changes the completions;
    # with it they do not (same GPU type, vLLM version, dtype and tensor-parallel size). vLLM 0.32: NVIDIA
    # GPUs of compute capability >= 8.0 (A100, H100, H200), AMD Instinct, Intel XPU; slower decoding. The
    # HF backend ignores it: its completions never depend on the replica count (generation/hf.py).
    batch_invariant: bool = False

    def validate(self, key: str = "generation") -> None:
        require([
            (f"{key}.backend", self.backend in GENERATION_BACKENDS,
             f"must be one of {GENERATION_BACKENDS}, got {self.backend!r}"),
            *decoding_checks(key, self),
            (f"{key}.max_prompt_length", self.max_prompt_length >= 1, f"must be >= 1, got {self.max_prompt_length}"),
            at_most(f"{key}.max_prompt_length", self.max_prompt_length, MAX_SEQUENCE, "prompt tokens kept; the "
                    "longest context of the models in reach"),
            (f"{key}.batch_size", self.batch_size >= 1, f"must be >= 1, got {self.batch_size}"),
            # Sequences decoded at once by the HF backend (the KV cache scales with it); the default is 16.
            at_most(f"{key}.batch_size", self.batch_size, 4096, "sequences decoded at once"),
            # GPUs per engine and engines per node: no node has more than a few dozen GPUs.
            at_most(f"{key}.tensor_parallel_size", self.tensor_parallel_size, 1024, "GPUs per vLLM engine"),
            at_most(f"{key}.replicas", self.replicas, 1024, "generation processes on one node"),
            at_most(f"{key}.max_model_len", self.max_model_len, MAX_SEQUENCE, "the engine's context"),
        ])


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

    def validate(self, key: str = "scorer") -> None:
        require([
            (f"{key}.tiny.init_seed", 0 <= self.tiny.init_seed <= 2**32 - 1,
             f"must be in 0 .. 2**32-1, got {self.tiny.init_seed}"),
            (f"{key}.batch_size", self.batch_size >= 1, f"must be >= 1, got {self.batch_size}"),
            at_most(f"{key}.batch_size", self.batch_size, 4096, "pairs scored at once"),
            (f"{key}.max_length", self.max_length >= 1, f"must be >= 1, got {self.max_length}"),
            at_most(f"{key}.max_length", self.max_length, MAX_SEQUENCE, "tokens of question + answer"),
        ])


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

    def validate(self, key: str = "launcher") -> None:
        require([
            (f"{key}.name", self.name in LAUNCHERS, f"must be one of {LAUNCHERS}, got {self.name!r}"),
            (f"{key}.num_processes", self.num_processes is None or self.num_processes >= 1,
             f"must be >= 1 or null (one per GPU), got {self.num_processes}"),
            # One process per GPU: nodes carry 8 or 16; 1024 stops a typo before it starts that many processes.
            at_most(f"{key}.num_processes", self.num_processes, 1024, "training processes per node"),
            (f"{key}.num_machines", self.num_machines >= 1, f"must be >= 1, got {self.num_machines}"),
            at_most(f"{key}.num_machines", self.num_machines, 4096, "nodes of one training job"),
        ])


@dataclass
class TrackingConfig:
    # W&B: where the numbers are sent, not what they are.
    mode: TrackingMode = field(default=TrackingMode.auto, metadata=NEUTRAL)
    # Each unset (null) one is read from its W&B variable (WANDB_PROJECT, WANDB_ENTITY, WANDB_RUN_GROUP,
    # WANDB_NAME, WANDB_TAGS comma-separated, WANDB_NOTES), else drift_exp's: project drift_exp, no entity (your
    # default), group = the experiment name without its seed, name = the experiment name (drift_exp/tracking.py).
    project: str | None = field(default=None, metadata=NEUTRAL)
    entity: str | None = field(default=None, metadata=NEUTRAL)
    group: str | None = field(default=None, metadata=NEUTRAL)
    name: str | None = field(default=None, metadata=NEUTRAL)
    # Added to the automatic tags (method:, data:, model:, setting:, seed:, sweep: in a named sweep, variant:).
    tags: list[str] | None = field(default=None, metadata=NEUTRAL)
    notes: str | None = field(default=None, metadata=NEUTRAL)


@dataclass
class RunConfig:
    # Stop after this stage: prepare, warm_start, or <stage> / iter_<k>/<stage> with stage in
    # requests, generate, pairs, train.
    stop_after: str | None = field(default=None, metadata=NEUTRAL)
    # Allow discarding finished stages whose config changed (otherwise refused).
    overwrite: bool = field(default=False, metadata=NEUTRAL)
    # Folder name under outputs/sweeps/ for multirun.
    sweep_name: str = field(default="multirun", metadata=NEUTRAL)
    # The ablation's part of the experiment name (`<name>+<variant>`: run directory, W&B name and group).
    # null: made from the command line's result-affecting overrides outside the name (drift_exp.names.variant_of,
    # e.g. trainer.beta_0.2) and recorded here; '' for none; a label to name it by hand.
    variant: str | None = field(default=None, metadata=NEUTRAL)
    # Run the preflight checks of `python -m drift_exp.plan` (layout, batch, memory, data, judge keys,
    # disk) before anything is read or written; false skips them.
    preflight: bool = field(default=True, metadata=NEUTRAL)

    def validate(self, key: str = "run") -> None:
        stop = parse_stop_after(self.stop_after) if self.stop_after else None
        require([(f"{key}.stop_after", self.stop_after is None or stop is not None,
                  "must be prepare, warm_start, or <stage> / iter_<k>/<stage> with stage one of "
                  f"{ITERATION_STAGES}, got {self.stop_after!r}"),
                 (f"{key}.variant", not self.variant or bool(LABEL.fullmatch(self.variant)),
                  f"is part of the run directory name; use letters, digits, '_', '.', '+', '-', got {self.variant!r}")])


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

    def validate(self) -> None:
        """Every section's own checks, then the rules across sections; ConfigError naming the key.

        Config values only: what the method needs and what this machine has are drift_exp.plan.validate's."""
        bad = non_finite(self)  # inf / nan pass every range check written as a comparison
        if bad:
            raise ConfigError(f"{bad[0]} must be a finite number, got {attrgetter(bad[0])(self)}")
        require([
            ("iterations", self.iterations >= 1, f"must be >= 1, got {self.iterations}"),
            # The paper runs 2-3 iterations, SPIN 4; each one keeps a checkpoint (15-30 GB at 7-14 B), so 100 is
            # already terabytes: anything above is a typo.
            at_most("iterations", self.iterations, MAX_ITERATIONS, "each iteration samples, trains and keeps a "
                    "checkpoint"),
            ("seed", 0 <= self.seed <= 2**32 - 1, f"must be in 0 .. 2**32-1, got {self.seed}"),
        ])
        self.method.validate()
        self.data.validate()
        self.model.validate()
        self.setting.validate()
        self.trainer.validate()
        self.generation.validate()
        self.scorer.validate()
        self.launcher.validate()
        self.run.validate()
        self.eval.validate()
        cross_section_checks(self)


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
    register_sweeps()  # the group `cell` (`sweep` is the folder conf/sweep/)


GENERATION_BACKENDS = ("hf", "vllm")
LAUNCHERS = ("inline", "local", "slurm")
DTYPES = ("auto", "float32", "bfloat16", "float16")


def cross_section_checks(cfg: Config) -> None:
    """The rules that read more than one section."""
    require([(name, bool(LABEL.fullmatch(value)), "is part of the run directory name; use letters, digits, "
              f"'_', '.', '+', '-', got {value!r}") for name, value in ((n, attrgetter(n)(cfg)) for n in LABEL_KEYS)])
    if scorer_path(cfg) == "tiny":
        cfg.scorer.tiny.validate("scorer.tiny")
    stop = parse_stop_after(cfg.run.stop_after) if cfg.run.stop_after else None
    if stop is not None and stop.iteration is not None and not 1 <= stop.iteration <= cfg.iterations:
        raise ConfigError(f"run.stop_after names iteration {stop.iteration}, but iterations={cfg.iterations}")


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
