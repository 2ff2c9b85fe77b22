"""High-reward coverage (paper §4.3): the topography math on hand-made cases with known answers, the
embedding pooling, and `python -m drift_exp.analysis.coverage` end to end on two tiny runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from drift_exp.analysis.topography import (
    average_shares,
    coverage_share,
    covered_cells,
    high_region,
    kde_covariance,
    kde_surface,
    make_grid,
    normalize_surface,
    reward_weights,
    topography,
)

from .conftest import ROOT

# ---------------------------------------------------------------- the math, exactly


def test_high_region_and_share_on_a_hand_made_surface():
    # 20 cells with values 0..19: Quantile(0.8) = 0.8 * 19 = 15.2 (linear interpolation) -> H = {16..19}
    z_all = np.arange(20, dtype=float).reshape(4, 5) / 19.0
    high, z_high = high_region(z_all, 0.8)
    assert z_high == pytest.approx(15.2 / 19.0)
    assert high.sum() == 4 and set(np.flatnonzero(high)) == {16, 17, 18, 19}
    d = np.zeros((4, 5))
    d.flat[[16, 17, 18]] = [1.0, z_high, z_high - 1e-9]  # >= z_high counts, just below does not
    d.flat[[0, 5]] = 1.0  # outside H: never counted
    assert set(np.flatnonzero(covered_cells(d, high, z_high))) == {16, 17}
    assert coverage_share(d, high, z_high) == 0.5
    assert coverage_share(d, np.zeros_like(high), z_high) == 0.0  # empty H


def test_topography_share_is_exact_on_points_placed_by_hand():
    """A 5 x 4 grid of integer nodes and a kernel so narrow (covariance 1e-4) that a point's density
    is exactly 0 one node away: every surface is then the weights placed on the nodes, so H and the
    covered cells can be counted by hand.

    drift: nodes a (1), b (1), c (0.25);  spin: nodes a (1), d (1), e (0.1)
    Z_all ∝ a 2, b 1, d 1, c 0.25, e 0.1  ->  /max: 1, .5, .5, .125, .05; the other 15 nodes 0.
    Sorted: 15 zeros, .05, .125, .5, .5, 1; Quantile(0.8) at position 15.2 -> z_high = .05 + .2 x .075 = .065
    H = {a, b, d, c} (4 cells; e's .05 < .065).
    D_drift = a 1, b 1, c .25 (its own max is 1) -> covers a, b, c -> 3/4
    D_spin  = a 1, d 1, e .1                     -> covers a, d    -> 2/4 (e is not in H)
    """
    a, b, c, d, e = (0, 0), (4, 3), (2, 1), (1, 3), (3, 0)
    points = np.array([a, b, c, a, d, e], dtype=float)
    rewards = np.array([1, 1, 0.25, 1, 1, 0.1])
    labels = ["drift"] * 3 + ["spin"] * 3
    topo = topography(points, rewards, labels, grid_size=(5, 4), bounds=(0, 4, 0, 3),
                      bandwidth=np.eye(2) * 1e-4, reward_transform="none")
    assert topo.z_high == pytest.approx(0.065, abs=1e-12)
    cells = {(int(x), int(y)) for y, x in zip(*np.nonzero(topo.high), strict=True)}  # (row, col) -> (x, y)
    assert cells == {a, b, d, c}
    assert topo.shares == {"drift": 0.75, "spin": 0.5}
    assert {(int(x), int(y)) for y, x in zip(*np.nonzero(topo.covered["spin"]), strict=True)} == {a, d}
    # An explicit threshold replaces z_high for D_m: at 0.3, drift's c (0.25) drops out.
    assert topography(points, rewards, labels, grid_size=(5, 4), bounds=(0, 4, 0, 3), bandwidth=np.eye(2) * 1e-4,
                      reward_transform="none", method_threshold=0.3).shares == {"drift": 0.5, "spin": 0.5}
    # "shared" scale: D_m is method m's kernel sum / max of all points' kernel sum, so the D_m add up to Z_all:
    # drift a .5, b .5, c .125 -> all >= .065 -> 3/4; spin a .5, d .5 -> 2/4. A method missing gets 0.
    shared = topography(points, rewards, labels, methods=["drift", "spin", "iterdpo"], grid_size=(5, 4),
                        bounds=(0, 4, 0, 3), bandwidth=np.eye(2) * 1e-4, reward_transform="none",
                        method_scale="shared")
    assert shared.shares == {"drift": 0.75, "spin": 0.5, "iterdpo": 0.0}
    np.testing.assert_allclose(shared.surfaces["drift"] + shared.surfaces["spin"], shared.z_all, atol=1e-12)


def test_weights_and_bandwidth_change_the_share_as_expected():
    """Two clusters, the high-reward one held by drift only: spin covers nothing of H."""
    rng = np.random.default_rng(0)
    hi = rng.normal([0, 0], 0.3, size=(30, 2))
    lo = rng.normal([5, 5], 0.3, size=(30, 2))
    points = np.concatenate([hi, lo])
    rewards = np.concatenate([np.full(30, 2.0), np.full(30, -1.0)])  # minmax: 1 and 0
    topo = topography(points, rewards, ["drift"] * 30 + ["spin"] * 30, grid_size=60)
    assert topo.shares["drift"] > 0.9 and topo.shares["spin"] == 0.0
    assert topo.z_all.max() == 1.0 and topo.z_all.min() >= 0.0


def test_kde_matches_scipy_gaussian_kde():
    from scipy.stats import gaussian_kde

    rng = np.random.default_rng(1)
    pts = rng.normal(size=(40, 2)) * [2.0, 0.5]
    w = rng.uniform(0, 1, size=40)
    grid = make_grid(pts, 25)
    kde = gaussian_kde(pts.T, weights=w)
    cov = kde_covariance(pts, w)
    np.testing.assert_allclose(cov, kde.covariance, rtol=1e-12)
    np.testing.assert_allclose(kde_surface(pts, w, grid, cov).ravel(), kde(grid.points.T), rtol=1e-10)
    silverman = gaussian_kde(pts.T, bw_method="silverman", weights=w).covariance
    np.testing.assert_allclose(kde_covariance(pts, w, "silverman"), silverman, rtol=1e-12)


def test_degenerate_point_sets_do_not_fail():
    for pts in (np.zeros((5, 2)), np.array([[0.0, 0.0], [1.0, 1.0], [2.0, 2.0]]), np.array([[1.0, 2.0]])):
        cov = kde_covariance(pts, np.ones(len(pts)))
        assert np.all(np.linalg.eigvalsh(cov) > 0)
        topo = topography(pts, np.arange(len(pts), dtype=float), ["m"] * len(pts), grid_size=10)
        assert 0.0 <= topo.shares["m"] <= 1.0 and np.isfinite(topo.z_all).all()
    # all-zero weights (every reward equal is all ones under minmax; under "none" zeros stay zeros)
    assert not kde_surface(np.ones((3, 2)), np.zeros(3), make_grid(np.ones((3, 2)), 4), np.eye(2)).any()


def test_reward_weights_and_normalization():
    r = np.array([-2.0, 0.0, 2.0, 2.0])
    np.testing.assert_allclose(reward_weights(r, "minmax"), [0, 0.5, 1, 1])
    np.testing.assert_allclose(reward_weights(np.ones(3), "minmax"), [1, 1, 1])
    np.testing.assert_allclose(reward_weights(r, "rank"), [0, 1 / 3, 2.5 / 3, 2.5 / 3])
    np.testing.assert_allclose(reward_weights(np.array([0.0]), "sigmoid"), [0.5])
    with pytest.raises(ValueError):
        reward_weights(r, "none")
    np.testing.assert_allclose(normalize_surface(np.array([1.0, 2.0, 4.0])), [0.25, 0.5, 1.0])
    np.testing.assert_allclose(normalize_surface(np.array([1.0, 2.0, 3.0]), "minmax"), [0, 0.5, 1])
    assert average_shares([{"a": 0.5, "b": 0.0}, {"a": 1.0, "b": 0.5}]) == {"a": 0.75, "b": 0.25}


def test_pooling():
    import torch

    from drift_exp.analysis.embed import pool, project_2d, resolve_pooling

    hidden = torch.arange(2 * 4 * 1, dtype=torch.float32).reshape(2, 4, 1)  # row 0: 0..3, row 1: 4..7
    left = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    right = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]])
    assert pool(hidden, left, "last")[:, 0].tolist() == [3.0, 7.0]
    assert pool(hidden, right, "last")[:, 0].tolist() == [1.0, 7.0]
    assert pool(hidden, right, "mean")[:, 0].tolist() == [0.5, 5.5]
    assert resolve_pooling("Qwen/Qwen3-Embedding-0.6B") == "last"
    assert resolve_pooling("/some/other-model") == "mean"
    xy = project_2d(np.random.default_rng(0).normal(size=(3, 8)), "umap")  # too few for UMAP: PCA
    assert xy.shape == (3, 2)


def test_wandb_mode_flag(monkeypatch):
    from drift_exp.analysis.coverage import parse_args, wandb_mode
    from drift_exp.config import Config, TrackingMode

    cfg = Config()
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert wandb_mode(parse_args(["x", "--no-wandb"]), cfg) is None
    assert wandb_mode(parse_args(["x"]), cfg) == "offline"
    cfg.tracking.mode = TrackingMode.disabled  # the runs' own tracking setting does not switch the analysis off
    monkeypatch.delenv("WANDB_MODE")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", "/nonexistent")
    assert wandb_mode(parse_args(["x"]), cfg) == "offline"


# ---------------------------------------------------------------- end to end on the tiny model

RUN = ["iterations=1", "generation.max_new_tokens=16", "trainer.max_length=256", "trainer.warm_start_epochs=1",
       "tracking.mode=disabled"]


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory, model_cache) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("coverage_runs")
    for method, name in (("drift", "a"), ("spin", "b")):
        cmd = [sys.executable, "-m", "drift_exp", f"method={method}", *RUN, f"hydra.run.dir={root / name}"]
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return root / "a", root / "b"


@pytest.mark.e2e
def test_coverage_cli_end_to_end(two_runs, tmp_path):
    out = tmp_path / "coverage"
    env = dict(os.environ, WANDB_MODE="offline")
    cmd = [sys.executable, "-m", "drift_exp.analysis.coverage", *map(str, two_runs), "--prompts", "2", "--samples",
           "6", "--max-new-tokens", "16", "--grid", "40", "--figures", "2", "--out", str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    result = json.loads((out / "coverage.json").read_text())
    assert [r["label"] for r in result["runs"]] == ["drift", "spin"]
    assert all(r["iteration"] == 1 and r["checkpoint"].endswith("iter_1/checkpoint") for r in result["runs"])
    assert result["n_prompts"] == 2 and len(result["prompts"]) == 2
    assert result["settings"]["embedder"] == "tiny" and result["settings"]["samples"] == 6
    for p in result["prompts"]:
        assert set(p["shares"]) == {"drift", "spin"} and p["responses"] == {"drift": 6, "spin": 6}
        assert all(0.0 <= v <= 1.0 for v in p["shares"].values())
        assert p["high_cells"] >= 0.2 * p["grid_cells"]  # H = the top 20% of cells (ties can add more)
        for m, n in p["covered_cells"].items():
            assert p["shares"][m] == pytest.approx(n / p["high_cells"])
    for m in ("drift", "spin"):
        assert result["average"][m] == pytest.approx(np.mean([p["shares"][m] for p in result["prompts"]]))
    rows = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(rows) == 2 * 2 * 6 and {r["method"] for r in rows} == {"drift", "spin"}
    for name in ("fig3_coverage.png", "fig4_topography_0.png", "fig4_topography_1.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    assert list((out / "wandb").glob("offline-run-*")), "the figures and shares were not logged to W&B (offline)"


# ---------------------------------------------------------------- run directories, prompts, a last-token embedder


def fake_run(root: Path, method: str, iterations: int) -> Path:
    for k in range(iterations + 1):
        (root / f"iter_{k}" / "checkpoint").mkdir(parents=True)
        (root / f"iter_{k}" / "checkpoint" / "config.json").write_text("{}")
        (root / f"iter_{k}" / "metrics.json").write_text(json.dumps({"iteration": k, "method": method}))
    (root / "iter_9").mkdir()  # no checkpoint: ignored
    return root


def test_runs_prompts_and_labels(tmp_path):
    from drift_exp.analysis.coverage import describe_runs, load_prompts

    a = fake_run(tmp_path / "drift-s1", "drift", 2)
    b = fake_run(tmp_path / "drift-s2", "drift", 1)
    c = fake_run(tmp_path / "spin-run", "spin", 1)
    runs = describe_runs([a, b, c])  # two runs of one method: told apart by their folders
    assert [(r.label, r.iteration) for r in runs] == [("drift@drift-s1", 2), ("drift@drift-s2", 1), ("spin", 1)]
    assert runs[0].checkpoint.endswith("iter_2/checkpoint") and runs[2].checkpoint.endswith("iter_1/checkpoint")
    assert [r.label for r in describe_runs([a, c])] == ["drift", "spin"]
    same = [fake_run(tmp_path / x / "run", "drift", 1) for x in ("x", "y")]
    with pytest.raises(SystemExit, match="same method and folder"):
        describe_runs(same)
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("\n".join(json.dumps(x) for x in [
        {"id": "q1", "prompt": "Hello?"},
        {"id": "q2", "prompt": [{"role": "user", "content": "Two turns"}, {"role": "assistant", "content": "ok"},
                                {"role": "user", "content": "more"}]},
        {"id": "q3", "prompt": "Hello?"},  # the same question: kept once
    ]) + "\n")
    got = load_prompts(a, 10, 0, prompts)
    assert [p.id for p in got] == ["q1", "q2"] and got[0].messages == [{"role": "user", "content": "Hello?"}]
    assert got[1].question == "User: Two turns\nAssistant: ok\nUser: more"


def test_last_token_embedder_is_padding_invariant(tmp_path, model_cache):
    """A Qwen3-Embedding-shaped local model (random, tiny; its folder says last-token pooling as the
    real one's 1_Pooling/config.json does): left-padded batches give each text's own embedding."""
    import torch
    from transformers import AutoTokenizer, Qwen3Config, Qwen3Model

    from drift_exp.analysis.embed import Embedder, tiny_embedder_path

    folder = tmp_path / "qwen3-like"
    AutoTokenizer.from_pretrained(tiny_embedder_path()).save_pretrained(folder)
    torch.manual_seed(0)
    Qwen3Model(Qwen3Config(vocab_size=300, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                           num_attention_heads=2, num_key_value_heads=1, head_dim=32)).save_pretrained(folder)
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_lasttoken": True,
                                                                  "pooling_mode_mean_tokens": False}))
    emb = Embedder(str(folder), batch_size=8)
    assert emb.pooling == "last" and emb.tokenizer.padding_side == "left"
    texts = ["a short one", "a much longer response that needs padding on the others", "mid length text"]
    together = emb.embed(texts)
    alone = np.concatenate([emb.embed([t]) for t in texts])
    np.testing.assert_allclose(np.linalg.norm(together, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(together, alone, atol=1e-5)
