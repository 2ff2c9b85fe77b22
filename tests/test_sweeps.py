"""Every sweep in drift_exp/conf/sweep/ expands into the jobs of its paper artefact, and every job's config composes
and validates.

The jobs are expanded as Hydra's BasicSweeper expands them (drift_exp.sweeps.sweep_jobs) and each is
composed by Hydra's own loader in MULTIRUN mode; one real `python -m drift_exp -m +sweep=...` runs from
another working directory up to `prepare`.
"""

import copy
import os
import subprocess
import sys

import pytest
from omegaconf import OmegaConf, open_dict, read_write

from drift_exp.config import Config, experiment_name
from drift_exp.plan import validate
from drift_exp.sweeps import compose_jobs, sweep_files, sweep_jobs

from .conftest import ROOT

WF_CELLS_T3 = {("spin", "controlled"), ("iterdpo", "controlled"), ("drift", "controlled"), ("iterdpo", "full"),
               ("drift", "full")}
GUIDED_FULL = {("spin", "controlled"), ("iterdpo", "full"), ("drift", "full")}
# sweep -> (data, models, iterations, (method.name, setting.name) cells)
EXPECTED = {
    "table3": ("wildfeedback", {"qwen7b", "qwen14b"}, 2, WF_CELLS_T3),
    "table4": ("ultrafeedback", {"qwen7b", "qwen14b"}, 2, {("spin", "full"), ("iterdpo", "full"), ("drift", "full")}),
    "table6": ("wildfeedback", {"qwen7b"}, 2, GUIDED_FULL | {("iterdpo-unguided", "full"), ("drift-unguided", "full")}),
    "figure2": ("wildfeedback", {"qwen7b"}, 5, GUIDED_FULL),
    "table7": ("wildfeedback", {"gemma12b"}, 2, GUIDED_FULL),
}
CPU = {"table4": ["model=tiny", "data=uf_sample", "generation=hf", "launcher=inline", "eval=default"]}
CPU_DEFAULT = ["model=tiny", "data=sample", "generation=hf", "launcher=inline", "eval=default"]


def task_config(cfg) -> tuple[Config, dict]:
    """A job's task config (validated, as the app receives it) and its hydra.sweep node."""
    sweep = OmegaConf.to_container(cfg.hydra.sweep, resolve=True)
    task = copy.deepcopy(cfg)
    with read_write(task), open_dict(task):
        del task["hydra"]  # as Hydra's run_job does
    obj = OmegaConf.to_object(task)
    validate(obj, environment=False)  # the values; packages of the GPU node (vLLM) are not needed here
    return obj, sweep


def test_the_sweeps_are_the_papers_artefacts():
    assert set(sweep_files()) == set(EXPECTED)
    for path in sweep_files().values():
        text = path.read_text()
        assert text.startswith("# @package _global_\n")
        assert f"python -m drift_exp -m +sweep={path.stem}" in text  # the command heads the file


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_sweep_expands_into_the_tables_jobs(name):
    data, models, iterations, cells = EXPECTED[name]
    jobs = compose_jobs(name)
    assert len(jobs) == len(models) * len(cells)
    seen = set()
    for job, composed in jobs:
        assert f"+sweep={name}" in job
        cfg, sweep = task_config(composed)
        assert (cfg.data.name, cfg.iterations, cfg.seed, cfg.run.sweep_name) == (data, iterations, 42, name)
        assert (cfg.generation.backend, cfg.launcher.name) == ("vllm", "local")
        assert cfg.model.name in models
        seen.add((cfg.model.name, cfg.method.name, cfg.setting.name))
        assert sweep == {"dir": f"outputs/sweeps/{name}", "subdir": experiment_name(cfg)}
    assert seen == {(m, *cell) for m in models for cell in cells}  # every job its own run directory


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_cpu_overrides_replace_model_and_data(name):
    overrides = CPU.get(name, CPU_DEFAULT)
    jobs = compose_jobs(name, overrides)
    assert len(jobs) == len(EXPECTED[name][3])  # a swept model collapses to model=tiny
    for _, composed in jobs:
        cfg, _ = task_config(composed)
        assert (cfg.model.path, cfg.generation.backend, cfg.launcher.name) == ("tiny", "hf", "inline")
        assert cfg.data.source == "sample"


def test_sweeper_params_override_and_extra_sweeps():
    by_params = sweep_jobs("table3", ["hydra.sweeper.params.model=tiny"])
    assert [j[0] for j in by_params] == ["model=tiny"] * 5
    assert by_params == sweep_jobs("table3", ["model=tiny"])
    cells = compose_jobs("table4", ["+cell=spin-controlled,drift-controlled"])
    assert len(cells) == 4
    assert {task_config(c)[0].setting.name for _, c in cells} == {"controlled"}
    assert len(sweep_jobs("table7", ["seed=1,2"])) == 6  # a command-line sweep adds a dimension


def test_slurm_launcher_replaces_the_local_one():
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    jobs = compose_jobs("table3", ["launcher=slurm", "hydra.launcher.partition=gpu"])
    assert len(jobs) == 10
    for _, composed in jobs:
        assert composed.hydra.launcher.partition == "gpu" and task_config(composed)[0].launcher.name == "slurm"


def test_listing_cli(capsys):
    from drift_exp.sweeps import main

    main([])
    assert [line.split()[0] for line in capsys.readouterr().out.splitlines()] == sorted(EXPECTED)
    main(["table7", "model=tiny"])
    assert capsys.readouterr().out.splitlines()[0] == (
        "outputs/sweeps/table7/wildfeedback-tiny-spin-controlled-s42: +cell=spin-controlled +sweep=table7 model=tiny")


def test_every_cell_option_composes():
    from drift_exp.sweeps import CONF_DIR

    methods = sorted(p.stem for p in (CONF_DIR / "method").glob("*.yaml"))
    settings = sorted(p.stem for p in (CONF_DIR / "setting").glob("*.yaml"))
    cells = [f"{m}-{s}" for m in methods for s in settings]
    jobs = compose_jobs("table7", ["+cell=" + ",".join(cells)])
    assert len(jobs) == len(cells)
    for job, composed in jobs:
        cfg, _ = task_config(composed)
        assert f"+cell={cfg.method.name.replace('-', '_')}-{cfg.setting.name}" in job


def test_real_multirun_from_another_directory(tmp_path):
    """`python -m drift_exp -m +sweep=table6 model=tiny data=sample ...` outside the repository: the group
    resolves, five jobs run (up to prepare), each in outputs/sweeps/table6/<experiment>."""
    cmd = [sys.executable, "-m", "drift_exp", "-m", "+sweep=table6", *CPU_DEFAULT, "run.stop_after=prepare",
           "tracking.mode=disabled"]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    sweep_dir = tmp_path / "outputs" / "sweeps" / "table6"
    runs = sorted(p.name for p in sweep_dir.iterdir() if p.is_dir())
    assert runs == sorted(f"sample-tiny-{m}-{s}-s42" for m, s in EXPECTED["table6"][3])
    assert all((sweep_dir / r / "data" / "records.jsonl").exists() for r in runs)
