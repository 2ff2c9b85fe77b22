"""`python -m drift_exp` end to end on the tiny model and the bundled sample, and kill-and-resume.

Each run is the real CLI in a subprocess: Hydra, HF generation, TRL's DPOTrainer, offline W&B.
Generations are shortened to keep the suite in minutes; everything else is the embedded default
except rpo_alpha=0, so the first DPO step's loss is exactly the sigmoid loss at policy = reference.
"""

import json
import math
import signal
import subprocess
from pathlib import Path

import pytest

from .helpers import drift_exp, mtimes, ok

pytestmark = pytest.mark.e2e

@pytest.fixture(scope="module")
def full_run(tmp_path_factory, model_cache) -> Path:
    run_dir = tmp_path_factory.mktemp("e2e") / "run"
    ok(drift_exp(run_dir))
    return run_dir


def test_every_stage_writes_its_files(full_run):
    assert (full_run / "config.yaml").exists()
    stats = json.loads((full_run / "data" / "stats.json").read_text())
    assert (stats["conversations"], stats["dsat"], stats["seed_pairs"]) == (68, 38, 20)
    assert set(stats) >= {"conversations", "dsat", "sat", "seed_pairs", "dsat_conversations", "sat_conversations",
                          "skipped"}
    assert sum(1 for _ in open(full_run / "data" / "records.jsonl")) == 38 + 37 + 20
    assert sum(1 for _ in open(full_run / "iter_0" / "pairs.jsonl")) == 20
    for k in (0, 1, 2):
        it = full_run / f"iter_{k}"
        assert (it / "checkpoint" / "model.safetensors").exists()
        proxy = json.loads((it / "metrics.json").read_text())["eval"]["proxy"]  # eval=default: the RM proxy
        assert proxy["n"] == 16 and math.isfinite(proxy["reward_mean"])
        assert json.loads((it / "DONE").read_text())["train"]["key"]
        metrics = json.loads((it / "metrics.json").read_text())
        assert metrics["iteration"] == k and metrics["train"]["steps"] > 0
    for k in (1, 2):
        it = full_run / f"iter_{k}"
        assert set(json.loads((it / "DONE").read_text())) == {"requests", "generate", "pairs", "train", "eval"}
        for name in ("requests.jsonl", "completions.jsonl"):
            assert sum(1 for _ in open(it / name)) == 38, name  # one sample per DSAT record
        metrics = json.loads((it / "metrics.json").read_text())
        # an empty sample makes no pair; it is counted, never lost (the tiny model's iteration 2 draws one)
        empty = metrics["pairs"].get("skipped_empty_sample", 0)
        assert empty == metrics["generate"]["empty_samples"] <= 2
        assert sum(1 for _ in open(it / "pairs.jsonl")) == metrics["pairs"]["pairs"] == 38 - empty
        assert metrics["generate"]["samples"] == 38
        # trainer.truncation=authors: long pairs are cut (prompts to their last 256 tokens here), none dropped
        train = metrics["train"]
        # data.holdout=6 (the sample's): the held-out records' pairs are evaluated after training, not trained on
        held = train["heldout_pairs"]
        assert 0 < held == train["heldout"]["pairs"] <= 6
        assert train["examples"] == 38 - empty - held and train["dropped_too_long"] == 0
        assert train["truncation"] == "authors"
        assert train["truncated_prompts"] > 0 and train["max_prompt_length"] == 256
        assert train["steps"] == math.ceil(train["examples"] / 4)
        # the tiny checkpoint's generation_config.json sets no top_k / repetition_penalty: both off
        assert json.loads((it / "generate_stats.json").read_text())["sampling"] == {
            "temperature": 0.7, "top_p": 0.9, "top_k": -1, "repetition_penalty": 1.0, "max_new_tokens": 48}
    # iteration 2 starts from iteration 1's checkpoint, which starts from the warm start's
    assert json.loads((full_run / "iter_2" / "metrics.json").read_text())["policy_start"].endswith(
        "iter_1/checkpoint")


def test_drift_pairs_keep_the_real_dsat_reply(full_run):
    records = {json.loads(line)["id"]: json.loads(line) for line in open(full_run / "data" / "records.jsonl")}
    completions = {json.loads(line)["record_id"]: json.loads(line) for line in open(full_run / "iter_1" /
                                                                                     "completions.jsonl")}
    for line in open(full_run / "iter_1" / "pairs.jsonl"):
        pair = json.loads(line)
        rec = records[pair["meta"]["record_id"]]
        assert rec["meta"]["kind"] == "dsat"
        assert pair["rejected"] == rec["rejected"]  # byte for byte
        assert pair["prompt"] == rec["prompt"]  # the context, without the feedback turn
        assert pair["chosen"] == completions[rec["id"]]["outputs"][0]


