"""How the generation stage uses a node's GPUs: data-parallel replicas x tensor-parallel size.

A 7B/14B policy fits on one or two 80 GB GPUs, and vLLM refuses a tensor-parallel size that does not
divide the attention heads (Qwen2.5-7B: 28 heads, so not 8). So the node's GPUs are split into
`replicas` engines of `tensor_parallel` GPUs each, with the smallest tensor-parallel size that

* divides the attention heads, and divides or is divided by the KV heads (vLLM replicates KV heads
  when the tensor-parallel size exceeds them), and divides the GPU count, and
* fits the weights plus the KV cache of `MIN_KV_SEQUENCES` full-length sequences per engine in
  `gpu_memory_utilization` of one GPU.

An explicit generation.tensor_parallel_size wins and is checked against the same rules;
generation.replicas pins the number of replicas (replicas x tensor parallel must then equal the GPUs).
The HF backend has no tensor parallelism: one replica per GPU (one on CPU unless generation.replicas says).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from drift_exp.config import GenerationConfig
from drift_exp.model_shapes import Shape

GIB = 2**30
# Sequences of max_model_len tokens whose KV cache must fit next to the weights for an engine to be useful
# (vLLM batches by KV-cache blocks; with room for fewer, decoding throughput collapses).
MIN_KV_SEQUENCES = 8
# vLLM's non-KV memory besides the weights: activations of its profiling batch, CUDA graphs, the CUDA
# context. An assumption (1-4 GiB for 7B-14B models), not a measurement.
VLLM_OVERHEAD_GIB = 3.0

Problem = tuple[str, str]  # (config key to change, what is wrong)


@dataclass
class Layout:
    backend: str
    gpus: int  # GPUs the stage may use (0: CPU)
    tensor_parallel: int
    replicas: int
    # Per-GPU memory estimate of one engine, GiB (None when not estimated).
    memory_gib: float | None = None
    problems: list[Problem] = field(default_factory=list)

    def device_groups(self) -> list[list[int]]:
        """The GPU indices of each replica (consecutive blocks); empty lists on CPU."""
        if self.gpus == 0:
            return [[] for _ in range(self.replicas)]
        tp = self.tensor_parallel
        return [list(range(r * tp, (r + 1) * tp)) for r in range(self.replicas)]

    def describe(self) -> str:
        return f"{self.replicas}x TP{self.tensor_parallel}"


def tp_rule(shape: Shape, tp: int) -> str | None:
    """Why vLLM would refuse this tensor-parallel size for the model, or None if it is legal."""
    if shape.heads % tp:
        return f"does not divide the {shape.heads} attention heads"
    if shape.kv_heads % tp and tp % shape.kv_heads:
        return f"neither divides nor is a multiple of the {shape.kv_heads} KV heads"
    return None


def engine_memory_gib(shape: Shape, tp: int, seq_len: int, sequences: int = MIN_KV_SEQUENCES) -> float:
    """Per-GPU GiB of one vLLM engine: its share of the bf16 weights, overhead, and the KV cache of
    `sequences` sequences of seq_len tokens (KV heads split over min(tp, kv_heads) GPUs)."""
    kv = shape.kv_bytes_per_token() * seq_len * sequences / min(tp, shape.kv_heads)
    return (shape.weight_bytes() / tp + kv) / GIB + VLLM_OVERHEAD_GIB


def max_model_len(cfg: GenerationConfig) -> int:
    return cfg.max_model_len if cfg.max_model_len is not None else cfg.max_prompt_length + cfg.max_new_tokens


def choose_layout(cfg: GenerationConfig, shape: Shape | None, gpus: int, gpu_memory_gib: float | None,
                  seq_len: int | None = None) -> Layout:
    """The replicas x tensor-parallel layout for `gpus` GPUs (0: CPU), with every problem found.

    shape None: the model's shape is unknown; the head rules and the memory check are skipped.
    gpu_memory_gib None: the memory check is skipped. seq_len: the longest sequence an engine must hold
    (default max_prompt_length + max_new_tokens).
    """
    seq_len = seq_len or max_model_len(cfg)
    problems: list[Problem] = []
    explicit_tp, explicit_replicas = cfg.tensor_parallel_size, cfg.replicas
    if cfg.backend != "vllm":
        if explicit_tp not in (None, 1):
            problems.append(("generation.tensor_parallel_size", f"={explicit_tp}, but the {cfg.backend} backend "
                             "has no tensor parallelism (use 1 or null)"))
        replicas = explicit_replicas or max(gpus, 1)
        if gpus and replicas > gpus:
            problems.append(("generation.replicas", f"={replicas} replicas need one GPU each; the node has {gpus}"))
        memory = None
        if shape is not None and gpus:
            memory = engine_memory_gib(shape, 1, seq_len, cfg.batch_size)
        if memory is not None and gpu_memory_gib is not None and memory > gpu_memory_gib:
            problems.append(("launcher.gpu_memory_gb", f"HF generation needs ~{memory:.1f} GiB per GPU (weights + "
                             f"KV of generation.batch_size={cfg.batch_size} sequences), over {gpu_memory_gib:g}"))
        return Layout(cfg.backend, gpus, 1, replicas, memory, problems)

    budget = gpu_memory_gib * cfg.gpu_memory_utilization if gpu_memory_gib is not None else None
    if explicit_tp is not None:
        tp = explicit_tp
        why = tp_rule(shape, tp) if shape is not None else None
        if why:
            problems.append(("generation.tensor_parallel_size", f"={tp} {why} of {shape.source}; legal sizes "
                             f"up to {max(gpus, 1)}: {legal_sizes(shape, max(gpus, 1)) or 'none'}"))
        if gpus and tp > gpus:
            problems.append(("generation.tensor_parallel_size", f"={tp} is more than the node's {gpus} GPUs"))
    elif gpus <= 1:
        tp = 1
    else:
        legal = [t for t in range(1, gpus + 1) if gpus % t == 0 and (shape is None or tp_rule(shape, t) is None)]
        fitting = [t for t in legal if budget is None or shape is None
                   or engine_memory_gib(shape, t, seq_len) <= budget]
        if not legal:
            problems.append(("generation.tensor_parallel_size", f"no size dividing the {gpus} GPUs is legal for "
                             f"{shape.heads} heads / {shape.kv_heads} KV heads; set it explicitly"))
        tp = (fitting or legal or [1])[0]
    if explicit_replicas is not None:
        replicas = explicit_replicas
        if gpus and replicas * tp != gpus:
            problems.append(("generation.replicas", f"={replicas} x tensor parallel {tp} = {replicas * tp}, "
                             f"but the node has {gpus} GPUs"))
    else:
        replicas = max(gpus // tp, 1)
        if gpus and gpus % tp:
            problems.append(("generation.tensor_parallel_size", f"={tp} does not divide the node's {gpus} GPUs "
                             "(replicas x tensor parallel must equal them)"))
    memory = engine_memory_gib(shape, tp, seq_len) if shape is not None else None
    if memory is not None and budget is not None and memory > budget:
        problems.append(("launcher.gpu_memory_gb", f"a vLLM engine at tensor parallel {tp} needs ~{memory:.1f} GiB "
                         f"per GPU (weights + KV of {MIN_KV_SEQUENCES} x {seq_len} tokens), over "
                         f"{cfg.gpu_memory_utilization:g} x {gpu_memory_gib:g} GiB; raise "
                         "generation.tensor_parallel_size or generation.gpu_memory_utilization"))
    return Layout("vllm", gpus, tp, replicas, memory, problems)


def legal_sizes(shape: Shape, up_to: int) -> list[int]:
    return [t for t in range(1, up_to + 1) if tp_rule(shape, t) is None]
