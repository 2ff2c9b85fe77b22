"""One DPO training stage with TRL's DPOTrainer, on the paper's settings (Appendix D)."""

from __future__ import annotations

import logging
import math
import os
import shutil
import signal
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from drift_exp.config import RefMode, RefModeKind, TrainerConfig, Truncation
from drift_exp.errors import ConfigError, UserError
from drift_exp.models import load_policy, load_tokenizer
from drift_exp.records import PreferencePair
from drift_exp.training.truncation import prompt_limit

if TYPE_CHECKING:
    from transformers import TrainerCallback

log = logging.getLogger(__name__)


def derive_batch(global_batch: int | None, micro_batch: int, world_size: int) -> tuple[int, int]:
    """(per-device batch, gradient accumulation) for `world_size` data-parallel ranks.

    global_batch None (the default): the authors' semantics, `micro_batch` pairs per device and no
    accumulation, so the effective batch is micro_batch x world size (4 x 8 = 32 on their node).
    global_batch set: per-device x accumulation x world = global_batch whatever the world size, with the
    largest per-device batch <= micro_batch that divides the per-rank share.
    """
    if global_batch is None:
        return micro_batch, 1
    if global_batch % world_size:
        raise ConfigError(f"trainer.global_batch_size={global_batch} is not divisible by the world size "
                          f"{world_size}; choose a multiple of {world_size}, set trainer.global_batch_size=null "
                          f"(the authors' semantics: trainer.micro_batch_size pairs per device, 4 x {world_size} = "
                          f"{4 * world_size} on {world_size} GPUs), or train on fewer processes "
                          "(launcher.num_processes)")
    per_rank = global_batch // world_size
    micro = min(micro_batch, per_rank)
    while per_rank % micro:  # the largest micro batch <= micro_batch that divides the per-rank batch
        micro -= 1
    return micro, per_rank // micro


def batch_stats(cfg: TrainerConfig, world_size: int) -> dict[str, Any]:
    """The batch arithmetic of a stage, as metrics.json and W&B record it."""
    micro, accum = derive_batch(cfg.global_batch_size, cfg.micro_batch_size, world_size)
    return {"per_device_batch_size": micro, "gradient_accumulation_steps": accum, "world_size": world_size,
            "effective_batch_size": micro * accum * world_size,
            "batch_semantics": "authors (per device)" if cfg.global_batch_size is None else "pinned global"}


def loss_settings(cfg: TrainerConfig) -> dict[str, Any]:
    """RPO (DPO + alpha x NLL) the TRL 1.16 way; plain sigmoid DPO when alpha is 0."""
    if cfg.rpo_alpha > 0:
        return {"loss_type": ["sigmoid", "sft"], "loss_weights": [1.0, cfg.rpo_alpha]}
    return {"loss_type": ["sigmoid"], "loss_weights": [1.0]}


class _KillAt:
    """Test hook: DRIFT_EXP_KILL_AT=iter_<k>/train@<step> SIGKILLs the process after that step."""

    def __init__(self, stage: str):
        from transformers import TrainerCallback

        target = os.environ.get("DRIFT_EXP_KILL_AT", "")
        name, _, step = target.partition("@")
        self.step = int(step) if name == stage and step else None

        class Callback(TrainerCallback):
            def on_step_end(cb, args, state, control, **kw):  # noqa: N805
                if self.step is not None and state.global_step >= self.step:
                    os.kill(os.getpid(), signal.SIGKILL)

        self.callback = Callback()


def use_bf16(cfg: TrainerConfig, deepspeed: bool, cuda: bool | None = None) -> bool:
    """trainer.bf16, with null = bf16 where the GPU supports it; DeepSpeed refuses bf16 without a GPU."""
    cuda = torch.cuda.is_available() if cuda is None else cuda
    if cfg.bf16 is None:
        return cuda and torch.cuda.is_bf16_supported()
    return cfg.bf16 and (cuda or not deepspeed)


def precompute_reference(cfg: TrainerConfig, cuda: bool | None = None) -> bool:
    """ref_mode auto: precompute the reference log-probs on GPU (one resident model), keep it live on CPU."""
    if cfg.ref_mode == RefModeKind.auto:
        return torch.cuda.is_available() if cuda is None else cuda
    return cfg.ref_mode == RefModeKind.precomputed


