"""The Base row's evaluation: its key, the stage in base/, and the cache a sweep's jobs share (one
computation per model + eval config, under a file lock, also across processes)."""

import copy
import json
import multiprocessing
import time
from dataclasses import replace
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from drift_exp.config import Config, register_configs
from drift_exp.evaluation.base import base_stage, cache_key, eval_identity, shared_base_eval

from .conftest import CONF

register_configs()


def load(overrides: list[str] = ()) -> Config:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        # eval.temperature=0: greedy evaluation (model=tiny samples its evaluation, conf/model/tiny.yaml)
        return OmegaConf.to_object(compose(config_name="config", overrides=["model=tiny", "eval.temperature=0",
                                                                            *overrides]))


def changed(cfg: Config, path: str, value) -> Config:
    """A copy of cfg with the field at dotted `path` set to value."""
    cfg = copy.deepcopy(cfg)
    *parents, name = path.split(".")
    obj = cfg
    for step in parents:
        obj = getattr(obj, step)
    setattr(obj, name, value)
    return cfg


def key(cfg: Config) -> str:
    return cache_key(eval_identity(cfg))


def test_the_key_follows_what_changes_the_numbers_only():
    cfg = load()
    same = key(cfg)
    # The jobs of a sweep differ in method, data, setting and trainer: they share the base evaluation.
    assert key(load(["method=spin", "setting=full", "data=uf_sample", "trainer.beta=0.5"])) == same
    # Plumbing: where caches live, judge concurrency and prices, parallelism.
    for path, value in (("eval.cache_dir", "/x"), ("eval.base_cache_dir", "/y"), ("eval.judge.max_concurrency", 2),
                        ("eval.judge.price_in_per_1k", 1.0), ("generation.tensor_parallel_size", 2),
                        ("eval.wildbench.elo.cache_dir", "/z")):
        assert key(changed(cfg, path, value)) == same, path
    # Greedy eval decoding: the seed does not matter; sampled, it does.
    assert key(changed(cfg, "seed", 7)) == same
    sampled = changed(cfg, "eval.temperature", 0.7)
    assert key(changed(sampled, "seed", 7)) != key(sampled)
    for path, value in (("eval.max_new_tokens", 17), ("eval.benchmarks", ["proxy", "wildbench"]),
                        ("model.dtype", "bfloat16"), ("model.tiny.init_seed", 3), ("generation.backend", "vllm"),
                        ("scorer.max_length", 128), ("eval.wildbench.template", "project"),
                        ("eval.judge.model", "other"), ("eval.batch_size", 2)):
        assert key(changed(cfg, path, value)) != same, path


def test_base_stage_is_done_with_its_key_and_reruns_when_the_config_changes(tmp_path):
    st = base_stage(tmp_path, {"a": 1})
    assert not st.done and st.folder == tmp_path / "base"
    st.finish({"n": 1})
    again = base_stage(tmp_path, {"a": 1})
    assert again.done and again.stats == {"n": 1}
    changed = base_stage(tmp_path, {"a": 2})
    assert not changed.done and "eval" not in json.loads((tmp_path / "base" / "DONE").read_text())


def _job(cache: str, out: str, log: str, delay: float) -> None:
    def compute():
        with open(log, "a") as f:
            f.write("computed\n")
        time.sleep(delay)  # the other job arrives meanwhile and must wait on the lock
        Path(out, "proxy").mkdir(parents=True)
        Path(out, "proxy", "rewards.jsonl").write_text('{"reward": 0.5}\n')
        return {"proxy": {"reward_mean": 0.5, "n": 1}, "alpaca_eval": {"model_outputs": f"{out}/x.json"}}

    metrics, shared = shared_base_eval({"id": 1}, Path(cache), Path(out), compute)
    Path(out).parent.joinpath("result.json").write_text(json.dumps({"metrics": metrics, "shared": shared}))


def test_concurrent_jobs_compute_once_and_share_it(tmp_path):
    cache, log = tmp_path / "cache", tmp_path / "computed.log"
    ctx = multiprocessing.get_context("fork")
    jobs = [ctx.Process(target=_job, args=(str(cache), str(tmp_path / f"run{i}" / "base" / "eval"), str(log), 1.0))
            for i in range(3)]
    for p in jobs:
        p.start()
    for p in jobs:
        p.join(60)
        assert p.exitcode == 0
    assert log.read_text() == "computed\n"  # one computation for three jobs
    results = [json.loads((tmp_path / f"run{i}" / "base" / "result.json").read_text()) for i in range(3)]
    assert sorted(r["shared"]["reused"] for r in results) == [False, True, True]
    for i, r in enumerate(results):
        out = tmp_path / f"run{i}" / "base" / "eval"
        assert r["metrics"]["proxy"] == {"reward_mean": 0.5, "n": 1}
        assert r["metrics"]["alpaca_eval"]["model_outputs"] == f"{out}/x.json"  # paths point into each run
        assert (out / "proxy" / "rewards.jsonl").read_text() == '{"reward": 0.5}\n'
    assert not list(cache.glob("*.tmp-*"))


def test_an_evaluation_with_failed_judge_calls_is_not_shared(tmp_path):
    calls = []

    def compute():
        calls.append(1)
        (tmp_path / "out").mkdir(exist_ok=True)
        return {"wildbench": {"n_failed": 2}}

    for _ in range(2):
        metrics, shared = shared_base_eval({"id": 2}, tmp_path / "cache", tmp_path / "out", compute)
        assert not shared["reused"]
    assert len(calls) == 2 and not (tmp_path / "cache" / shared["key"]).exists()


def test_identity_is_stable_across_processes():
    cfg = load()
    assert cache_key(eval_identity(cfg)) == cache_key(eval_identity(replace(cfg)))


def test_base_eval_job_is_one_worker_process_on_local_launchers(tmp_path):
    import sys

    from drift_exp.launch import stage_command

    cmd = stage_command(load(["launcher=local"]), tmp_path, "base_eval", 0, None)
    assert cmd == [sys.executable, "-m", "drift_exp.worker", "base_eval", "--run-dir", str(tmp_path),
                   "--iteration", "0"]
