"""Who a run is: its experiment name (and the ablation variant in it), its W&B identity, and how a multirun
reports failed jobs."""

import json
import os
import subprocess
import sys

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from drift_exp.config import register_configs
from drift_exp.names import experiment_group, experiment_name, parse_experiment_name, variant_of
from drift_exp.tracking import identity
from drift_exp.training.logsink import TrainLogTail

from .conftest import CONF, ROOT

register_configs()


def compose_hydra(overrides: list[str]):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=overrides, return_hydra_config=True)


def run_dir_name(overrides: list[str]) -> str:
    return OmegaConf.select(compose_hydra(overrides), "hydra.run.dir").removeprefix("outputs/")


@pytest.mark.parametrize("overrides,name", [
    ([], "sample-tiny-drift-controlled-s42"),
    (["trainer.beta=0.1"], "sample-tiny-drift-controlled-s42"),  # the default value names no variant
    (["trainer.beta=0.2"], "sample-tiny-drift-controlled-s42+trainer.beta_0.2"),
    (["trainer.learning_rate=1e-6", "trainer.beta=0.2"],
     "sample-tiny-drift-controlled-s42+trainer.beta_0.2+trainer.learning_rate_1e-06"),
    # neutral settings, the name's fields, run/tracking/launcher/eval, iterations and locations name none
    (["trainer.logging_steps=5", "trainer.ddp_timeout=60", "generation.gpu_memory_utilization=0.5",
      "method=spin", "seed=3", "launcher=local", "launcher.num_processes=2", "eval.limit=4", "iterations=3",
      "tracking.mode=disabled", "run.stop_after=prepare", "model.path=/local/copy", "scorer.path=/local/rm"],
     "sample-tiny-spin-controlled-s3"),
    (["run.variant=beta-sweep", "trainer.beta=0.2"], "sample-tiny-drift-controlled-s42+beta-sweep"),
    (["run.variant=", "trainer.beta=0.2"], "sample-tiny-drift-controlled-s42"),
    # a reference's value may be a secret, and a header is named like a credential: never part of a name
    (["+generation.engine_kwargs.headers.Authorization=${oc.env:HOME}", "trainer.beta=0.2"],
     "sample-tiny-drift-controlled-s42+trainer.beta_0.2"),
    (["trainer.beta=${oc.env:DRIFT_TEST_BETA,0.3}"], "sample-tiny-drift-controlled-s42"),
])
def test_an_ablation_gets_its_own_run_directory(overrides, name):
    assert run_dir_name(overrides) == name


@pytest.mark.parametrize("sweep", ["table3", "table4", "table6", "table7", "figure2"])
def test_the_paper_sweeps_keep_their_directory_names(sweep):
    from drift_exp.sweeps import compose_jobs

    for job, cfg in compose_jobs(sweep):
        subdir = cfg.hydra.sweep.subdir
        assert "+" not in subdir, (job, subdir)
        assert parse_experiment_name(subdir) is not None


def test_a_beta_multirun_names_two_experiments():
    from drift_exp.sweeps import compose_jobs

    jobs = compose_jobs("table6", ["+cell=drift-full", "trainer.beta=0.1,0.2"])
    subdirs = [cfg.hydra.sweep.subdir for _, cfg in jobs]
    assert subdirs == ["wildfeedback-qwen7b-drift-full-s42", "wildfeedback-qwen7b-drift-full-s42+trainer.beta_0.2"]


def test_the_variant_is_recorded_and_read_back_without_the_command_line():
    dcfg = compose_hydra(["trainer.beta=0.2"])
    variant = variant_of(dcfg.hydra.overrides.task, dcfg)
    assert variant == "trainer.beta_0.2"
    task = OmegaConf.create(OmegaConf.to_container(dcfg))
    del task["hydra"]
    task.run.variant = variant  # what __main__ records in config.yaml
    assert experiment_name(task) == "sample-tiny-drift-controlled-s42+trainer.beta_0.2"
    assert experiment_group(task) == "sample-tiny-drift-controlled+trainer.beta_0.2"
    parsed = parse_experiment_name(experiment_name(task))
    assert (parsed.method, parsed.seed, parsed.variant) == ("drift", 42, "trainer.beta_0.2")