def test_first_dpo_step_loss_is_ln2(full_run):
    # policy == reference at step 0 of every stage (ref = the iteration's starting model)
    for k in (0, 1, 2):
        first = json.loads((full_run / f"iter_{k}" / "metrics.json").read_text())["train"]["history"][0]
        assert abs(first["loss"] - math.log(2)) < 1e-4, (k, first["loss"])
        assert first["rewards/margins"] == 0.0


def test_one_offline_wandb_run_per_experiment(full_run):
    # the whole experiment in one W&B run (tests/test_wandb_run.py reads its history)
    (run,) = (full_run / "wandb").glob("offline-run-*")
    assert run.name.endswith("-" + (full_run / "wandb_id").read_text().strip())
    out = subprocess.run(["wandb", "leet", "inspect", "--summary", "--json", str(run)], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-1000:]  # the pinned wandb CLI reads offline runs
    info = json.loads(out.stdout)
    name = "sample-tiny-drift-controlled-s42+generation.max_new_tokens_48+trainer.max_length_512+trainer.rpo_alpha_0.0"
    assert info["name"] == name and info["state"] == "finished"
    assert set(info["tags"]) >= {"method:drift", "data:sample", "model:tiny", "setting:controlled", "seed:42"}
    assert info["config"]["experiment"] == name and info["config"]["run"]["variant"] == name.partition("+")[2]
    assert {"train/rewards/margins", "stage/generation/samples", "eval/proxy/reward_mean",
            "base/eval/proxy/reward_mean"} <= set(info["summary"])


def test_rerun_recomputes_nothing(full_run):
    before = mtimes(full_run)
    ok(drift_exp(full_run))
    assert mtimes(full_run) == before
    assert len(list((full_run / "wandb").glob("offline-run-*"))) == 1  # nothing logged, no run opened


def test_changed_setting_is_refused_with_the_key_named(full_run):
    proc = drift_exp(full_run, "generation.temperature=1.0")
    assert proc.returncode == 2
    assert "generation.temperature: 0.7 -> 1.0" in proc.stderr + proc.stdout
    assert "run.overwrite=true" in proc.stderr + proc.stdout


def test_a_refused_run_writes_nothing(full_run):
    # iter_0's eval would rerun (a leaf), but iter_1/generate is refused: nothing may change, not even
    # config.yaml, .hydra/ or the evaluation markers
    def snapshot() -> dict[str, bytes]:
        return {str(p.relative_to(full_run)): p.read_bytes() for p in full_run.rglob("*")
                if p.is_file() and "wandb" not in p.parts and p.name not in ("__main__.log", ".lock")}

    before = snapshot()
    proc = drift_exp(full_run, "eval.limit=4", "generation.temperature=1.0")
    assert proc.returncode == 2 and "iter_1/generate was finished with a different config" in proc.stderr + proc.stdout
    assert snapshot() == before


def test_neutral_settings_resume_without_redoing_anything(full_run):
    before = mtimes(full_run)
    ok(drift_exp(full_run, "trainer.ddp_timeout=60", "trainer.logging_steps=5", "generation.enforce_eager=true",
                 "generation.gpu_memory_utilization=0.5", "scorer.batch_size=2"))
    assert mtimes(full_run) == before


def test_kill_and_resume_equals_uninterrupted(full_run, tmp_path):
    run_dir = tmp_path / "run"
    # 1. killed right after iteration 1's generation stage
    proc = drift_exp(run_dir, kill_at="iter_1/generate")
    assert proc.returncode == -signal.SIGKILL
    done = json.loads((run_dir / "iter_1" / "DONE").read_text())
    assert set(done) == {"requests", "generate"}
    first = mtimes(run_dir, markers=False)
    # 2. resumed, then killed during iteration 2's DPO training (after optimizer step 2)
    proc = drift_exp(run_dir, kill_at="iter_2/train@2")
    assert proc.returncode == -signal.SIGKILL
    assert set(json.loads((run_dir / "iter_2" / "DONE").read_text())) == {"requests", "generate", "pairs"}
    assert not (run_dir / "iter_2" / "checkpoint").exists()
    second = mtimes(run_dir, markers=False)
    assert {k: second[k] for k in first} == first  # nothing finished in run 1 was redone
    # 3. resumed to the end
    ok(drift_exp(run_dir))
    third = mtimes(run_dir, markers=False)
    # the killed stage's scratch (trainer dir, on-disk pairs and held-out datasets, partial checkpoint) and its
    # training log (iter_2/train_log.jsonl, which the rerun writes anew) are redone
    kept = [k for k in second if not k.startswith(("iter_2/.trainer", "iter_2/.pairs", "iter_2/.heldout",
                                                    "iter_2/checkpoint.tmp", "iter_2/train_log.jsonl"))]
    assert {k: third[k] for k in kept} == {k: second[k] for k in kept}
    for k in (1, 2):
        assert (run_dir / f"iter_{k}" / "pairs.jsonl").read_text() == (full_run / f"iter_{k}" /
                                                                       "pairs.jsonl").read_text()
    resumed = json.loads((run_dir / "iter_2" / "metrics.json").read_text())["train"]["history"]
    uninterrupted = json.loads((full_run / "iter_2" / "metrics.json").read_text())["train"]["history"]
    assert [h["loss"] for h in resumed] == pytest.approx([h["loss"] for h in uninterrupted], abs=1e-6)


