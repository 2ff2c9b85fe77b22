"""A concrete DeepSpeed ZeRO-3 config for the DPO stage, derived from ``trainer.*`` and the world size.

Why concrete values, not ``"auto"``
------------------------------------
The batch is explicit. By default (``trainer.global_batch_size: null``) it follows the authors' alignment-handbook
YAMLs: ``trainer.micro_batch_size`` (4) pairs per device and no accumulation, so the effective batch is
4 x world size (32 on their 8-GPU node). ``trainer.global_batch_size`` set pins the effective batch whatever the
world size (with ``"auto"``, moving from 8 to 16 GPUs would silently double it; alignment-handbook issue
#44). :func:`drift_exp.training.dpo.derive_batch` turns either into a micro batch and gradient
accumulation for the given world size; the json then states all three numbers, so:

- raw ``deepspeed.runtime.config.DeepSpeedConfig`` validates it (``"auto"`` raises a TypeError there) and
  asserts ``train_batch_size == micro x accumulation x world size`` against the *real* world size at launch;
- transformers (``HfTrainerDeepSpeedConfig.trainer_config_process``) compares every value with the
  TrainingArguments that ``dpo.py`` builds from the same ``derive_batch`` call, and refuses to train on a
  mismatch instead of quietly overriding one side;
- the json written next to the stage's outputs records the batch arithmetic the run really used.

The values that must equal ``DPOConfig``'s are: ``train_micro_batch_size_per_gpu`` = per_device_train_batch_size,
``gradient_accumulation_steps``, ``train_batch_size`` (= the two x world size), ``gradient_clipping`` =
max_grad_norm and ``bf16.enabled`` = bf16. No ``optimizer``/``scheduler`` blocks: the HF Trainer creates the
optimizer from ``trainer.optim`` (RMSprop) and the linear schedule itself, exactly as without DeepSpeed.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any, Protocol

from drift_exp.errors import ConfigError
from drift_exp.model_shapes import ModelShape

OFFLOAD_CHOICES = (None, "optimizer", "all")  # all = optimizer states and parameters

# ZeRO-3 bucket sizes, as transformers derives its "auto" values from the model's hidden size h
# (reduce h^2, prefetch 0.9 h^2, persistence 10 h). Used with h=4096 when the caller gives no hidden size:
# the right order of magnitude for the 7B-14B models (Qwen2.5-7B h=3584, 14B h=5120).
DEFAULT_HIDDEN_SIZE = 4096


class _TrainerLike(Protocol):
    global_batch_size: int | None
    micro_batch_size: int
    max_grad_norm: float


def bucket_sizes(hidden_size: int) -> dict[str, int]:
    """The three hidden-size-based ZeRO-3 settings, with transformers' "auto" formulas."""
    return {
        "reduce_bucket_size": hidden_size * hidden_size,
        "stage3_prefetch_bucket_size": int(0.9 * hidden_size * hidden_size),
        "stage3_param_persistence_threshold": 10 * hidden_size,
    }


