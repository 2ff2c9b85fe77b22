"""Golden losses: the first 5 losses of a fixed tiny DPO stage, so a library upgrade that changes them is caught.

The run: the tiny random Qwen2 policy (build_tiny's defaults, init seed 0) trained by the project's stage
(training/dpo.py's train_dpo: TRL's DPOTrainer with the §5 capture) on 10 fixed pairs, plain sigmoid DPO
(rpo_alpha 0), reference = the policy itself (live), 2 pairs per step, RMSprop lr 1e-4 with the linear
schedule and no warmup, beta 0.1, seed 0, CPU float32, one log per step.

GOLDEN_LOSSES are measured output of that run on 2026-11-30 (torch 2.13.0+cpu, transformers 5.19.0,
trl 1.16.0; x86-64, 2 cores): four runs, two with the default threads, one with torch.set_num_threads(1)
and one with 2, gave bit-identical losses. The tolerance (1e-4 relative) is not for run-to-run noise, of
which there was none, but for another CPU's float summation order compounded over five updates; any change
of the loss, the optimizer, the scheduler, the tokenization or the batch order moves them by far more
(measured: an RPO weight of 0.001 moves the first loss by 5.5e-3; lr 1e-3 instead of 1e-4 moves loss 2 from
0.623 to 0.380). Fast tier: about 2.5 s once torch/transformers/TRL are imported.
"""

from __future__ import annotations

import math

import pytest

from drift_exp.config import TinyModelConfig, TrainerConfig
from drift_exp.models import build_tiny
from drift_exp.records import PreferencePair

from .helpers import DPO_PAIRS

# test_diagnostics' eight pairs, then two more (the order is part of the golden run).
PAIRS = [*DPO_PAIRS,
         ("Pick a colour.", "Blue.", "I cannot."),
         ("Count to three.", "One, two, three.", "Three.")]

GOLDEN_LOSSES = [0.6931471824645996, 0.6228299736976624, 1.3376412391662598, 0.5082462430000305, 0.7157529592514038]
GOLDEN_MARGINS = [0.0, 0.1475299894809723, -0.8550753593444824, 0.42681506276130676, -0.04448089748620987]


def test_first_five_losses_are_golden(model_cache, tmp_path):
    from drift_exp.training.dpo import train_dpo

    policy = str(build_tiny(TinyModelConfig(), root=model_cache))
    pairs = [PreferencePair(id=str(i), prompt=[{"role": "user", "content": p}], chosen=c, rejected=r)
             for i, (p, c, r) in enumerate(PAIRS)]
    cfg = TrainerConfig(micro_batch_size=2, max_length=256, learning_rate=1e-4, rpo_alpha=0.0, warmup_ratio=0.0,
                        lr_scheduler_type="linear", optim="rmsprop", beta=0.1, ref_mode="live",
                        gradient_checkpointing=False, bf16=False, logging_steps=1)
    stats = train_dpo(policy, None, pairs, tmp_path / "out" / "checkpoint", cfg, epochs=1, seed=0, report_to="none",
                      run_name="golden", stage="golden")
    history = stats["history"]
    assert len(history) == 5
    # The anchor: at step 0 the policy is its own reference, so every margin is 0 and the loss is ln 2.
    assert history[0]["loss"] == pytest.approx(math.log(2), abs=1e-6)
    assert [h["loss"] for h in history] == pytest.approx(GOLDEN_LOSSES, rel=1e-4)
    assert [h["rewards/margins"] for h in history] == pytest.approx(GOLDEN_MARGINS, rel=1e-4, abs=1e-6)