def test_reference_initial_is_the_base_model(tmp_path, model_cache):
    # iteration 1 starts from the warm-started policy; with ref=initial its reference is the base
    # model, so the first step's loss is no longer ln 2 (policy != reference).
    run_dir = tmp_path / "run"
    ok(drift_exp(run_dir, "iterations=1", "trainer.ref=initial", "trainer.warm_start_epochs=1",
                 "trainer.learning_rate=1e-4", "tracking.mode=disabled"))
    metrics = json.loads((run_dir / "iter_1" / "metrics.json").read_text())
    assert metrics["train"]["reference"].startswith(str(model_cache))  # the tiny base model's folder
    assert metrics["policy_start"].endswith("iter_0/checkpoint")
    assert abs(metrics["train"]["history"][0]["loss"] - math.log(2)) > 1e-3
    assert not (run_dir / "wandb").exists()  # tracking.mode=disabled writes nothing


@pytest.mark.parametrize("method,data", [("spin", "sample"), ("iterdpo", "sample"), ("iterdpo_unguided", "sample"),
                                         ("drift", "uf_sample"), ("spin", "uf_sample"), ("iterdpo", "uf_sample")])
def test_baselines_end_to_end(tmp_path, model_cache, method, data):
    run_dir = tmp_path / "run"
    ok(drift_exp(run_dir, f"method={method}", f"data={data}", "iterations=1", "trainer.warm_start_epochs=1",
                 "tracking.mode=disabled"))
    metrics = json.loads((run_dir / "iter_1" / "metrics.json").read_text())
    pairs = [json.loads(line) for line in open(run_dir / "iter_1" / "pairs.jsonl")]
    assert len(pairs) == metrics["pairs"]["pairs"] > 0
    train = metrics["train"]  # data.holdout: the held-out records' pairs are evaluated, not trained on
    assert train["examples"] + train["dropped_too_long"] + train["heldout_pairs"] == len(pairs)
    records = {json.loads(line)["id"]: json.loads(line) for line in open(run_dir / "data" / "records.jsonl")}
    source = {p["id"]: records[p["meta"]["record_id"]] for p in pairs}
    if data == "uf_sample":  # no DSAT->SAT seeds: the warm start is skipped and says so
        assert json.loads((run_dir / "iter_0" / "metrics.json").read_text())["skipped"]
        assert metrics["requests"]["records"] == 40
    if method == "drift":
        assert all(p["rejected"] == source[p["id"]]["rejected"] for p in pairs)
    elif method == "spin":
        assert all(p["chosen"] == source[p["id"]]["chosen"] for p in pairs)
        assert {p["meta"]["chosen_from"] for p in pairs} == {"sat_reply" if data == "sample" else "dataset_chosen"}
    elif method == "iterdpo" and data == "sample":
        assert metrics["requests"]["requests"] == 2 * metrics["requests"]["records"]
    else:  # ranked by the reward model
        assert all(p["meta"]["score_chosen"] > p["meta"]["score_rejected"] for p in pairs)


def test_spin_accumulates_earlier_pairs_when_asked(tmp_path, model_cache):
    run_dir = tmp_path / "run"
    ok(drift_exp(run_dir, "method=spin", "method.accumulate=true", "trainer.warm_start_epochs=0",
                 "trainer.max_length=4096", "tracking.mode=disabled"))
    n1 = sum(1 for _ in open(run_dir / "iter_1" / "pairs.jsonl"))
    n2 = sum(1 for _ in open(run_dir / "iter_2" / "pairs.jsonl"))
    metrics = [json.loads((run_dir / f"iter_{k}" / "metrics.json").read_text())["train"] for k in (1, 2)]
    assert metrics[0]["examples"] + metrics[0]["dropped_too_long"] + metrics[0]["heldout_pairs"] == n1
    assert metrics[1]["examples"] + metrics[1]["dropped_too_long"] + metrics[1]["heldout_pairs"] == n1 + n2
