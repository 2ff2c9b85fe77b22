"""trainer.extra: further DPOConfig fields, passed through to the stage's DPOConfig and checked by DPOConfig.

A module of the config layer (config.validate calls check_extra; training/dpo.py passes trainer.extra on), so
that validation checks the fields without importing torch or the trainer (TRL only when trainer.extra is set).
"""

from __future__ import annotations

import dataclasses
import difflib
import tempfile
from collections.abc import Mapping
from typing import Any

from drift_exp.errors import ConfigError

# DPOConfig fields the project sets from its own settings: trainer.extra may not set them (the field to use).
PROJECT_SET = {
    "output_dir": "(the stage's folder; not a setting)", "run_name": "(the experiment name; not a setting)",
    "report_to": "tracking.mode", "seed": "seed", "data_seed": "seed",
    "num_train_epochs": "trainer.epochs / trainer.warm_start_epochs",
    "per_device_train_batch_size": "trainer.micro_batch_size / trainer.global_batch_size",
    "gradient_accumulation_steps": "trainer.global_batch_size", "learning_rate": "trainer.learning_rate",
    "lr_scheduler_type": "trainer.lr_scheduler_type", "warmup_steps": "trainer.warmup_ratio",
    "warmup_ratio": "trainer.warmup_ratio", "optim": "trainer.optim", "beta": "trainer.beta",
    "max_length": "trainer.max_length", "max_grad_norm": "trainer.max_grad_norm", "bf16": "trainer.bf16",
    "gradient_checkpointing": "trainer.gradient_checkpointing", "logging_steps": "trainer.logging_steps",
    "save_strategy": "(checkpoints are saved once, at the end of the stage)", "disable_tqdm": "(the console)",
    "precompute_ref_log_probs": "trainer.ref_mode", "ddp_timeout": "trainer.ddp_timeout",
    "loss_type": "trainer.rpo_alpha", "loss_weights": "trainer.rpo_alpha",
    "deepspeed": "launcher.deepspeed", "accelerator_config": "launcher.deepspeed", "use_cpu": "(the hardware)",
    "max_prompt_length": "trainer.max_prompt_length", "truncation_mode": "trainer.truncation",
}



def check_extra(extra: Any) -> None:
    """trainer.extra: further DPOConfig fields, checked by DPOConfig itself (imports TRL: only when set).

    ConfigError naming trainer.extra.<field> for a key the project sets from its own field (the field to use),
    a field DPOConfig does not have, a value of another type than the field's default, or a value DPOConfig
    refuses."""
    if not extra:
        return
    if not isinstance(extra, Mapping):
        raise ConfigError(f"trainer.extra must be a mapping of DPOConfig fields to values, got {extra!r}")
    from trl import DPOConfig

    fields = {f.name: f for f in dataclasses.fields(DPOConfig)}
    for key, value in extra.items():
        name = f"trainer.extra.{key}"
        if key in PROJECT_SET:
            raise ConfigError(f"{name}: the project sets DPOConfig.{key} itself; use {PROJECT_SET[key]}")
        if key not in fields:
            near = difflib.get_close_matches(str(key), list(fields), n=3)
            raise ConfigError(f"{name}: DPOConfig has no field {key!r}"
                              + (f" (did you mean {', '.join(near)}?)" if near else ""))
        default = fields[key].default
        if isinstance(default, (bool, int, float, str)) and value is not None:
            kind = type(default)
            ok = isinstance(value, kind) and (kind is bool or not isinstance(value, bool))
            if kind is float and isinstance(value, int) and not isinstance(value, bool):
                ok = True
            if not ok:
                raise ConfigError(f"{name} must be a {kind.__name__} like DPOConfig's default {default!r}, "
                                  f"got {value!r}")
        try:
            DPOConfig(output_dir=tempfile.gettempdir(), report_to="none", use_cpu=True, **{key: value})
        except (TypeError, ValueError) as err:
            raise ConfigError(f"{name}={value!r}: DPOConfig refuses it: {err}") from None
