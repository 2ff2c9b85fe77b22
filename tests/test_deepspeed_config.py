"""The generated ZeRO-3 config is concrete, keeps the global batch at any world size, and really validates.

Validation uses DeepSpeed's own ``DeepSpeedConfig``. It takes the data-parallel world size from ``mpu`` (the
documented model-parallel-unit hook Megatron uses) once ``deepspeed.comm`` has a process group; without one it
assumes a world size of 1. So world size 1 is validated with no group at all, and larger world sizes inside a
single-process gloo group with an ``mpu`` that reports the data-parallel world size: the same
``train_batch_size == micro x accumulation x world`` assertion DeepSpeed runs at launch on a real cluster.
"""

from __future__ import annotations

import json
import socket
from types import SimpleNamespace

import pytest

deepspeed = pytest.importorskip("deepspeed")  # the 'gpu' extra; installed in the dev venv

from deepspeed.runtime.config import DeepSpeedConfig  # noqa: E402
from pydantic import ValidationError  # noqa: E402

from drift_exp.config import TrainerConfig  # noqa: E402
from drift_exp.errors import ConfigError  # noqa: E402
from drift_exp.training.deepspeed import write_zero3_config, zero3_config  # noqa: E402
from drift_exp.training.dpo import batch_stats, derive_batch  # noqa: E402


class DataParallelUnit:
    """The part of DeepSpeed's mpu interface DeepSpeedConfig reads: the data-parallel world size."""

    def __init__(self, world_size: int):
        self.world_size = world_size

    def get_data_parallel_world_size(self) -> int:
        return self.world_size

    def get_model_parallel_world_size(self) -> int:
        return 1


@pytest.fixture(scope="module")
def process_group():
    """A single-process gloo group, so DeepSpeedConfig consults the mpu; torn down after this module."""
    import deepspeed.comm as ds_dist
    import torch.distributed as dist

    if dist.is_initialized():  # someone else's group: do not touch it
        yield
        return
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    ds_dist.init_distributed(dist_backend="gloo", auto_mpi_discovery=False, verbose=False)
    try:
        yield
    finally:
        ds_dist.destroy_process_group()
        if dist.is_initialized():
            dist.destroy_process_group()


def validate(config: dict, world_size: int) -> DeepSpeedConfig:
    if world_size == 1:
        return DeepSpeedConfig(json.loads(json.dumps(config)))
    return DeepSpeedConfig(json.loads(json.dumps(config)), mpu=DataParallelUnit(world_size))


def values(node):
    if isinstance(node, dict):
        for v in node.values():
            yield from values(v)
    else:
        yield node


def test_world_size_one_without_a_process_group():
    cfg = TrainerConfig()  # the authors' batch: 4 per device, no accumulation
    ds = validate(zero3_config(cfg, 1, bf16=True), 1)
    assert (ds.train_batch_size, ds.train_micro_batch_size_per_gpu, ds.gradient_accumulation_steps) == (4, 4, 1)
    assert ds.zero_optimization_stage == 3
    assert ds.zero_config.gather_16bit_weights_on_model_save
    assert ds.bfloat16_config.enabled and ds.gradient_clipping == 1.0


@pytest.mark.parametrize(("global_batch", "micro", "world_sizes"), [
    (4, 4, [1, 2, 4]),  # the paper's 4: at most 4 ranks (8 GPUs cannot share 4 rows; see the ConfigError test)
    (16, 4, [1, 8, 16]),
    (64, 4, [1, 8, 16]),
    (64, 2, [1, 8, 16]),
])
def test_same_global_batch_at_every_world_size(process_group, global_batch, micro, world_sizes):
    cfg = TrainerConfig(global_batch_size=global_batch, micro_batch_size=micro, max_grad_norm=0.5)
    for world in world_sizes:
        config = zero3_config(cfg, world, bf16=True)
        assert "auto" not in list(values(config))  # raw DeepSpeed cannot resolve "auto"
        ds = validate(config, world)
        assert ds.world_size == world
        m, a = ds.train_micro_batch_size_per_gpu, ds.gradient_accumulation_steps
        assert ds.train_batch_size == global_batch == m * a * world
        assert (m, a) == derive_batch(global_batch, micro, world)
        assert m <= micro


def test_config_written_for_one_world_size_fails_at_another(process_group):
    # What DeepSpeed asserts at launch if the json and the real world size disagree.
    config = zero3_config(TrainerConfig(global_batch_size=64, micro_batch_size=4), 8, bf16=True)
    with pytest.raises(AssertionError, match="train_batch_size is not equal"):
        validate(config, 16)


@pytest.mark.parametrize("world", [1, 2, 8, 16])
def test_authors_batch_is_four_per_device(process_group, world):
    # global_batch_size null (default): per_device_train_batch_size 4, gradient_accumulation_steps 1, as the
    # authors' YAMLs; the effective batch grows with the world size (32 on 8 GPUs).
    ds = validate(zero3_config(TrainerConfig(), world, bf16=True), world)
    assert (ds.train_micro_batch_size_per_gpu, ds.gradient_accumulation_steps, ds.train_batch_size) == (4, 1, 4 * world)
    stats = batch_stats(TrainerConfig(), world)
    assert (stats["per_device_batch_size"], stats["gradient_accumulation_steps"], stats["effective_batch_size"]) == (
        4, 1, 4 * world)
    pinned = batch_stats(TrainerConfig(global_batch_size=64), world)
    assert pinned["effective_batch_size"] == 64 and pinned["batch_semantics"] == "pinned global"