def dpo_arguments(cfg: TrainerConfig, *, output_dir: str, run_name: str, report_to: str, seed: int, epochs: int,
                  world_size: int, cuda: bool, deepspeed_config: str | None) -> dict[str, Any]:
    """The DPOConfig keyword arguments of a stage (pure: no model, no device probe; trainer.extra last)."""
    micro, accum = derive_batch(cfg.global_batch_size, cfg.micro_batch_size, world_size)
    if deepspeed_config is not None:
        placement: dict[str, Any] = {"deepspeed": deepspeed_config,
                                     "accelerator_config": {"use_configured_state": True}}
    else:
        placement = {"use_cpu": not cuda}
    return dict(
        output_dir=output_dir,
        run_name=run_name,
        report_to=report_to,
        seed=seed,
        data_seed=seed,
        num_train_epochs=epochs,
        per_device_train_batch_size=micro,
        gradient_accumulation_steps=accum,
        learning_rate=cfg.learning_rate,
        lr_scheduler_type=cfg.lr_scheduler_type,
        warmup_steps=cfg.warmup_ratio,  # transformers 5: a float < 1 is a ratio of the total steps
        optim=cfg.optim,
        beta=cfg.beta,
        max_length=cfg.max_length,
        max_grad_norm=cfg.max_grad_norm,
        bf16=use_bf16(cfg, deepspeed=deepspeed_config is not None, cuda=cuda),
        gradient_checkpointing=cfg.gradient_checkpointing and cuda,  # saves GPU memory; only slows a CPU
        logging_steps=cfg.logging_steps,
        save_strategy="no",
        disable_tqdm=False,
        precompute_ref_log_probs=precompute_reference(cfg, cuda=cuda),
        ddp_timeout=cfg.ddp_timeout,
        **loss_settings(cfg),
        **placement,
        **dict(cfg.extra),
    )


def make_trainer(model: Any, ref_model: Any, tokenizer: Any, args: Any, cfg: TrainerConfig, dataset: Any,
                 eval_dataset: Any, callbacks: Sequence[Any]) -> Any:
    """The stage's DriftDPOTrainer (training/trainer.py): TRL's DPOTrainer with the §5 capture and, per config,
    the authors' truncation and the handbook tokenisation."""
    from drift_exp.training.console import use_concise_console
    from drift_exp.training.trainer import DriftDPOTrainer

    authors = cfg.truncation == Truncation.authors
    trainer = DriftDPOTrainer(model=model, ref_model=ref_model, args=args, train_dataset=dataset,
                              eval_dataset=eval_dataset, processing_class=tokenizer, callbacks=list(callbacks),
                              signal_tau=cfg.signal_tau, max_prompt_length=prompt_limit(cfg) if authors else None,
                              prompt_style=str(cfg.prompt_style))
    use_concise_console(trainer)  # bars + one line per log; every key still goes to W&B and log_history
    return trainer


def pairs_dataset(args: Any, pairs: list[PreferencePair], folder: Path) -> Any:
    """The pairs as a datasets.Dataset saved in `folder` (written by the main process, read by every rank)."""
    from datasets import Dataset, load_from_disk

    with args.main_process_first(desc=f"pairs dataset {folder.name}"):
        if args.process_index == 0:
            shutil.rmtree(folder, ignore_errors=True)
            Dataset.from_list([p.to_trl() for p in pairs]).save_to_disk(str(folder))
        return load_from_disk(str(folder))