def zero3_config(trainer_cfg: _TrainerLike, world_size: int, bf16: bool, offload: str | None = None, *,
                 hidden_size: int | None = None, overlap_comm: bool = True) -> dict[str, Any]:
    """A DeepSpeed ZeRO-3 config dict with no "auto" values, for `world_size` data-parallel ranks.

    trainer_cfg: anything with global_batch_size, micro_batch_size and max_grad_norm (TrainerConfig);
        global_batch_size None = micro_batch_size per device, accumulation 1 (the authors' semantics).
    bf16: must equal the DPOConfig's bf16 (DeepSpeed keeps bf16 weights + fp32 master weights; False = fp32).
    offload: None (everything on the GPUs), "optimizer" (fp32 master weights + optimizer state in CPU RAM) or
        "all" (parameters too). With a client optimizer such as torch RMSprop, offloading runs its step on the
        CPU; ``zero_force_ds_cpu_optimizer`` is turned off so DeepSpeed accepts it (slow but correct).
    hidden_size: the model's hidden size, for the bucket sizes (default: those of h=4096).
    overlap_comm: overlap the gradient reduce-scatter with the backward pass (uses 2 reduce buckets).
    Raises ConfigError naming trainer.global_batch_size when it is set and the world size does not divide it.
    """
    from drift_exp.training.dpo import derive_batch

    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size}")
    if offload not in OFFLOAD_CHOICES:
        raise ConfigError(f"trainer.offload must be one of {OFFLOAD_CHOICES}, got {offload!r}")
    global_batch = trainer_cfg.global_batch_size
    micro, accum = derive_batch(global_batch, trainer_cfg.micro_batch_size, world_size)
    zero: dict[str, Any] = {
        "stage": 3,
        "overlap_comm": overlap_comm,
        "contiguous_gradients": True,
        "reduce_scatter": True,
        **bucket_sizes(hidden_size or DEFAULT_HIDDEN_SIZE),
        "stage3_max_live_parameters": 1_000_000_000,
        "stage3_max_reuse_distance": 1_000_000_000,
        "sub_group_size": 1_000_000_000,
        # trainer.save_model() gathers the partitions into one 16-bit HF checkpoint for the next stage
        # (generation with vLLM/HF, the next iteration's policy and reference).
        "stage3_gather_16bit_weights_on_model_save": True,
    }
    if offload is not None:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
    if offload == "all":
        zero["offload_param"] = {"device": "cpu", "pin_memory": True}
    config: dict[str, Any] = {
        "train_batch_size": micro * accum * world_size,
        "train_micro_batch_size_per_gpu": micro,
        "gradient_accumulation_steps": accum,
        "gradient_clipping": float(trainer_cfg.max_grad_norm),
        "bf16": {"enabled": bool(bf16)},
        "fp16": {"enabled": False},
        "zero_optimization": zero,
        # The HF Trainer builds the optimizer (RMSprop) itself; DeepSpeed only "tests" Adam-family ones.
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 1_000_000,  # the Trainer logs; keep DeepSpeed's own step printer quiet
        "wall_clock_breakdown": False,
    }
    if offload is not None:
        config["zero_force_ds_cpu_optimizer"] = False
    assert global_batch is None or config["train_batch_size"] == global_batch  # derive_batch's contract
    return config


def write_zero3_config(path: str | os.PathLike[str], trainer_cfg: _TrainerLike, world_size: int, bf16: bool,
                       offload: str | None = None, **kwargs: Any) -> Path:
    """Write zero3_config(...) as json to path atomically (temp file + fsync + rename); return the path."""
    path = Path(path)
    config = zero3_config(trainer_cfg, world_size, bf16, offload, **kwargs)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(config, f, indent=2, sort_keys=True)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


# ----------------------------------------------------------------------------------------------- memory plan


QWEN25 = {  # Qwen/Qwen2.5-{7B,14B}-Instruct config.json; untied embeddings
    "7B": ModelShape(params=7.62e9, hidden=3584, intermediate=18944, layers=28, kv_dim=4 * 128, vocab=152064),
    "14B": ModelShape(params=14.77e9, hidden=5120, intermediate=13824, layers=48, kv_dim=8 * 128, vocab=152064),
}
OPTIMIZER_BYTES = {"rmsprop": 4, "adamw": 8}  # fp32 optimizer state per parameter (square_avg; exp_avg + exp_avg_sq)


def estimate_gpu_memory(shape: ModelShape, world_size: int, micro_batch: int, seq_len: int = 2048,
                        optimizer: str = "rmsprop", ref_live: bool = True,
                        sub_group_size: int = 1_000_000_000) -> dict[str, float]:
    """Per-GPU GiB under ZeRO-3, bf16, gradient checkpointing, no offload. An ESTIMATE (see launchers/MEMORY.md).

    states:      bf16 param + bf16 grad + fp32 master + fp32 optimizer state, partitioned over world_size
    ref:         a live frozen bf16 reference, partitioned too (0 when the log-probs are precomputed)
    gathered:    DeepSpeed's own allowance for the largest layer gathered in full (4 B x largest layer)
    activations: TRL runs chosen and rejected as one batch of 2 x micro_batch sequences; the layer-input
                 checkpoints of every layer + one layer's recomputed activations and their gradients
    step:        the fp32 gradient of one optimizer sub-group, alive only during the step (activations are gone)
    peak:        states + ref + max(gathered + activations, step)
    """
    gib = 2**30
    n, h = shape.params, shape.hidden
    largest = shape.vocab * h
    states = (2 + 2 + 4 + OPTIMIZER_BYTES[optimizer]) * n / world_size
    ref = 2 * n / world_size if ref_live else 0.0
    tokens = 2 * micro_batch * seq_len
    checkpoints = shape.layers * tokens * h * 2
    per_token_layer = 2 * (13 * h + 3 * shape.kv_dim + 4 * shape.intermediate)  # bf16 saved tensors of one layer
    layer = 2 * tokens * per_token_layer  # forward activations + their gradients in the backward
    gathered = 4 * largest
    step = 4 * min(sub_group_size, n / world_size)
    peak = states + ref + max(gathered + checkpoints + layer, step)
    return {k: round(v / gib, 1) for k, v in {
        "states": states, "ref": ref, "gathered": gathered, "activations": checkpoints + layer, "step": step,
        "peak": peak}.items()}