@pytest.mark.parametrize("world", [3, 8, 16])
def test_indivisible_global_batch_is_a_config_error(world):
    with pytest.raises(ConfigError, match=r"trainer\.global_batch_size=4"):
        zero3_config(TrainerConfig(global_batch_size=4), world, bf16=True)


def test_unknown_zero_key_is_rejected():
    config = zero3_config(TrainerConfig(), 1, bf16=False)
    config["zero_optimization"]["stage3_prefetch_bucket"] = 1  # a typo of stage3_prefetch_bucket_size
    with pytest.raises(ValidationError, match="extra_forbidden|Extra inputs are not permitted"):
        validate(config, 1)


@pytest.mark.parametrize("offload", ["optimizer", "all"])
def test_cpu_offload_validates(process_group, offload):
    config = zero3_config(TrainerConfig(global_batch_size=32), 8, bf16=True, offload=offload)
    ds = validate(config, 8)
    assert ds.zero_config.offload_optimizer.device == "cpu"
    assert (ds.zero_config.offload_param is not None) == (offload == "all")
    assert config["zero_force_ds_cpu_optimizer"] is False  # the HF-built torch RMSprop runs on the CPU


def test_bad_offload_names_the_key():
    with pytest.raises(ConfigError, match=r"trainer\.offload"):
        zero3_config(TrainerConfig(), 1, bf16=True, offload="nvme")


@pytest.mark.parametrize("bf16", [True, False])
def test_matches_the_training_arguments_dpo_builds(bf16):
    """transformers compares each concrete value with TrainingArguments; a mismatch stops training."""
    from transformers.integrations.deepspeed import HfTrainerDeepSpeedConfig

    cfg = TrainerConfig(global_batch_size=64, micro_batch_size=4, max_grad_norm=1.0)
    world = 16
    micro, accum = derive_batch(cfg.global_batch_size, cfg.micro_batch_size, world)
    args = SimpleNamespace(  # the fields trainer_config_process reads, set as dpo.py sets them
        world_size=world, per_device_train_batch_size=micro, gradient_accumulation_steps=accum,
        max_grad_norm=cfg.max_grad_norm, learning_rate=cfg.learning_rate, adam_beta1=0.9, adam_beta2=0.999,
        adam_epsilon=1e-8, weight_decay=0.0, save_on_each_node=False, fp16=False, fp16_full_eval=False,
        bf16=bf16, bf16_full_eval=False)
    hf = HfTrainerDeepSpeedConfig(zero3_config(cfg, world, bf16=bf16))
    hf.trainer_config_process(args)
    assert hf.mismatches == []
    assert hf.is_zero3()

    args.world_size = 8  # launched on half the GPUs the json was written for
    hf = HfTrainerDeepSpeedConfig(zero3_config(cfg, world, bf16=bf16))
    hf.trainer_config_process(args)
    assert any("train_batch_size" in m for m in hf.mismatches)


def test_write_is_atomic_and_round_trips(process_group, tmp_path):
    cfg = TrainerConfig(global_batch_size=32)
    path = write_zero3_config(tmp_path / "iter_1" / "ds_config.json", cfg, 8, bf16=True, hidden_size=3584)
    assert json.loads(path.read_text()) == zero3_config(cfg, 8, bf16=True, hidden_size=3584)
    assert [p.name for p in path.parent.iterdir()] == ["ds_config.json"]  # no temp file left
    zero = json.loads(path.read_text())["zero_optimization"]
    assert zero["reduce_bucket_size"] == 3584 ** 2 and zero["stage3_param_persistence_threshold"] == 35840
    ds = DeepSpeedConfig(str(path), mpu=DataParallelUnit(8))  # as DeepSpeed reads it at launch: from the file
    assert (ds.train_batch_size, ds.train_micro_batch_size_per_gpu, ds.gradient_accumulation_steps) == (32, 4, 1)


def test_reference_json_in_launchers_is_current():
    """launchers/deepspeed/ keeps one generated example; regenerate it when zero3_config changes."""
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "launchers" / "deepspeed" / "zero3_example_world8_gb32_qwen7b.json"
    cfg = TrainerConfig(global_batch_size=32, micro_batch_size=4)
    assert json.loads(path.read_text()) == zero3_config(cfg, 8, bf16=True, hidden_size=3584), (
        "regenerate: python -m drift_exp.training.deepspeed --world-size 8 --global-batch 32 --micro-batch 4 "
        f"--hidden-size 3584 --out {path}")


def test_memory_estimate_arithmetic():
    from drift_exp.training.deepspeed import QWEN25, estimate_gpu_memory

    e = estimate_gpu_memory(QWEN25["7B"], world_size=8, micro_batch=4)
    assert e["states"] == round(12 * 7.62e9 / 8 / 2**30, 1)  # RMSprop: 12 B/param
    assert e["ref"] == round(2 * 7.62e9 / 8 / 2**30, 1)
    adam = estimate_gpu_memory(QWEN25["7B"], world_size=8, micro_batch=4, optimizer="adamw", ref_live=False)
    assert adam["states"] == round(16 * 7.62e9 / 8 / 2**30, 1) and adam["ref"] == 0
    peaks = [estimate_gpu_memory(QWEN25["14B"], 8, b)["peak"] for b in (1, 2, 3, 4)]
    assert peaks == sorted(peaks) and peaks[-1] < 80  # 14B fits one node of 80 GB H100s
