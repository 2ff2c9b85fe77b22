"""Gradient-signal diagnostics: signal_stats, and SignalDPOTrainer on a fixed tiny batch.

The trainer tests train the tiny Qwen2 policy against a reference with different random weights
(so the margins s are spread, not all 0 as at policy = reference) on 8 fixed pairs, and check the
captured per-pair rewards against TRL's own logged means and against an independent forward pass.
"""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch

from drift_exp.config import TinyModelConfig, TrainerConfig
from drift_exp.models import build_tiny
from drift_exp.training.diagnostics import QUANTILES, flat_signal, sigmoid_neg, signal_stats

from .conftest import ROOT
from .helpers import DPO_PAIRS as PAIRS

BETA = 0.1
# Captured vs TRL's logged means: the same float32 tensors averaged in float64 vs float32; measured
# differences <= 1e-8 (CPU fp32), so 1e-6 relative is tight and a changed reward definition fails it.
TIGHT = {"rel": 1e-6, "abs": 1e-7}


# ---------------------------------------------------------------- signal_stats


def test_signal_stats_known_values():
    s = np.array([-2.0, -1.0, 0.0, 0.0, 1.0, 3.0])
    st = signal_stats(s, tau=0.5)
    g = 1.0 / (1.0 + np.exp(s))
    assert st["n"] == 6 and st["tau"] == 0.5
    assert st["margin_mean"] == pytest.approx(s.mean(), abs=1e-12)
    assert st["margin_var"] == pytest.approx(s.var(), abs=1e-12)
    assert st["sigma_mean"] == pytest.approx(g.mean(), abs=1e-12)
    assert st["frac_sigma_ge_tau"] == pytest.approx(4 / 6)  # s <= 0  <=>  σ(−s) >= 0.5
    assert st["frac_margin_positive"] == pytest.approx(2 / 6)
    assert st["sigma_q50"] == pytest.approx(0.5)
    for q in QUANTILES:
        assert st[f"margin_q{q}"] == pytest.approx(np.percentile(s, q), abs=1e-12)
        assert st[f"sigma_q{q}"] == pytest.approx(np.percentile(g, q), abs=1e-12)
    # σ(−s) >= τ  <=>  s <= log(1/τ − 1): τ = 0.25 keeps s <= log 3 = 1.0986...
    assert signal_stats(s, tau=0.25)["frac_sigma_ge_tau"] == pytest.approx(5 / 6)


def test_signal_stats_edge_cases():
    empty = signal_stats(np.array([]), tau=0.3)
    assert empty["n"] == 0 and empty["sigma_mean"] is None and empty["frac_sigma_ge_tau"] is None
    big = sigmoid_neg(np.array([1000.0, -1000.0]))  # no overflow
    assert big[0] == 0.0 and big[1] == 1.0
    with pytest.raises(ValueError, match="tau"):
        signal_stats(np.zeros(3), tau=0.0)
    flat = flat_signal({"stage": signal_stats(np.zeros(4), 0.5)})
    assert flat["signal/sigma_mean"] == 0.5 and flat["signal/n"] == 4


# ---------------------------------------------------------------- the trainer


@pytest.fixture(scope="module")
def tiny_models(model_cache):
    policy = build_tiny(TinyModelConfig(), root=model_cache)
    reference = build_tiny(TinyModelConfig(init_seed=7), root=model_cache)
    return str(policy), str(reference)


def make_trainer(tiny_models, tmp_path, cls, *, micro=8, accum=1, steps=1, precompute=False,
                 loss=("sigmoid",), weights=(1.0,), **extra):
    from datasets import Dataset
    from trl import DPOConfig

    from drift_exp.models import load_policy, load_tokenizer

    policy, reference = tiny_models
    args = DPOConfig(
        output_dir=str(tmp_path / "trainer"), report_to="none", seed=0, data_seed=0, max_steps=steps,
        per_device_train_batch_size=micro, gradient_accumulation_steps=accum, learning_rate=1e-3,
        lr_scheduler_type="constant", optim="adamw_torch", beta=BETA, max_length=256, logging_steps=1,
        save_strategy="no", use_cpu=True, bf16=False, disable_tqdm=True, precompute_ref_log_probs=precompute,
        loss_type=list(loss), loss_weights=list(weights), gradient_checkpointing=False, **extra,
    )
    tok = load_tokenizer(policy, padding_side="right")
    data = Dataset.from_list([{"prompt": [{"role": "user", "content": p}],
                               "chosen": [{"role": "assistant", "content": c}],
                               "rejected": [{"role": "assistant", "content": r}]} for p, c, r in PAIRS])
    torch.manual_seed(0)
    kwargs = {"signal_tau": 0.5} if cls.__name__ == "SignalDPOTrainer" else {}
    return cls(model=load_policy(policy, torch.float32), ref_model=load_policy(reference, torch.float32), args=args,
               train_dataset=data, processing_class=tok, **kwargs)


