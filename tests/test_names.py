"""drift_exp.names: each name is made and read back by one definition, and Hydra's run directories use it."""

import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from drift_exp.config import Config, MethodConfig, register_configs
from drift_exp.errors import ConfigError
from drift_exp.methods import build_method
from drift_exp.names import (
    ITERATION_STAGES,
    Experiment,
    StopPoint,
    experiment_name,
    folder_iteration,
    folder_stages,
    iteration_folder,
    make_experiment_name,
    method_kinds,
    parse_experiment_name,
    parse_stop_after,
    register_resolvers,
    stage_id,
)
from drift_exp.pipeline import stop_here
from drift_exp.plan import validate
from drift_exp.report.collect import read_run

from .conftest import CONF, ROOT

register_configs()


def compose_hydra(overrides: list[str], hydra_node: bool = True):
    """The config as Hydra composes it for `python -m drift_exp OVERRIDES` (hydra_node: with its hydra node)."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=overrides, return_hydra_config=hydra_node)


def load(overrides: list[str]) -> Config:
    return OmegaConf.to_object(compose_hydra(overrides, hydra_node=False))


# ------------------------------------------------------------------------------------- experiment names

@pytest.mark.parametrize("parts", [
    Experiment("sample", "tiny", "drift", "controlled", 42),
    Experiment("uf_raw_sample", "tiny", "drift-unguided", "controlled", 12345),
    Experiment("wildfeedback", "qwen14b", "iterdpo-unguided", "full", 0),
    Experiment("ultrafeedback_raw", "qwen2.5_7b+lora", "spin", "controlled", 2**32 - 1),
    Experiment("d.1", "m_2", "a-b-c", "s_3", 7),
])
def test_experiment_name_round_trips(parts):
    name = make_experiment_name(*parts)
    assert parse_experiment_name(name) == parts


def test_experiment_name_keeps_its_format():
    # Existing run directories are found (and resumed) by this exact name: the format must not drift.
    assert make_experiment_name("uf_raw_sample", "tiny", "drift-unguided", "full", 12345) == \
        "uf_raw_sample-tiny-drift-unguided-full-s12345"


@pytest.mark.parametrize("name", ["", "sample", "sample-tiny-drift-controlled", "sample-tiny-drift-controlled-s",
                                  "sample-tiny-drift-controlled-sx1", "sample-tiny-controlled-s1",
                                  "sample-tiny-drift-controlled-s1/extra"])
def test_parse_refuses_what_is_not_an_experiment_name(name):
    assert parse_experiment_name(name) is None


@pytest.mark.parametrize("overrides", [
    [],
    ["method=drift_unguided", "data=uf_raw_sample", "seed=12345"],
    ["method=iterdpo_unguided", "model=qwen14b", "setting=full", "seed=0"],
    ["method=spin", "data=ultrafeedback_raw", "run.sweep_name=mine"],
    ["+sweep=table6"],
])
def test_hydra_run_dir_and_sweep_subdir_are_the_experiment_name(overrides):
    dcfg = compose_hydra(overrides)
    name = experiment_name(load(overrides))
    assert name == experiment_name(dcfg)  # the dataclass and the DictConfig read the same keys
    assert OmegaConf.select(dcfg, "hydra.run.dir") == f"outputs/{name}"
    assert OmegaConf.select(dcfg, "hydra.sweep.subdir") == name
    parsed = parse_experiment_name(name)
    assert parsed is not None and parsed.seed == dcfg.seed and parsed.method == dcfg.method.name


def test_run_dir_name_of_an_existing_user_is_unchanged():
    dcfg = compose_hydra(["method=drift_unguided", "data=uf_raw_sample", "seed=12345"])
    assert OmegaConf.select(dcfg, "hydra.run.dir") == "outputs/uf_raw_sample-tiny-drift-unguided-controlled-s12345"


def test_resolver_registration_is_idempotent():
    register_resolvers()
    register_resolvers()
    register_configs()
    assert OmegaConf.select(compose_hydra([]), "hydra.run.dir") == "outputs/sample-tiny-drift-controlled-s42"


def test_conf_names_the_run_dir_only_through_the_resolver():
    text = (CONF / "config.yaml").read_text()
    assert text.count("${drift_exp.experiment_name:}") == 2 and "-s${seed}" not in text


def test_report_reads_back_the_name_the_pipeline_gives(tmp_path):
    cfg = load(["method=drift_unguided", "data=uf_raw_sample", "seed=12345", "setting=full"])
    run = tmp_path / experiment_name(cfg)  # no config.yaml: the report falls back to the directory's name
    (run / iteration_folder(1)).mkdir(parents=True)
    (run / iteration_folder(1) / "metrics.json").write_text(json.dumps({"iteration": 1}))
    (record,) = read_run(run)
    assert (record.data, record.model, record.method, record.setting, record.seed, record.iteration) == (
        cfg.data.name, cfg.model.name, cfg.method.name, cfg.setting.name, cfg.seed, 1)
    assert record.experiment == experiment_name(cfg)


def test_report_reads_a_dashed_label_from_the_config_not_the_name(tmp_path):
    # Only the method label may hold a '-' in a name that parses back; validate allows one in the others,
    # and such a run is identified by the config.yaml every run writes.
    cfg = load(["model.name=qwen-7b", "method=drift_unguided"])
    run = tmp_path / experiment_name(cfg)
    (run / iteration_folder(1)).mkdir(parents=True)
    (run / iteration_folder(1) / "metrics.json").write_text(json.dumps({"iteration": 1}))
    (run / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.structured(cfg)))
    (record,) = read_run(run)
    assert (record.model, record.method) == ("qwen-7b", "drift-unguided")


# ------------------------------------------------------------------------------------------------- stages

def test_stage_ids():
    assert stage_id(None, "prepare") == "data/prepare"
    assert stage_id(0, "train") == "iter_0/train"
    assert stage_id(12, "eval") == "iter_12/eval"
    assert stage_id("base", "eval") == "base/eval"
    assert folder_stages(None) == ("prepare",) and folder_stages(0) == ("train", "eval")
    assert folder_stages(3) == ITERATION_STAGES == ("requests", "generate", "pairs", "train", "eval")


@pytest.mark.parametrize("k", [0, 1, 10, 123])
def test_iteration_folder_round_trips(k):
    assert folder_iteration(iteration_folder(k)) == k


@pytest.mark.parametrize("name", ["data", "base", "iter_", "iter_x", "iter_1_old", "iter_1/train"])
def test_other_folders_are_no_iteration(name):
    assert folder_iteration(name) is None


@pytest.mark.parametrize("value,point", [
    ("prepare", StopPoint("prepare", None)), ("warm_start", StopPoint("warm_start", None)),
    ("train", StopPoint("train", 1)), ("iter_3/pairs", StopPoint("pairs", 3)), ("iter_12/eval", StopPoint("eval", 12)),
    ("bogus", None), ("iter_1/prepare", None), ("iter_1/warm_start", None), ("iter_x/train", None),
    ("data/prepare", None), ("train/", None), ("", None),
])
def test_parse_stop_after(value, point):
    assert parse_stop_after(value) == point


def test_the_pipeline_stops_where_stop_after_says():
    def stops(value: str) -> list[str]:
        cfg = load([f"run.stop_after={value}", "iterations=3"])
        steps = [("prepare", None), ("warm_start", None)] + [(s, k) for k in (1, 2, 3) for s in ITERATION_STAGES]
        return [stage_id(k, s) if k else s for s, k in steps if stop_here(cfg, s, k)]

    assert stops("prepare") == ["prepare"]
    assert stops("warm_start") == ["warm_start"]
    assert stops("generate") == ["iter_1/generate"]
    assert stops("iter_3/eval") == ["iter_3/eval"]


@pytest.mark.parametrize("value", ["prepare", "warm_start", "pairs", "iter_2/train"])
def test_valid_stop_after_passes(value):
    validate(load([f"run.stop_after={value}", "iterations=2"]), environment=False)


@pytest.mark.parametrize("value,message", [
    ("bogus", "run.stop_after must be prepare, warm_start, or <stage> / iter_<k>/<stage> with stage one of "
              "('requests', 'generate', 'pairs', 'train', 'eval'), got 'bogus'"),
    ("iter_1/prepare", "run.stop_after must be"),
    ("iter_3/train", "run.stop_after names iteration 3, but iterations=2"),
    ("iter_0/train", "run.stop_after names iteration 0, but iterations=2"),
])
def test_bad_stop_after_fails_naming_the_key(value, message):
    cfg = load([f"run.stop_after={value}", "iterations=2"])
    with pytest.raises(ConfigError) as err:
        validate(cfg, environment=False)
    assert str(err.value).startswith(message)


# ------------------------------------------------------------------------------------------------ methods

def test_unknown_method_kind_fails_naming_the_key():
    cfg = load(["method.kind=dpo"])
    with pytest.raises(ConfigError) as err:
        validate(cfg, environment=False)
    assert str(err.value) == "method.kind must be one of ('drift', 'iterdpo', 'spin'), got 'dpo'"
    with pytest.raises(ValueError, match="method.kind='dpo' is not implemented"):
        build_method(MethodConfig(name="x", kind="dpo"))


@pytest.mark.parametrize("kind", method_kinds())
def test_every_method_kind_builds_its_own_pair_builder(kind):
    builder = build_method(MethodConfig(name=kind, kind=kind))
    assert type(builder).__module__ == f"drift_exp.methods.{kind}"
    assert callable(builder.requests) and callable(builder.pairs)


def test_the_method_kinds_are_the_method_modules():
    # Derived from the modules present (nothing else lists them): the three of the paper, the shared modules not.
    assert method_kinds() == ("drift", "iterdpo", "spin")
    modules = {p.stem for p in Path(ROOT / "drift_exp" / "methods").glob("*.py")}
    assert modules - set(method_kinds()) == {"__init__", "protocol", "prompts"}
    for p in (CONF / "method").glob("*.yaml"):  # every shipped method option names a kind
        assert load([f"method={p.stem}"]).method.kind in method_kinds(), p


def test_every_data_format_has_a_reader_and_every_shipped_data_option_a_format():
    from drift_exp.data.load import READERS
    from drift_exp.names import DATA_FORMATS

    assert set(READERS) == set(DATA_FORMATS) - {"auto"}
    for p in (CONF / "data").glob("*.yaml"):
        assert load([f"data={p.stem}"]).data.format in DATA_FORMATS, p
    cfg = load(["data.format=csv"])
    with pytest.raises(ConfigError, match=r"^data.format must be one of .*got 'csv'$"):
        validate(cfg, environment=False)


@pytest.mark.e2e  # ~15 s: two submitit worker processes
def test_submitit_jobs_name_their_run_directories_like_the_pipeline(tmp_path, model_cache):
    """A SLURM sweep's job is pickled and run in a submitit worker process, which resolves hydra.sweep.subdir
    through drift_exp.names' resolver; submitit's local executor takes the same path as SLURM's."""
    import subprocess
    import sys

    sweep = tmp_path / "sweep"
    proc = subprocess.run(
        [sys.executable, "-m", "drift_exp", "-m", "hydra/launcher=submitit_local", f"hydra.sweep.dir={sweep}",
         "hydra.launcher.timeout_min=10", "run.stop_after=prepare", "tracking.mode=disabled",
         "method=drift_unguided", "seed=7,123"],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    jobs = sorted(p.name for p in sweep.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert jobs == ["sample-tiny-drift-unguided-controlled-s123", "sample-tiny-drift-unguided-controlled-s7"]
    for job in jobs:
        assert (sweep / job / "data" / "DONE").exists()
        assert parse_experiment_name(job).method == "drift-unguided"
