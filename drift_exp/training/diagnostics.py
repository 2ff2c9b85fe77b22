"""Gradient-signal diagnostics for DPO training stages (paper §5, Lemma 1 and Proposition 1).

For a pair, the implicit reward margin is s = β·(log π/π_ref(y+) − log π/π_ref(y−)) (Eq. 3) and the
per-pair gradient is −β·σ(−s)·d_θ (Eq. 4): σ(−s) is the weight each pair gets in the update.
Lemma 1 keeps the expected gradient away from zero while P(σ(−s) ≥ τ) stays positive;
Proposition 1 bounds the signal by Var(s) at a SPIN fixed point. ``signal_stats`` summarises s and
σ(−s) over a set of pairs; training/trainer.py's ``DriftDPOTrainer`` collects s for every pair a DPO stage
trains on (its ``signal_tau`` option; the class was called SignalDPOTrainer before).

How the per-pair values are captured (TRL 1.16's public surface; the capture overrides no private method, see
training/trainer.py for the one the tokenisation options touch):
``DriftDPOTrainer.compute_loss`` (the Trainer's documented override point) runs TRL's unchanged, with
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


def flat_signal(summary: dict[str, Any], prefix: str = "signal") -> dict[str, float]:
    """The whole-stage statistics as flat scalars for a W&B summary (e.g. tracker.log("stage/train", ...))."""
    return {f"{prefix}/{k}": v for k, v in summary.get("stage", {}).items()
            if isinstance(v, (int, float)) and not (isinstance(v, float) and math.isnan(v))}