def memory_table(world_sizes: tuple[int, ...] = (8, 16), micro_batches: tuple[int, ...] = (1, 2, 3, 4),
                 seq_len: int = 2048) -> str:
    """Markdown: per-GPU peak GiB for Qwen2.5-7B/14B, RMSprop and AdamW, live or precomputed reference."""
    head = "| model | GPUs | optimizer | reference | states | ref | gathered | step | " + " | ".join(
        f"act b={b}" for b in micro_batches) + " | " + " | ".join(f"**peak b={b}**" for b in micro_batches) + " |"
    lines = [head, "|" + "---|" * (8 + 2 * len(micro_batches))]
    for name, shape in QWEN25.items():
        for world in world_sizes:
            for optimizer in ("rmsprop", "adamw"):
                for live in (True, False):
                    rows = [estimate_gpu_memory(shape, world, b, seq_len, optimizer, live) for b in micro_batches]
                    r = rows[0]
                    lines.append(f"| {name} | {world} | {optimizer} | {'live' if live else 'precomputed'} | "
                                 f"{r['states']} | {r['ref']} | {r['gathered']} | {r['step']} | "
                                 + " | ".join(str(x["activations"]) for x in rows) + " | "
                                 + " | ".join(f"**{x['peak']}**" for x in rows) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """python -m drift_exp.training.deepspeed --world-size 16 [--global-batch 64 ...] [--out ds.json] | --memory-plan"""
    from drift_exp.config import TrainerConfig

    defaults = TrainerConfig()
    p = argparse.ArgumentParser(prog="python -m drift_exp.training.deepspeed",
                                description="Print or write the concrete ZeRO-3 config the DPO stage uses.")
    p.add_argument("--world-size", type=int, help="total training processes (nodes x GPUs)")
    p.add_argument("--memory-plan", action="store_true", help="print launchers/MEMORY.md's estimate table")
    p.add_argument("--global-batch", type=int, default=defaults.global_batch_size,
                   help="pin the effective batch; default: --micro-batch per device, no accumulation")
    p.add_argument("--micro-batch", type=int, default=defaults.micro_batch_size)
    p.add_argument("--max-grad-norm", type=float, default=defaults.max_grad_norm)
    p.add_argument("--no-bf16", action="store_true", help="fp32 (CPU runs); default bf16")
    p.add_argument("--offload", choices=["optimizer", "all"], default=None)
    p.add_argument("--hidden-size", type=int, default=None)
    p.add_argument("--out", type=Path, default=None, help="write here instead of printing")
    a = p.parse_args(argv)
    if a.memory_plan:
        print(memory_table())
        return
    if a.world_size is None:
        p.error("--world-size is required")
    cfg = TrainerConfig(global_batch_size=a.global_batch, micro_batch_size=a.micro_batch,
                        max_grad_norm=a.max_grad_norm)
    kwargs = {"hidden_size": a.hidden_size}
    if a.out is None:
        print(json.dumps(zero3_config(cfg, a.world_size, not a.no_bf16, a.offload, **kwargs), indent=2))
    else:
        print(write_zero3_config(a.out, cfg, a.world_size, not a.no_bf16, a.offload, **kwargs))


if __name__ == "__main__":
    main()