def save_atomically(trainer: Any, tokenizer: Any, out_dir: Path, leftovers: Sequence[Path]) -> bool:
    """Save the trained model and tokenizer to out_dir through out_dir.tmp and a rename, so that out_dir is either
    absent or complete; every rank takes part (ZeRO-3 gathers the 16-bit weights to rank 0), with a barrier before
    and after. Removes `leftovers` (the trainer's scratch folders) on the main process. True there."""
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    main = trainer.is_world_process_zero()
    if main:
        shutil.rmtree(tmp, ignore_errors=True)  # left by a crash
    trainer.accelerator.wait_for_everyone()
    trainer.save_model(str(tmp))  # every rank: ZeRO-3 gathers the 16-bit weights to rank 0
    if main:
        tokenizer.save_pretrained(str(tmp))
        shutil.rmtree(out_dir, ignore_errors=True)  # a discarded (run.overwrite) checkpoint
        os.replace(tmp, out_dir)
        for folder in leftovers:
            shutil.rmtree(folder, ignore_errors=True)
    trainer.accelerator.wait_for_everyone()
    return main


def log_counts(stage: str, cfg: TrainerConfig, trainer: Any, given: int) -> None:
    """Say what TRL dropped or the authors' rule cut; fail when nothing is left to train on."""
    used = len(trainer.train_dataset)
    counts = trainer.truncation_counts
    if cfg.truncation == Truncation.authors and used != given:
        raise RuntimeError(f"{stage}: {given - used} pairs lost with trainer.truncation=authors, which drops none")
    if counts.get("truncated_prompts") or counts.get("truncated_completions"):
        log.info("%s: cut %d prompts to their last %d tokens and %d completions to fit trainer.max_length=%d",
                 stage, counts["truncated_prompts"], trainer.max_prompt_length, counts["truncated_completions"],
                 cfg.max_length)
    if used < given:  # TRL drops pairs whose prompt alone fills max_length; say so, never silently
        log.warning("%s: %d of %d pairs dropped by TRL: the prompt alone exceeds trainer.max_length=%d",
                    stage, given - used, given, cfg.max_length)
    if used == 0:
        raise UserError(f"{stage}: every pair's prompt exceeds trainer.max_length={cfg.max_length}")


def train_stats(trainer: Any, cfg: TrainerConfig, result: Any, given: int, epochs: int, world_size: int,
                deepspeed: bool, shards: dict[str, int]) -> dict[str, Any]:
    """The stage's stats (train_stats.json, metrics.json's train section, W&B stage/train)."""
    used = len(trainer.train_dataset)
    authors = cfg.truncation == Truncation.authors
    history = [h for h in trainer.state.log_history if "loss" in h]
    last = history[-1] if history else {}
    return {
        "steps": trainer.state.global_step,
        "examples": used,
        "dropped_too_long": given - used,
        "truncation": str(cfg.truncation),
        "max_prompt_length": trainer.max_prompt_length,  # the prompt tokens kept (truncation=authors); null with trl
        **(dict(trainer.truncation_counts) if authors else {}),  # truncated_prompts, _chosen, _rejected, _completions
        "epochs": epochs,
        "micro_batch_size": trainer.args.per_device_train_batch_size,
        **batch_stats(cfg, world_size),
        "deepspeed": deepspeed,
        **shards,
        "reference_mode": "precomputed" if trainer.args.precompute_ref_log_probs else "live",
        "train_loss": result.training_loss,
        "first_loss": history[0]["loss"] if history else math.nan,
        "final": {k: v for k, v in last.items() if k.startswith(("rewards/", "logps/", "loss"))},
        "history": history,
        "signal": trainer.signal_summary(include_steps=False),  # s and sigma(-s), paper §5 / Lemma 1
        "runtime_s": result.metrics.get("train_runtime"),
    }


def shard_counts(model: Any) -> dict[str, int]:
    """ZeRO-3 evidence for the logs and tests: each rank holds a shard, no full parameter."""
    return {"parameters": sum(getattr(p, "ds_numel", p.numel()) for p in model.parameters()),
            # 0 under ZeRO-3: every parameter is partitioned
            "parameters_held_whole_on_rank0": sum(p.numel() for p in model.parameters()),
            "parameter_shard_on_rank0": sum(p.ds_tensor.numel() for p in model.parameters()
                                            if hasattr(p, "ds_tensor"))}