def independent_margins(tiny_models, trainer) -> np.ndarray:
    """s = β·(log-ratio chosen − log-ratio rejected) per pair, from a plain forward pass of each
    model on each (unpadded) prompt + completion, at the weights before training."""
    from drift_exp.models import load_policy

    policy, reference = (load_policy(p, torch.float32).eval() for p in tiny_models)

    def logp(model, prompt_ids, completion_ids):
        ids = torch.tensor([prompt_ids + completion_ids])
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0, :-1].float()
        lp = torch.log_softmax(logits, -1).gather(1, ids[0, 1:, None])[:, 0]
        return float(lp[len(prompt_ids) - 1:].sum())

    out = []
    for ex in trainer.train_dataset:
        p, c, r = ex["prompt_ids"], ex["chosen_ids"], ex["rejected_ids"]
        chosen = logp(policy, p, c) - logp(reference, p, c)
        rejected = logp(policy, p, r) - logp(reference, p, r)
        out.append(BETA * (chosen - rejected))
    return np.array(out)


def numpy_stats(s: np.ndarray, tau: float) -> dict[str, float]:
    g = 1.0 / (1.0 + np.exp(s))
    return {"sigma_mean": g.mean(), "frac_sigma_ge_tau": np.mean(g >= tau), "margin_mean": s.mean(),
            **{f"sigma_q{q}": np.percentile(g, q) for q in QUANTILES}}


def test_one_step_matches_trl_logs_and_independent_margins(tiny_models, tmp_path):
    from drift_exp.training.trainer import DriftDPOTrainer as SignalDPOTrainer

    trainer = make_trainer(tiny_models, tmp_path, SignalDPOTrainer)
    trainer.train()
    logged = [h for h in trainer.state.log_history if "rewards/chosen" in h]
    assert len(logged) == 1
    chosen, rejected = trainer.signal_pairs()
    assert chosen.shape == rejected.shape == (8,)
    # TRL's rewards/chosen, rewards/rejected, margins and accuracies are means of these very pairs.
    assert chosen.mean() == pytest.approx(logged[0]["rewards/chosen"], **TIGHT)
    assert rejected.mean() == pytest.approx(logged[0]["rewards/rejected"], **TIGHT)
    assert (chosen - rejected).mean() == pytest.approx(logged[0]["rewards/margins"], **TIGHT)
    assert np.mean(chosen > rejected) == pytest.approx(logged[0]["rewards/accuracies"], abs=1e-6)
    s = chosen - rejected
    assert s.std() > 1e-3  # a spread of margins, not the degenerate policy = reference case
    # The same margins as a forward pass of our own (the order is the sampler's: compare as sets).
    np.testing.assert_allclose(np.sort(s), np.sort(independent_margins(tiny_models, trainer)), atol=2e-5)
    # The statistics: numpy on s, at the logging step and for the whole stage.
    summary = trainer.signal_summary()
    assert summary["available"] and summary["tau"] == 0.5 and summary["beta"] == BETA
    assert summary["world_size"] == 1 and len(summary["steps"]) == 1
    expected = numpy_stats(s, 0.5)
    for part in (summary["stage"], summary["steps"][0]):
        assert part["n"] == 8
        for key, value in expected.items():
            assert part[key] == pytest.approx(value, abs=1e-9), key
    assert summary["steps"][0]["step"] == 1
    for key, value in expected.items():  # the same numbers went into the logs (W&B: train/signal/...)
        assert logged[0][f"signal/{key}"] == pytest.approx(value, abs=1e-9)
    # The loss of the step is DPO's sigmoid loss on these margins: the capture is of the trained pairs.
    assert logged[0]["loss"] == pytest.approx(float(np.mean(np.logaddexp(0.0, -s))), abs=1e-4)


