"""Data-parallel generation: the layout rules, and completions byte-identical for 1 or 2 replicas (HF, CPU).

The 2-replica run is real: two child processes (`python -m drift_exp.generation.replicas`), each loading
the tiny model and generating its share of the batches.
"""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path

import pytest

from drift_exp.config import GenerationConfig, TinyModelConfig
from drift_exp.generation.layout import Layout, choose_layout, engine_memory_gib, tp_rule
from drift_exp.generation.replicas import generate_replicated
from drift_exp.model_shapes import SHIPPED, shape_from_config, tiny_shape
from drift_exp.models import build_tiny
from drift_exp.records import GenRequest

QWEN7B, QWEN14B, GEMMA = (SHIPPED[k] for k in ("Qwen/Qwen2.5-7B-Instruct", "Qwen/Qwen2.5-14B-Instruct",
                                                "google/gemma-3-12b-it"))
VLLM = GenerationConfig(backend="vllm")


def test_tensor_parallel_rules_follow_the_heads():
    assert tp_rule(QWEN7B, 8) is not None and tp_rule(QWEN7B, 4) is None  # 28 heads: 4 divides, 8 does not
    assert tp_rule(QWEN14B, 8) is None  # 40 heads, 8 KV heads
    assert tp_rule(GEMMA, 8) is None and tp_rule(GEMMA, 3) is not None


def test_smallest_legal_tensor_parallel_and_replicas_fill_the_node():
    for shape in (QWEN7B, QWEN14B, GEMMA):
        layout = choose_layout(VLLM, shape, 8, 80)
        assert (layout.tensor_parallel, layout.replicas, layout.problems) == (1, 8, [])
        assert layout.device_groups() == [[g] for g in range(8)]
    # 24 GB cards: 14B weights (27.5 GiB) need two GPUs per engine, so 4 replicas of TP 2
    layout = choose_layout(VLLM, QWEN14B, 8, 24)
    assert (layout.tensor_parallel, layout.replicas, layout.problems) == (2, 4, [])
    assert layout.device_groups()[1] == [2, 3]
    assert engine_memory_gib(QWEN14B, 2, 2560) <= 0.9 * 24 < engine_memory_gib(QWEN14B, 1, 2560)


def test_explicit_settings_win_and_are_checked():
    ok = choose_layout(replace(VLLM, tensor_parallel_size=4), QWEN7B, 8, 80)
    assert (ok.tensor_parallel, ok.replicas, ok.problems) == (4, 2, [])
    bad = choose_layout(replace(VLLM, tensor_parallel_size=8), QWEN7B, 8, 80)
    assert [k for k, _ in bad.problems] == ["generation.tensor_parallel_size"]
    assert "28 attention heads" in bad.problems[0][1]
    assert choose_layout(replace(VLLM, replicas=3), QWEN7B, 8, 80).problems[0][0] == "generation.replicas"
    assert choose_layout(replace(VLLM, tensor_parallel_size=2), QWEN14B, 8, 80).replicas == 4
    hf = choose_layout(GenerationConfig(tensor_parallel_size=2), QWEN7B, 8, 80)
    assert hf.problems[0][0] == "generation.tensor_parallel_size"
    assert choose_layout(GenerationConfig(), tiny_shape(TinyModelConfig()), 0, None).replicas == 1  # CPU default


def test_shape_from_a_config_json_matches_the_shipped_numbers():
    # The public config.json values of Qwen2.5-7B-Instruct and Gemma-3-12b-it (text_config) reproduce the
    # shipped shapes, parameters within 2 % (norms and biases are not counted).
    qwen = shape_from_config({"hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28,
                              "num_attention_heads": 28, "num_key_value_heads": 4, "vocab_size": 152064,
                              "tie_word_embeddings": False}, "t")
    gemma = shape_from_config({"model_type": "gemma3", "text_config": {"hidden_size": 3840, "intermediate_size": 15360,
                                               "num_hidden_layers": 48, "num_attention_heads": 16,
                                               "num_key_value_heads": 8, "head_dim": 256, "vocab_size": 262208}},
                              "t")
    for got, want in ((qwen, QWEN7B), (gemma, GEMMA)):
        assert (got.heads, got.kv_heads, got.head_dim, got.layers, got.vocab) == (
            want.heads, want.kv_heads, want.head_dim, want.layers, want.vocab)
    assert abs(qwen.params / QWEN7B.params - 1) < 0.02
    assert abs(gemma.params / 11.77e9 - 1) < 0.02  # the language model alone (the vision tower is not in text_config)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return build_tiny(TinyModelConfig(), root=tmp_path_factory.mktemp("tiny"))


def requests() -> list[GenRequest]:
    reqs = []
    for i in range(7):  # 7 requests, batch size 2: 4 batches, so replica 0 gets 2 and replica 1 gets 2
        words = " ".join(["word"] * (3 + 5 * i))
        reqs.append(GenRequest(f"r{i}", "chosen", [{"role": "user", "content": f"Question {i}: {words}?"}], n=2))
    return reqs


@pytest.mark.e2e
def test_two_hf_replicas_equal_one_byte_for_byte(tiny, tmp_path):
    cfg = GenerationConfig(max_new_tokens=24, batch_size=2, temperature=0.9, top_p=0.95)
    one, s1 = generate_replicated(cfg, "float32", str(tiny), requests(), 1234, Layout("hf", 0, 1, 1), tmp_path / "a")
    two, s2 = generate_replicated(cfg, "float32", str(tiny), requests(), 1234, Layout("hf", 0, 1, 2), tmp_path / "b")
    assert json.dumps([asdict(c) for c in one]) == json.dumps([asdict(c) for c in two])
    assert len({o for c in one for o in c.outputs}) > 5  # real, varied samples, not one repeated string
    assert (s1["replicas"], s2["replicas"]) == (1, 2)
    assert [r["requests"] for r in s2["per_replica"]] == [4, 3]  # batches {0, 2} and {1, 3}
    assert s1["output_tokens"] == s2["output_tokens"] == sum(r["output_tokens"] for r in s2["per_replica"]) > 0
    assert s2["tokens_per_s"] > 0 and s2["replica1_tokens_per_s"] > 0
    assert (tmp_path / "b" / "replica_1.log").exists()  # ran as child processes
    other, _ = generate_replicated(cfg, "float32", str(tiny), requests(), 99, Layout("hf", 0, 1, 1), tmp_path / "c")
    assert [c.outputs for c in other] != [c.outputs for c in one]  # the seed matters


def test_node_layout_on_this_cpu_machine():
    from drift_exp.errors import ConfigError
    from drift_exp.generation.replicas import node_layout

    assert node_layout(GenerationConfig(), "tiny").describe() == "1x TP1"  # no GPU: one replica
    assert node_layout(GenerationConfig(replicas=2), "tiny").replicas == 2  # CPU processes on request
    with pytest.raises(ConfigError, match="generation.tensor_parallel_size"):
        node_layout(GenerationConfig(tensor_parallel_size=2), "tiny")
