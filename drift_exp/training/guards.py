"""Stop a training stage whose loss or weights stop being finite numbers.

An infinite learning rate (or an overflow) turns every weight into NaN after one optimizer step;
the losses logged afterwards can look harmless (TRL then logs 0.0), and without a check the stage
would save the NaN checkpoint and be marked DONE. The guard raises instead, so the stage is left
unfinished and the rerun starts it again once the setting is fixed.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from transformers import TrainerCallback

from drift_exp.errors import UserError


class NonFiniteTraining(UserError):
    """The loss or the weights became NaN or infinite."""


def first_non_finite(model: torch.nn.Module) -> str | None:
    """The name of the first parameter holding a NaN or inf (under ZeRO-3: in this rank's shard)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            data = getattr(p, "ds_tensor", p)  # DeepSpeed ZeRO-3 keeps the rank's shard in ds_tensor
            if data.numel() and not torch.isfinite(data).all():
                return name
    return None


class NonFiniteGuard(TrainerCallback):
    """Checks every logged loss, and the weights at each log and at the end of training."""

    def __init__(self, stage: str):
        self.stage = stage

    def _fail(self, what: str, step: int) -> None:
        raise NonFiniteTraining(
            f"{self.stage}: {what} at optimizer step {step}; the stage is not marked done. Check "
            "trainer.learning_rate, trainer.beta, trainer.rpo_alpha and trainer.max_grad_norm, then rerun.")

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, float] | None = None,
               model: torch.nn.Module | None = None, **kw: Any) -> None:
        for key in ("loss", "train_loss", "grad_norm"):
            value = (logs or {}).get(key)
            if isinstance(value, (int, float)) and not math.isfinite(value):
                self._fail(f"the {key} is {value}", state.global_step)
        if model is not None:
            self._check_weights(model, state.global_step)

    def on_train_end(self, args: Any, state: Any, control: Any, model: torch.nn.Module | None = None,
                     **kw: Any) -> None:
        if model is not None:
            self._check_weights(model, state.global_step)

    def _check_weights(self, model: torch.nn.Module, step: int) -> None:
        name = first_non_finite(model)
        if name is not None:
            self._fail(f"the weight {name} is no longer finite (NaN or inf)", step)