def test_gradient_accumulation_and_precomputed_reference(tiny_models, tmp_path):
    """micro batch 2 x accumulation 2, two optimizer steps, RPO loss (the project's default) and
    precomputed reference log-probs: every pair of every micro batch, one window per logging step."""
    from drift_exp.training.trainer import DriftDPOTrainer as SignalDPOTrainer

    trainer = make_trainer(tiny_models, tmp_path, SignalDPOTrainer, micro=2, accum=2, steps=2, precompute=True,
                           loss=("sigmoid", "sft"), weights=(1.0, 0.001))
    trainer.train()
    logged = [h for h in trainer.state.log_history if "rewards/chosen" in h]
    summary = trainer.signal_summary()
    assert [st["step"] for st in summary["steps"]] == [1, 2]
    assert [st["n"] for st in summary["steps"]] == [4, 4] and summary["stage"]["n"] == 8
    for st, log in zip(summary["steps"], logged, strict=True):  # equal micro batches: mean of means = mean
        assert st["rewards_chosen_mean"] == pytest.approx(log["rewards/chosen"], **TIGHT)
        assert st["rewards_rejected_mean"] == pytest.approx(log["rewards/rejected"], **TIGHT)
        assert st["margin_mean"] == pytest.approx(log["rewards/margins"], **TIGHT)
        assert log["signal/n"] == 4
    chosen, rejected = trainer.signal_pairs()
    s = chosen - rejected
    for key, value in numpy_stats(s, 0.5).items():
        assert summary["stage"][key] == pytest.approx(value, abs=1e-9), key
    # The first step's four pairs are scored before any update: they match the independent margins.
    first = np.sort(s[:4])
    independent = independent_margins(tiny_models, trainer)
    assert all(np.min(np.abs(independent - v)) < 2e-5 for v in first)


def test_capture_disagreeing_with_trl_fails_the_stage(tiny_models, tmp_path):
    """The runtime check: when the captured rewards stop matching TRL's logged means (here: the config's beta
    changed after TRL read it, as a TRL that scaled its rewards differently would look), training raises."""
    from drift_exp.training.diagnostics import SignalCaptureError
    from drift_exp.training.trainer import DriftDPOTrainer as SignalDPOTrainer

    trainer = make_trainer(tiny_models, tmp_path, SignalDPOTrainer, micro=4)
    trainer.args.beta = 2 * BETA  # TRL keeps its own copy (trainer.beta) from construction
    with pytest.raises(SignalCaptureError, match=r"captured rewards/chosen mean .* differs from TRL's logged"):
        trainer.train()


def test_unsupported_setting_is_refused_before_training(tiny_models, tmp_path):
    """LD-DPO's ld_alpha changes how TRL sums log-probs: refused at construction, not discovered after a run."""
    from drift_exp.training.diagnostics import SignalCaptureError
    from drift_exp.training.trainer import DriftDPOTrainer as SignalDPOTrainer

    with pytest.raises(SignalCaptureError, match="ld_alpha"):
        make_trainer(tiny_models, tmp_path, SignalDPOTrainer, ld_alpha=0.5)


def test_training_is_unchanged(tiny_models, tmp_path):
    """Same seed, same data: the subclass trains to exactly the weights and loss of TRL's DPOTrainer."""
    from trl import DPOTrainer

    from drift_exp.training.trainer import DriftDPOTrainer as SignalDPOTrainer

    runs = []
    for cls in (DPOTrainer, SignalDPOTrainer):
        trainer = make_trainer(tiny_models, tmp_path / cls.__name__, cls, micro=4, accum=2, steps=1)
        trainer.train()
        log = next(h for h in trainer.state.log_history if "loss" in h)
        runs.append((log, {n: p.detach().clone() for n, p in trainer.model.named_parameters()}))
    (plain_log, plain_w), (signal_log, signal_w) = runs
    for key in ("loss", "rewards/chosen", "rewards/rejected", "rewards/margins", "grad_norm"):
        assert signal_log[key] == plain_log[key], key
    assert all(torch.equal(plain_w[n], signal_w[n]) for n in plain_w)
    assert not any(k.startswith("signal/") for k in plain_log)
    assert math.isfinite(signal_log["signal/sigma_mean"])


# ---------------------------------------------------------------- several processes (DeepSpeed ZeRO-3)

MULTI_SCRIPT = r'''
import json, os, sys
from pathlib import Path

import trl

from drift_exp.config import TrainerConfig
from drift_exp.records import PreferencePair
from drift_exp.training.dpo import train_dpo
from drift_exp.training.trainer import DriftDPOTrainer as SignalDPOTrainer

PAIRS, policy, reference, out, ds_config = json.loads(sys.argv[1])
trainers = []
cls = SignalDPOTrainer
init = cls.__init__


def recording_init(self, *args, **kwargs):
    kwargs.setdefault("signal_tau", 0.4)
    init(self, *args, **kwargs)
    trainers.append(self)


cls.__init__ = recording_init  # the class itself: found however dpo.py refers to it
trl.DPOTrainer = cls  # train_dpo imports DPOTrainer from trl when called: the project's real stage
pairs = [PreferencePair(id=str(i), prompt=[{"role": "user", "content": p}], chosen=c, rejected=r)
         for i, (p, c, r) in enumerate(PAIRS)]
cfg = TrainerConfig(global_batch_size=4, micro_batch_size=2, max_length=256, learning_rate=1e-3, rpo_alpha=0.0,
                    warmup_ratio=0.0, ref_mode="live", gradient_checkpointing=False)
train_dpo(policy, reference, pairs, Path(out) / "checkpoint", cfg, epochs=1, seed=0, report_to="none",
          run_name="signal", stage="signal", deepspeed_config=ds_config)
t = trainers[0]
chosen, rejected = t.signal_pairs()
rank = int(os.environ["RANK"])
Path(out, f"rank{rank}.json").write_text(json.dumps({
    "summary": t.signal_summary(), "chosen": chosen.tolist(), "rejected": rejected.tolist(),
    "logged": [h for h in t.state.log_history if "rewards/chosen" in h]}))
'''


