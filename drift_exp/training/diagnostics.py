"""Gradient-signal diagnostics for DPO training stages (paper §5, Lemma 1 and Proposition 1).

For a pair, the implicit reward margin is s = β·(log π/π_ref(y+) − log π/π_ref(y−)) (Eq. 3) and the
per-pair gradient is −β·σ(−s)·d_θ (Eq. 4): σ(−s) is the weight each pair gets in the update.
Lemma 1 keeps the expected gradient away from zero while P(σ(−s) ≥ τ) stays positive;
Proposition 1 bounds the signal by Var(s) at a SPIN fixed point. ``signal_stats`` summarises s and
σ(−s) over a set of pairs; ``SignalDPOTrainer`` collects s for every pair a DPO stage trains on.

How the per-pair values are captured (TRL 1.16, least intrusion): TRL's ``DPOTrainer._compute_loss``
computes ``chosen_rewards = β·chosen_logratios`` and ``rejected_rewards = β·rejected_logratios``
per pair and passes them to ``self.accelerator.gather`` (its first two ``gather`` calls) only to
log their means as rewards/chosen and rewards/rejected. ``SignalDPOTrainer._compute_loss`` runs
TRL's method unchanged, with ``accelerator.gather`` wrapped for the duration of the call so those
gathered tensors are kept (calls made inside ``gather_for_metrics``, which TRL uses for its other
metrics and which calls ``gather`` itself, are not counted). The loss, the gradients and TRL's
logged metrics are untouched. Each call is checked: the fourth direct gather must be
rewards/margins = chosen − rejected (else the capture is switched off with a warning, e.g. under
another TRL version).

Gradient accumulation: ``_compute_loss`` runs once per micro batch, so every pair of every micro
batch is captured; a logging window is everything since the previous log (TRL's own metrics
average over the same window, per micro batch, so their means agree whenever micro batches have
equal size). Several processes (DDP / DeepSpeed ZeRO-3): ``accelerator.gather`` returns the pairs
of all ranks on every rank, so every rank holds the same, global statistics (read them on rank 0).
Like TRL's own metrics, a last batch padded by the sampler to even out the ranks is counted as is.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

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


def _make_trainer_class():
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
            self._signal_on = True
            # Per mode: pairs since the last log (window) and of the whole stage.
            self._signal_window: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {"train": [], "eval": []}
            self._signal_all: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {"train": [], "eval": []}
            self._signal_steps: list[dict[str, Any]] = []
            super().__init__(*args, **kwargs)

        def _compute_loss(self, model, inputs, return_outputs):
            if not self._signal_on:
                return super()._compute_loss(model, inputs, return_outputs)
            mode = "train" if self.model.training else "eval"
            acc = self.accelerator
            originals = {name: getattr(acc, name) for name in ("gather", "gather_for_metrics")}
            shadowed = {name for name in originals if name in vars(acc)}
            seen: list[Any] = []
            depth = [0]  # inside gather_for_metrics, which calls gather itself: not a direct call

            def gather(tensor):
                out = originals["gather"](tensor)
                if depth[0] == 0 and len(seen) < 4:
                    seen.append(out.detach().float().cpu().numpy().copy() if hasattr(out, "detach") else None)
                return out

            def gather_for_metrics(*args, **kwargs):
                depth[0] += 1
                try:
                    return originals["gather_for_metrics"](*args, **kwargs)
                finally:
                    depth[0] -= 1

            acc.gather, acc.gather_for_metrics = gather, gather_for_metrics
            try:
                result = super()._compute_loss(model, inputs, return_outputs)
            finally:
                for name, fn in originals.items():
                    if name in shadowed:
                        setattr(acc, name, fn)
                    else:
                        delattr(acc, name)
            self._signal_record(mode, seen)
            return result

        def _signal_record(self, mode: str, seen: list[Any]) -> None:
            ok = len(seen) == 4 and all(isinstance(a, np.ndarray) for a in seen)
            if ok:
                chosen, rejected, _, margins = (a.reshape(-1).astype(np.float64) for a in seen)
                # Loose: only to recognise the tensors (bf16 arithmetic rounds margins differently).
                ok = chosen.shape == rejected.shape == margins.shape and np.allclose(
                    margins, chosen - rejected, rtol=1e-2, atol=1e-3)
            if not ok:
                log.warning("signal diagnostics: could not identify the per-pair rewards in DPOTrainer._compute_loss "
                            "(TRL version or loss type?); margin statistics are switched off for this stage")
                self._signal_on = False
                return
            self._signal_window[mode].append((chosen, rejected))
            self._signal_all[mode].append((chosen, rejected))

        def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
            mode = "train" if self.model.training else "eval"
            window = self._signal_window[mode]
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
                window.clear()
            super().log(logs, start_time)

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
                "available": self._signal_on,
                "tau": self.signal_tau,
                "beta": float(self.beta),
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
