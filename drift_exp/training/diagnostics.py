"""Gradient-signal diagnostics for DPO training stages (paper §5, Lemma 1 and Proposition 1).

For a pair, the implicit reward margin is s = β·(log π/π_ref(y+) − log π/π_ref(y−)) (Eq. 3) and the
per-pair gradient is −β·σ(−s)·d_θ (Eq. 4): σ(−s) is the weight each pair gets in the update.
Lemma 1 keeps the expected gradient away from zero while P(σ(−s) ≥ τ) stays positive;
Proposition 1 bounds the signal by Var(s) at a SPIN fixed point. ``signal_stats`` summarises s and
σ(−s) over a set of pairs; ``SignalDPOTrainer`` collects s for every pair a DPO stage trains on.

How the per-pair values are captured (TRL 1.16's public surface, no private method overridden):
``SignalDPOTrainer.compute_loss`` (the Trainer's documented override point) runs TRL's unchanged, with
forward hooks (torch's ``register_forward_hook``) on the policy and, with a live reference, on the
reference model for the duration of that call. DPOTrainer patches both models with TRL's public
``add_fused_lm_head``; their forward then returns a ``FusedCausalLMOutput`` whose ``log_probs`` are
per-token log-probabilities, zero where the label is -100 (i.e. outside the completion). The hooks keep
the ``log_probs`` of the very forward TRL's loss is computed from (no extra forward); the sequence
log-probs are their sums over the completion (batch = [chosen; rejected], as TRL builds it), and the
reference's come from that hook or, with precomputed reference log-probs, from the batch's
``ref_chosen_logps`` / ``ref_rejected_logps`` columns. So chosen = β·(log π(y+) − log π_ref(y+)),
rejected likewise, are the same tensors TRL logs as rewards/chosen and rewards/rejected. The loss,
the gradients and TRL's metrics are untouched (the hooks only read).

Checked, never assumed: at every logging step the window means of the captured values must equal
TRL's logged rewards/chosen, rewards/rejected and rewards/margins (within the rounding of the reward
dtype). Anything else — no fused log-probs in the forward, a second policy forward, a setting whose
rewards are not β·log-ratio sums (ld_alpha, PEFT without a reference), or logged means that disagree —
raises ``SignalCaptureError`` and the stage fails (it is not marked done): the §5 statistics are a
paper result written into metrics.json, and a stage that silently lost them would be resumed as
finished. The first check happens on the first micro batch, so a TRL upgrade fails in seconds.

Gradient accumulation: ``compute_loss`` runs once per micro batch, so every pair of every micro
batch is captured; a logging window is everything since the previous log (TRL's own metrics are the
mean of per-micro-batch means over the same window, which is what the check compares). Several
processes (DDP / DeepSpeed ZeRO-3): the per-pair values are gathered with ``accelerator.gather``
(one collective per micro batch), so every rank holds the same, global statistics (read them on
rank 0). Like TRL's own metrics, a last batch padded by the sampler to even out the ranks is counted
as is. The authors' truncation (training/truncation.py) cuts the tokenized pairs before TRL batches
them, so the captured values are those of the truncated pairs, as trained.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from drift_exp.errors import UserError

QUANTILES = (10, 25, 50, 75, 90)


def sigmoid_neg(s: np.ndarray) -> np.ndarray:
    """σ(−s) = 1 / (1 + e^s), computed without overflow."""
    return np.exp(-np.logaddexp(0.0, np.asarray(s, dtype=np.float64)))


def signal_stats(margins: np.ndarray, tau: float = 0.5) -> dict[str, Any]:
    """Distribution of the implicit margins s and of the gradient weights σ(−s) over a set of pairs.

    Keys: n; margin_{mean,std,var,min,max,q10,q25,q50,q75,q90}; sigma_{mean,std,q10,...,q90}
    (σ(−s)); frac_sigma_ge_tau = P(σ(−s) ≥ τ) (Lemma 1's p_0; equivalently s ≤ log(1/τ − 1));
    frac_margin_positive = P(s > 0) (TRL's rewards/accuracies); tau. Quantiles are numpy's linear
    interpolation; std / var are population (ddof 0). With no pairs, every statistic is None.
    """
    if not 0 < tau < 1:
        raise ValueError(f"tau must be in (0, 1), got {tau}")
    s = np.asarray(margins, dtype=np.float64).reshape(-1)
    out: dict[str, Any] = {"n": int(s.size), "tau": float(tau)}
    keys = ["margin_mean", "margin_std", "margin_var", "margin_min", "margin_max"]
    keys += [f"margin_q{q}" for q in QUANTILES] + ["sigma_mean", "sigma_std"]
    keys += [f"sigma_q{q}" for q in QUANTILES] + ["frac_sigma_ge_tau", "frac_margin_positive"]
    if s.size == 0:
        return {**out, **dict.fromkeys(keys)}
    g = sigmoid_neg(s)
    out.update(margin_mean=float(s.mean()), margin_std=float(s.std()), margin_var=float(s.var()),
               margin_min=float(s.min()), margin_max=float(s.max()))
    out.update({f"margin_q{q}": float(v) for q, v in zip(QUANTILES, np.percentile(s, QUANTILES), strict=True)})
    out.update(sigma_mean=float(g.mean()), sigma_std=float(g.std()))
    out.update({f"sigma_q{q}": float(v) for q, v in zip(QUANTILES, np.percentile(g, QUANTILES), strict=True)})
    out.update(frac_sigma_ge_tau=float(np.mean(g >= tau)), frac_margin_positive=float(np.mean(s > 0)))
    return out


class SignalCaptureError(UserError):
    """The per-pair rewards could not be captured, or disagree with TRL's logged rewards."""


def _capture_failed(what: str) -> SignalCaptureError:
    import trl

    return SignalCaptureError(
        f"signal diagnostics (paper §5): {what}. The capture reads the per-token log_probs of TRL's fused LM head "
        f"(tested with TRL 1.16; installed: {trl.__version__}); the stage is not marked done. Install the TRL version "
        "in pyproject.toml, or adapt drift_exp/training/diagnostics.py to this one.")


def _sequence_logps(log_probs: Any, completion_mask: Any) -> tuple[Any, Any]:
    """(chosen, rejected) sequence log-probs from per-token ones, summed as TRL sums them (ld_alpha unset)."""
    seq_len = completion_mask.size(1) - 1  # log-probs of the next token: one position fewer than the ids
    return log_probs[:, -seq_len:].sum(dim=1).chunk(2, dim=0)


def _make_trainer_class():
    import torch
    from accelerate.utils import is_peft_model
    from trl import DPOTrainer

    class SignalDPOTrainer(DPOTrainer):
        """TRL's DPOTrainer that also records, per training pair, β·log-ratio of chosen and rejected.

        Extra keyword argument: signal_tau (τ of Lemma 1, default 0.5). Every logging step adds
        ``signal/<key>`` entries (``signal_stats`` of the pairs since the previous log) to the logs
        (so to W&B as train/signal/... and to state.log_history); ``signal_summary()`` returns the
        per-step and whole-stage statistics after training.
        """

        def __init__(self, *args, signal_tau: float = 0.5, **kwargs):
            if not 0 < signal_tau < 1:
                raise ValueError(f"signal_tau must be in (0, 1), got {signal_tau}")
            self.signal_tau = float(signal_tau)
            # Per mode: per micro batch (chosen, rejected) since the last log (window) and of the whole stage.
            self._signal_window: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {"train": [], "eval": []}
            self._signal_all: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {"train": [], "eval": []}
            self._signal_steps: list[dict[str, Any]] = []
            self._signal_eps = float(np.finfo(np.float32).eps)  # of the reward dtype; set per micro batch
            super().__init__(*args, **kwargs)
            if self.args.ld_alpha is not None:
                raise _capture_failed("ld_alpha (LD-DPO) weights the log-probs' tail, which the capture does not "
                                      "reproduce; leave ld_alpha unset")
            if is_peft_model(self.model) and self.ref_model is None and not self.args.precompute_ref_log_probs:
                raise _capture_failed("a PEFT policy without a reference model runs the policy twice per batch")

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
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
            state.log_history as signal/<key>)."""
            chosen, rejected = self.signal_pairs("train")
            return {
                "available": True,  # a capture that fails raises SignalCaptureError; kept for readers of old runs
                "tau": self.signal_tau,
                "beta": float(self.args.beta),
                "world_size": int(self.accelerator.num_processes),
                "gathered_across_ranks": True,
                "stage": {**signal_stats(chosen - rejected, self.signal_tau),
                          "rewards_chosen_mean": float(chosen.mean()) if chosen.size else None,
                          "rewards_rejected_mean": float(rejected.mean()) if rejected.size else None},
                **({"steps": list(self._signal_steps)} if include_steps else {}),
            }

    return SignalDPOTrainer


_TRAINER_CLASS = None


def __getattr__(name: str):
    """``SignalDPOTrainer`` is built on first access, so importing this module does not import TRL."""
    global _TRAINER_CLASS
    if name == "SignalDPOTrainer":
        if _TRAINER_CLASS is None:
            _TRAINER_CLASS = _make_trainer_class()
        return _TRAINER_CLASS
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def flat_signal(summary: dict[str, Any], prefix: str = "signal") -> dict[str, float]:
    """The whole-stage statistics as flat scalars for a W&B summary (e.g. tracker.log("stage/train", ...))."""
    return {f"{prefix}/{k}": v for k, v in summary.get("stage", {}).items()
            if isinstance(v, (int, float)) and not (isinstance(v, float) and math.isnan(v))}