@pytest.mark.e2e
def test_two_processes_zero3_gather_every_rank(tiny_models, tmp_path):
    """train_dpo under `accelerate launch` with 2 processes and DeepSpeed ZeRO-3 (gloo, CPU): every
    rank holds the pairs of both ranks, so the statistics are global and the same on each rank."""
    from drift_exp.training.deepspeed import write_zero3_config

    ds = tmp_path / "ds.json"
    write_zero3_config(ds, TrainerConfig(global_batch_size=4, micro_batch_size=2), 2, bf16=False)
    with socket.socket() as sock:  # a free port for the rendezvous
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    script = tmp_path / "multi.py"
    script.write_text(MULTI_SCRIPT)
    arg = json.dumps([PAIRS, *tiny_models, str(tmp_path), str(ds)])
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "2", "--num_machines", "1",
           "--main_process_port", str(port), "--mixed_precision", "no", "--dynamo_backend", "no", "--use_deepspeed",
           "--deepspeed_config_file", str(ds), str(script), arg]
    env = {k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["summary"] == ranks[1]["summary"] and ranks[0]["chosen"] == ranks[1]["chosen"]
    summary, logged = ranks[0]["summary"], ranks[0]["logged"]
    assert summary["world_size"] == 2 and summary["available"]
    # global batch 4 = 2 ranks x micro 2: two steps of 4 pairs, all 8 pairs in the stage
    assert [st["n"] for st in summary["steps"]] == [4, 4] and summary["stage"]["n"] == 8
    for st, log in zip(summary["steps"], logged, strict=True):
        assert st["rewards_chosen_mean"] == pytest.approx(log["rewards/chosen"], **TIGHT)
        assert st["rewards_rejected_mean"] == pytest.approx(log["rewards/rejected"], **TIGHT)
    s = np.array(ranks[0]["chosen"]) - np.array(ranks[0]["rejected"])
    for key, value in numpy_stats(s, summary["tau"]).items():
        assert summary["stage"][key] == pytest.approx(value, abs=1e-9), key



# ---------------------------------------------------------------- the console


def test_console_shows_one_concise_line_per_log(tiny_models, tmp_path, capfd, monkeypatch):
    """A real stage (train_dpo, W&B offline): the console gets the progress bar and one line per logging step
    (loss, margin, accuracy, lr); the signal/* keys go to W&B and the stage's history only."""
    import wandb

    from drift_exp.records import PreferencePair
    from drift_exp.training.dpo import train_dpo

    monkeypatch.setenv("WANDB_MODE", "offline")
    pairs = [PreferencePair(id=str(i), prompt=[{"role": "user", "content": p}], chosen=c, rejected=r)
             for i, (p, c, r) in enumerate(PAIRS[:4])]
    cfg = TrainerConfig(micro_batch_size=2, max_length=256, learning_rate=1e-4, warmup_ratio=0.0, ref_mode="live",
                        gradient_checkpointing=False, rpo_alpha=0.0)  # plain DPO: the first loss is ln 2
    run = wandb.init(project="console", dir=str(tmp_path), mode="offline")
    try:
        stats = train_dpo(tiny_models[0], None, pairs, tmp_path / "out" / "checkpoint", cfg, epochs=1, seed=0,
                          report_to="wandb", run_name="console", stage="console")
        summary = dict(run.summary)
    finally:
        run.finish()
    out = capfd.readouterr()
    console = (out.out + out.err).replace("\r", "\n")
    lines = [line for line in console.splitlines() if line.startswith("step ")]
    assert len(lines) == 2, console[-3000:]
    assert lines[0].startswith("step 1/2 epoch 0.50 | loss 0.6931 | margin 0.0000 | acc 0.00 | lr 1.00e-04")
    assert "trained 2 steps in" in console and "2/2 [" in console  # the closing line and the progress bar
    assert "signal/" not in console and "rewards/chosen" not in console and "grad_norm" not in console
    # Everything else still reaches the stage's history (metrics.json) and W&B.
    assert all("signal/sigma_mean" in h and "rewards/chosen" in h for h in stats["history"])
    assert "train/signal/sigma_mean" in summary and "train/rewards/margins" in summary
