"""The stage table (drift_exp.names.STAGES) is the one list of stages: the schedule, the resume keys, the
worker's jobs, run.stop_after and the run directory's layout are read from it."""

import subprocess
import sys

import pytest

from drift_exp import names, worker
from drift_exp.config import Config, result_fields, scorer_path
from drift_exp.data.wildfeedback import EXTRACTOR_VERSION
from drift_exp.methods import build_method
from drift_exp.names import STAGES, StopPoint
from drift_exp.provenance import data_identity
from drift_exp.runner import BODIES, build_schedule, section, stop_point
from drift_exp.stages import RunDir

from .conftest import CONF, ROOT


def default_config() -> Config:
    """The embedded default, composed from conf/ as `python -m drift_exp` composes it."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from drift_exp.config import register_configs

    register_configs()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return OmegaConf.to_object(compose("config"))


def test_every_stage_is_declared_once_and_runs_somewhere():
    assert len({(s.name, s.scope) for s in STAGES}) == len(STAGES)
    for s in STAGES:
        assert s.where in (names.IN_PROCESS, names.CHILD, names.ACCELERATE), s
        # a stage runs in the orchestrator (a body) or is its worker job (the runner launches it), or both
        assert s in BODIES or s.job is not None, s
        assert (s.where == names.IN_PROCESS) == (s.job is None), s
    assert set(BODIES) <= set(STAGES)


def test_what_is_derived_from_the_table():
    assert names.ITERATION_STAGES == ("requests", "generate", "pairs", "train", "eval")
    assert names.WARM_START_STAGES == ("train", "eval")
    assert names.LEAVES == ("eval",)
    assert set(names.WORKER_JOBS) == {"generate", "train", "eval", "base_eval"} == set(worker.JOBS)
    assert names.folder_stages(None) == ("prepare",)
    assert names.job_stage("train").where == names.ACCELERATE and names.job_stage("generate").where == names.CHILD


def test_the_worker_offers_exactly_the_table_jobs():
    out = subprocess.run([sys.executable, "-m", "drift_exp.worker", "--help"], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0
    assert "{" + ",".join(names.WORKER_JOBS) + "}" in out.stdout


def test_resume_keys_are_the_sections_the_markers_always_recorded():
    cfg = default_config()
    stage = {(s.name, s.scope): s for s in STAGES}
    prep = section(stage["prepare", names.ONCE_DATA], cfg, None, scored=False)
    assert prep == {"data": result_fields(cfg.data), "setting": result_fields(cfg.setting), "method": "drift",
                    "seed": 42, "data_file": data_identity(cfg.data.source), "extractor": EXTRACTOR_VERSION}
    assert section(stage["train", names.WARM], cfg, 0, False) == {
        "model": result_fields(cfg.model), "trainer": result_fields(cfg.trainer), "seed": 42}
    assert section(stage["requests", names.LOOP], cfg, 3, False) == {
        "method": result_fields(cfg.method), "setting": result_fields(cfg.setting), "iteration": 3}
    assert section(stage["generate", names.LOOP], cfg, 1, False) == {"generation": result_fields(cfg.generation),
                                                                     "seed": 42}
    scorer = {**result_fields(cfg.scorer), "path": scorer_path(cfg)}
    assert section(stage["pairs", names.LOOP], cfg, 1, False) == {"method": result_fields(cfg.method), "scorer": None}
    assert section(stage["pairs", names.LOOP], cfg, 1, True)["scorer"] == scorer
    assert section(stage["train", names.LOOP], cfg, 1, False) == {"trainer": result_fields(cfg.trainer), "seed": 42}
    assert section(stage["eval", names.EVERY], cfg, 2, False) == {
        "eval": result_fields(cfg.eval), "generation": result_fields(cfg.generation), "scorer": scorer}


def test_the_schedule_is_algorithm_1_in_order(tmp_path):
    cfg = default_config()
    schedule = build_schedule(RunDir(tmp_path, overwrite=False), cfg, build_method(cfg.method))
    assert [s.id for s in schedule] == [
        "data/prepare", "base/eval", "iter_0/train", "iter_0/eval",
        *(f"iter_{k}/{name}" for k in (1, 2) for name in ("requests", "generate", "pairs", "train", "eval"))]
    points = [stop_point(s, schedule) for s in schedule]
    assert points[:4] == [StopPoint("prepare", None), None, None, StopPoint("warm_start", None)]
    assert points[4:] == [StopPoint(name, k) for k in (1, 2) for name in names.ITERATION_STAGES]
    # each stage's fingerprint hangs off the last non-leaf stage before it (never an evaluation)
    by_id = {s.id: s.stage for s in schedule}
    assert not any(s.done for s in schedule)
    assert by_id["iter_1/requests"].key != by_id["iter_2/requests"].key


@pytest.mark.parametrize("benchmarks,base", [([], True), (["proxy"], False)])
def test_no_base_row_without_an_evaluation_of_it(tmp_path, benchmarks, base):
    from dataclasses import replace

    cfg = default_config()
    cfg = replace(cfg, eval=replace(cfg.eval, benchmarks=benchmarks, base_model=base))
    schedule = build_schedule(RunDir(tmp_path, overwrite=False), cfg, build_method(cfg.method))
    assert "base/eval" not in [s.id for s in schedule]