def prepare_distributed(cfg: TrainerConfig, stage: str, deepspeed_config: str | None, cuda: bool) -> None:
    """Under DeepSpeed, the accelerate state before TrainingArguments (use_configured_state); refuse a DeepSpeed
    launch without the ZeRO-3 config (transformers would silently fall back to ZeRO-2)."""
    if deepspeed_config is not None:
        from accelerate import PartialState

        os.environ["ACCELERATE_USE_DEEPSPEED"] = "true"
        # On CPU the state must be told gloo. The timeout applies to every collective of the job.
        PartialState(timeout=timedelta(seconds=cfg.ddp_timeout), **({} if cuda else {"backend": "gloo"}))
    elif os.environ.get("ACCELERATE_USE_DEEPSPEED") == "true":
        raise UserError(f"{stage}: launched with DeepSpeed but without a ZeRO-3 config; transformers would "
                        "silently fall back to ZeRO-2. Launch through drift_exp (launcher=local/slurm).")


def train_dpo(model_path: str, ref_path: str | None, pairs: list[PreferencePair], out_dir: Path,
              cfg: TrainerConfig, epochs: int, seed: int, report_to: str, run_name: str,
              stage: str, deepspeed_config: str | None = None, *, callbacks: Sequence[TrainerCallback] = (),
              heldout: Sequence[PreferencePair] = ()) -> dict[str, Any] | None:
    """Train `epochs` epochs of DPO from model_path on pairs; save an HF checkpoint to out_dir.

    `callbacks` are added to the trainer's own; `heldout` pairs (data.holdout, drift_exp/heldout.py) are evaluated
    with TRL's evaluate() after training, into stats["heldout"]. Under `accelerate launch` with a DeepSpeed ZeRO-3
    config every rank calls this; the model is created after the DPOConfig, so transformers builds it under
    zero.Init (partitioned). Returns the stats on the main process, None elsewhere.
    """
    from trl import DPOConfig

    from drift_exp.heldout import heldout_metrics
    from drift_exp.training.guards import NonFiniteGuard  # NaN/inf loss or weights: the stage fails

    cuda = torch.cuda.is_available()
    prepare_distributed(cfg, stage, deepspeed_config, cuda)
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    args = DPOConfig(**dpo_arguments(cfg, output_dir=str(out_dir.parent / f".trainer-{out_dir.name}"),
                                     run_name=run_name, report_to=report_to, seed=seed, epochs=epochs,
                                     world_size=world_size, cuda=cuda, deepspeed_config=deepspeed_config))
    tok = load_tokenizer(model_path, padding_side="right")
    # fp32 master weights: an update of lr 5e-7 vanishes in bf16 weights; bf16 compute comes from autocast.
    model = load_policy(model_path, torch.float32)
    ref_model = load_policy(ref_path, torch.float32) if ref_path is not None else None
    # On disk, not in memory: TRL's map() caches (e.g. precomputed reference log-probs) must be
    # files every rank can open, next to the data; an in-memory dataset gives each rank a private tmp.
    data_dir = out_dir.parent / f".pairs-{out_dir.name}"
    eval_dir = out_dir.parent / f".heldout-{out_dir.name}"
    dataset = pairs_dataset(args, pairs, data_dir)
    eval_dataset = pairs_dataset(args, list(heldout), eval_dir) if heldout else None
    trainer = make_trainer(model, ref_model, tok, args, cfg, dataset, eval_dataset,
                           [_KillAt(stage).callback, NonFiniteGuard(stage), *callbacks])
    log_counts(stage, cfg, trainer, len(pairs))
    shards = shard_counts(model)
    result = trainer.train()
    evaluated = heldout_metrics(trainer, len(heldout))
    if not save_atomically(trainer, tok, out_dir, [Path(args.output_dir), data_dir, eval_dir]):
        return None
    stats = train_stats(trainer, cfg, result, len(pairs), epochs, world_size, deepspeed_config is not None, shards)
    stats.update(pairs=len(pairs), heldout_pairs=len(heldout))  # trained on / held out (data.holdout)
    if evaluated is not None:
        stats["heldout"] = evaluated
    return stats


def reference_path(mode: RefMode, iteration_start: str, initial: str) -> str | None:
    """None lets TRL load the reference from the policy's own path (the iteration's starting model)."""
    return None if mode == RefMode.previous or initial == iteration_start else initial
