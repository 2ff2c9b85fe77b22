"""The trainer class of every DPO stage: TRL's DPOTrainer with the project's three options.

``DriftDPOTrainer(DPOTrainer)`` takes, beside TRL's own arguments:

- ``signal_tau`` (float, default 0.5; None switches the capture off): the paper's §5 capture of each
  pair's implicit reward margin. How it works, and why it can be trusted, is in training/diagnostics.py;
  it uses TRL's public surface only: ``compute_loss`` and ``log`` (the Trainer's documented override
  points) and torch forward hooks on the models.
- ``max_prompt_length`` (int or None): None keeps TRL 1.16's rule for over-long pairs (its collator keeps the
  start of prompt + completion and pairs whose prompt alone fills max_length are dropped); an int applies the
  authors' rule of training/truncation.py (the prompt keeps its last max_prompt_length tokens, the completions
  are cut to fit max_length, nothing is dropped).
- ``prompt_style`` ("trl" or "handbook"): who turns a conversational pair into token ids. "trl": TRL 1.16's own
  tokenisation (its chat template call on prompt and prompt + completion). "handbook": the alignment-handbook
  + TRL 0.12 sequence the authors trained on (training/handbook.py).

The one private TRL method touched: ``DPOTrainer._prepare_dataset(dataset, processing_class, args,
dataset_name)``, the step that tokenises a dataset (TRL 1.16 has no public hook for it). It is overridden below
for the authors' truncation and the handbook style only; with the defaults of TRL (max_prompt_length None,
prompt_style "trl") TRL's method runs unchanged. tests/test_trainer.py pins its signature and its output columns
in the installed TRL, so a TRL release that renames or reshapes it fails that test, not a training run.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from accelerate.utils import is_peft_model
from trl import DPOTrainer
from trl.trainer.utils import global_then_local_main_first

from drift_exp.training.diagnostics import _capture_failed, _sequence_logps, signal_stats
from drift_exp.training.handbook import PROMPT_STYLES, tokenize_handbook
from drift_exp.training.truncation import LengthLimitLifted, truncate_dataset

# The private TRL method overridden here, with the parameters it is called with (tests/test_trainer.py checks
# both against the installed TRL).
PRIVATE_OVERRIDES = {"_prepare_dataset": ("self", "dataset", "processing_class", "args", "dataset_name")}


class DriftDPOTrainer(DPOTrainer):
    """TRL's DPOTrainer with the §5 signal capture, the authors' truncation and the handbook tokenisation as options.

    After construction, ``truncation_counts`` holds the authors' truncation counts of the training set ({} under
    TRL's rule). With the capture on, every logging step adds ``signal/<key>`` entries (``signal_stats`` of the
    pairs since the previous log; ``eval_signal/`` in evaluation) to the logs, and ``signal_summary()`` returns the
    per-step and whole-stage statistics after training.
    """

    def __init__(self, *args: Any, signal_tau: float | None = 0.5, max_prompt_length: int | None = None,
                 prompt_style: str = "trl", **kwargs: Any):
        if signal_tau is not None and not 0 < signal_tau < 1:
            raise ValueError(f"signal_tau must be in (0, 1), got {signal_tau}")
        if prompt_style not in PROMPT_STYLES:
            raise ValueError(f"prompt_style must be one of {PROMPT_STYLES}, got {prompt_style!r}")
        # Read by _prepare_dataset, which DPOTrainer.__init__ calls: set before it.
        self.max_prompt_length = max_prompt_length
        self.prompt_style = prompt_style
        self.truncation_counts: dict[str, int] = {}
        self.signal_tau = None if signal_tau is None else float(signal_tau)
        # Per mode: per micro batch (chosen, rejected) since the last log (window) and of the whole stage.
        self._signal_window: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {"train": [], "eval": []}
        self._signal_all: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {"train": [], "eval": []}
        self._signal_steps: list[dict[str, Any]] = []
        self._signal_eps = float(np.finfo(np.float32).eps)  # of the reward dtype; set per micro batch
        super().__init__(*args, **kwargs)
        if self.signal_tau is None:
            return
        if self.args.ld_alpha is not None:
            raise _capture_failed("ld_alpha (LD-DPO) weights the log-probs' tail, which the capture does not "
                                  "reproduce; leave ld_alpha unset")
        if is_peft_model(self.model) and self.ref_model is None and not self.args.precompute_ref_log_probs:
            raise _capture_failed("a PEFT policy without a reference model runs the policy twice per batch")

    # ------------------------------------------------------------------ tokenisation (private TRL method)

    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        """PRIVATE TRL METHOD (DPOTrainer._prepare_dataset, TRL 1.16), pinned by tests/test_trainer.py.

        Returns the dataset with prompt_ids / chosen_ids / rejected_ids, as TRL's does. TRL's own method runs
        unless prompt_style is "handbook"; with the authors' truncation it runs with the length limit lifted
        (so that it drops nothing) and the ids are cut afterwards."""
        authors = self.max_prompt_length is not None
        if self.prompt_style == "handbook":
            with global_then_local_main_first():  # map() writes cache files next to the data, as TRL's does
                tokenized = tokenize_handbook(dataset, processing_class, dataset_name)
                if not authors and args.max_length is not None:  # TRL 1.16's rule: drop what the collator empties
                    tokenized = tokenized.filter(lambda ex: len(ex["prompt_ids"]) < args.max_length,
                                                 desc=f"Dropping fully truncated examples from {dataset_name} dataset")
        else:
            tokenized = super()._prepare_dataset(dataset, processing_class, LengthLimitLifted(args) if authors
                                                 else args, dataset_name)
        if not authors:
            return tokenized
        with global_then_local_main_first():
            tokenized, counts = truncate_dataset(tokenized, args.max_length, self.max_prompt_length)
        if dataset_name == "train":
            self.truncation_counts = counts
        return tokenized

    # ------------------------------------------------------------------ §5 capture (public override points)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if self.signal_tau is None:
            return super().compute_loss(model, inputs, return_outputs=return_outputs,
                                        num_items_in_batch=num_items_in_batch)
        mode = "train" if self.model.training else "eval"
        policy: list[Any] = []
        reference: list[Any] = []

        def keeper(into: list[Any]):
            def hook(module, args, output):
                log_probs = getattr(output, "log_probs", None)
                if log_probs is not None:  # the fused forward; a plain one (logits) is not TRL's loss
                    into.append(log_probs.detach())
            return hook

        live = not self.args.precompute_ref_log_probs
        handles = [self.model.register_forward_hook(keeper(policy))]
        if live and self.ref_model is not None:
            handles.append(self.ref_model.register_forward_hook(keeper(reference)))
        try:
            result = super().compute_loss(model, inputs, return_outputs=return_outputs,
                                          num_items_in_batch=num_items_in_batch)
        finally:
            for handle in handles:
                handle.remove()
        self._signal_record(mode, inputs, policy, reference if live else None)
        return result

    def _signal_record(self, mode: str, inputs: dict[str, Any], policy: list[Any],
                       reference: list[Any] | None) -> None:
        if len(policy) != 1:
            raise _capture_failed(f"expected one fused policy forward (per-token log_probs) per batch, saw "
                                  f"{len(policy)}")
        if "completion_mask" not in inputs:
            raise _capture_failed(f"TRL's batch has no completion_mask (keys: {sorted(inputs)})")
        chosen, rejected = _sequence_logps(policy[0], inputs["completion_mask"])
        if reference is None:
            if "ref_chosen_logps" not in inputs:
                raise _capture_failed("precomputed reference log-probs are not in the batch (ref_chosen_logps)")
            ref_chosen, ref_rejected = inputs["ref_chosen_logps"], inputs["ref_rejected_logps"]
        elif len(reference) == 1:
            ref_chosen, ref_rejected = _sequence_logps(reference[0], inputs["completion_mask"])
        else:
            raise _capture_failed(f"expected one fused reference forward per batch, saw {len(reference)}")
        beta = self.args.beta
        rewards = torch.stack([beta * (chosen - ref_chosen), beta * (rejected - ref_rejected)], dim=1)
        if rewards.is_floating_point():
            self._signal_eps = float(torch.finfo(rewards.dtype).eps)
        gathered = self.accelerator.gather(rewards).float().cpu().numpy().astype(np.float64)
        pair = (gathered[:, 0].copy(), gathered[:, 1].copy())
        self._signal_window[mode].append(pair)
        self._signal_all[mode].append(pair)

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        mode = "train" if self.model.training else "eval"
        window, self._signal_window[mode] = self._signal_window[mode], []
        if window:
            chosen = np.concatenate([c for c, _ in window])
            rejected = np.concatenate([r for _, r in window])
            stats = signal_stats(chosen - rejected, self.signal_tau)
            prefix = "signal/" if mode == "train" else "eval_signal/"
            logs.update({f"{prefix}{k}": v for k, v in stats.items() if k != "tau" and v is not None})
            if mode == "train":
                self._signal_steps.append({"step": self.state.global_step, "epoch": self.state.epoch,
                                           "rewards_chosen_mean": float(chosen.mean()),
                                           "rewards_rejected_mean": float(rejected.mean()), **stats})
        super().log(logs, start_time)
        if window:
            self._signal_check(mode, window)

    def _signal_check(self, mode: str, window: list[tuple[np.ndarray, np.ndarray]]) -> None:
        """The captured window against what TRL just logged (state.log_history[-1]): TRL logs, per key, the
        mean over the window's micro batches of each gathered batch's mean."""
        logged = self.state.log_history[-1] if self.state.log_history else {}
        prefix = "" if mode == "train" else "eval_"
        ours = {"rewards/chosen": [c.mean() for c, _ in window],
                "rewards/rejected": [r.mean() for _, r in window],
                "rewards/margins": [(c - r).mean() for c, r in window]}
        for key, means in ours.items():
            theirs = logged.get(prefix + key)
            if not isinstance(theirs, (int, float)):
                raise _capture_failed(f"TRL logged no {prefix + key} to check the captured rewards against")
            mine = float(np.mean(means))
            scale = max(1.0, float(np.mean([np.abs(c).mean() + np.abs(r).mean() for c, r in window])))
            # Rounding only: TRL averages in the reward dtype, this in float64.
            if not np.isclose(mine, theirs, rtol=4 * self._signal_eps, atol=4 * self._signal_eps * scale,
                              equal_nan=True):
                raise _capture_failed(f"the captured {key} mean {mine!r} differs from TRL's logged {theirs!r} at "
                                      f"step {self.state.global_step}")

    def signal_pairs(self, mode: str = "train") -> tuple[np.ndarray, np.ndarray]:
        """(chosen rewards, rejected rewards) of every pair seen in this mode, in training order."""
        parts = self._signal_all[mode]
        if not parts:
            return np.zeros(0), np.zeros(0)
        return np.concatenate([c for c, _ in parts]), np.concatenate([r for _, r in parts])

    def signal_summary(self, include_steps: bool = True) -> dict[str, Any]:
        """For iter_k/metrics.json["train"]["signal"]: whole-stage statistics ("stage") and, unless
        include_steps=False, those of every logging step ("steps"; the same numbers are also in
        state.log_history as signal/<key>). {"available": False} with the capture switched off."""
        if self.signal_tau is None:
            return {"available": False}
        chosen, rejected = self.signal_pairs("train")
        return {
            "available": True,  # a capture that fails raises SignalCaptureError
            "tau": self.signal_tau,
            "beta": float(self.args.beta),
            "world_size": int(self.accelerator.num_processes),
            "gathered_across_ranks": True,
            "stage": {**signal_stats(chosen - rejected, self.signal_tau),
                      "rewards_chosen_mean": float(chosen.mean()) if chosen.size else None,
                      "rewards_rejected_mean": float(rejected.mean()) if rejected.size else None},
            **({"steps": list(self._signal_steps)} if include_steps else {}),
        }