def _config(overrides: list[str]):
    from drift_exp.config import Config

    task = compose_hydra(overrides).hydra.overrides.task
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        dcfg = compose(config_name="config", overrides=overrides)
    if dcfg.run.variant is None:  # as __main__ records it
        dcfg.run.variant = variant_of(task, dcfg)
    cfg: Config = OmegaConf.to_object(dcfg)
    return cfg


def test_wandb_identity_defaults(monkeypatch):
    for var in ("WANDB_PROJECT", "WANDB_ENTITY", "WANDB_RUN_GROUP", "WANDB_NAME", "WANDB_TAGS", "WANDB_NOTES"):
        monkeypatch.delenv(var, raising=False)
    ident = identity(_config(["+sweep=table6", "+cell=drift-full", "model=tiny", "data=sample", "seed=7"]))
    assert ident["project"] == "drift_exp" and ident["entity"] is None and ident["notes"] is None
    assert ident["name"] == "sample-tiny-drift-full-s7" and ident["group"] == "sample-tiny-drift-full"
    assert ident["job_type"] == "experiment"
    assert ident["tags"] == ["method:drift", "data:sample", "model:tiny", "setting:full", "seed:7", "sweep:table6"]


def test_wandb_variables_count_where_the_setting_is_unset(monkeypatch):
    monkeypatch.setenv("WANDB_PROJECT", "envproj")
    monkeypatch.setenv("WANDB_ENTITY", "envteam")
    monkeypatch.setenv("WANDB_RUN_GROUP", "envgroup")
    monkeypatch.setenv("WANDB_TAGS", "a, b")
    monkeypatch.setenv("WANDB_NOTES", "from env")
    ident = identity(_config([]))
    assert (ident["project"], ident["entity"], ident["group"], ident["notes"]) == (
        "envproj", "envteam", "envgroup", "from env")
    assert ident["tags"][-2:] == ["a", "b"] and "sweep:multirun" not in ident["tags"]
    ident = identity(_config(["tracking.project=p", "tracking.group=g", "tracking.name=n", "tracking.tags=[x]",
                              "tracking.notes=hello", "trainer.beta=0.3"]))
    assert (ident["project"], ident["group"], ident["name"], ident["notes"]) == ("p", "g", "n", "hello")
    assert ident["tags"][-1] == "x" and "b" not in ident["tags"]


def test_the_train_log_tail_reads_whole_lines_once(tmp_path):
    path = tmp_path / "train_log.jsonl"
    rows = []
    tail = TrainLogTail(path, rows.append)
    tail()  # no file yet
    path.write_text(json.dumps({"step": 1, "loss": 0.7}) + "\n" + '{"step": 2, "lo')
    tail()
    assert rows == [{"step": 1, "loss": 0.7}]
    with open(path, "a") as f:
        f.write('ss": 0.6}\n')
    tail()
    tail()
    assert rows == [{"step": 1, "loss": 0.7}, {"step": 2, "loss": 0.6}]


@pytest.mark.e2e  # three prepare-only jobs, about a minute on 2 cores
def test_a_multirun_with_a_failed_job_lists_it_and_exits_1(tmp_path):
    sweep = tmp_path / "sweep"
    proc = subprocess.run(
        [sys.executable, "-m", "drift_exp", "-m", f"hydra.sweep.dir={sweep}", "run.stop_after=prepare",
         "tracking.mode=disabled", "trainer.beta=0.1,0.2,-1"],
        cwd=ROOT, capture_output=True, text=True, timeout=600, env=dict(os.environ))
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out[-3000:]
    assert "1 job(s) of the multirun failed" in out
    (listed,) = [line for line in out.splitlines() if line.strip().startswith("#2 ")]
    assert listed.strip().endswith("trainer.beta=-1")
    assert "ConfigError: trainer.beta must be" in out
    for name in ("sample-tiny-drift-controlled-s42", "sample-tiny-drift-controlled-s42+trainer.beta_0.2"):
        assert (sweep / name / "data" / "DONE").exists(), name
    assert OmegaConf.load(sweep / "sample-tiny-drift-controlled-s42+trainer.beta_0.2" / "config.yaml").run.variant == \
        "trainer.beta_0.2"
