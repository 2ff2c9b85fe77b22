"""Stage markers: done stages are reused, changed ones refused or (with overwrite) discarded downstream;
the run-directory lock; no silent fallback to an older checkpoint; resume records of result-affecting
settings only."""

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field, replace

import pytest

from drift_exp.config import Config, TrainerConfig, result_fields, resume_rule
from drift_exp.config_fields import NEUTRAL, resume_rule_in, since
from drift_exp.errors import StageConflict, UserError
from drift_exp.provenance import data_identity
from drift_exp.stages import DamagedRunDir, RunDir, RunDirLocked, config_changes, key_of
from drift_exp.training.dpo import derive_batch

from .conftest import ROOT


def finish_iteration(rd: RunDir, k: int, parent: str, temperature: float) -> str:
    key = parent
    for name, section in [("requests", {"n": 1}), ("generate", {"generation": {"temperature": temperature}}),
                          ("pairs", {}), ("train", {"trainer": {"learning_rate": 1e-6}})]:
        st = rd.stage(k, name, key, section)
        assert not st.done
        st.folder.mkdir(parents=True, exist_ok=True)
        (st.folder / f"{name}.out").write_text("x")
        st.finish({"made": name})
        key = st.key
    return key


def done_names(folder) -> set[str]:
    return set(json.loads((folder / "DONE").read_text()))


def test_done_stage_is_reused_with_its_stats(tmp_path):
    finish_iteration(RunDir(tmp_path, overwrite=False), 1, "p", 0.7)
    st = RunDir(tmp_path, overwrite=False).stage(1, "requests", "p", {"n": 1})
    assert st.done and st.stats == {"made": "requests"}


def test_changed_setting_is_refused_naming_it(tmp_path):
    finish_iteration(RunDir(tmp_path, overwrite=False), 1, "p", 0.7)
    rd = RunDir(tmp_path, overwrite=False)
    key = rd.stage(1, "requests", "p", {"n": 1}).key
    with pytest.raises(StageConflict, match=r"iter_1/generate .*generation\.temperature: 0\.7 -> 1\.0.*"
                                            r"run\.overwrite=true"):
        rd.stage(1, "generate", key, {"generation": {"temperature": 1.0}})


def test_overwrite_discards_the_stage_and_everything_after(tmp_path):
    rd = RunDir(tmp_path, overwrite=False)
    k1 = finish_iteration(rd, 1, "p", 0.7)
    finish_iteration(rd, 2, k1, 0.7)
    rd = RunDir(tmp_path, overwrite=True)
    key = rd.stage(1, "requests", "p", {"n": 1}).key
    st = rd.stage(1, "generate", key, {"generation": {"temperature": 1.0}})
    later = rd.stage(2, "requests", "x", {"n": 1})
    assert not st.done and not later.done
    assert done_names(tmp_path / "iter_1") == {"requests", "generate", "pairs", "train"}  # checks write nothing
    rd.apply()
    assert done_names(tmp_path / "iter_1") == {"requests"}
    assert not (tmp_path / "iter_2").exists()


def test_an_upstream_change_changes_every_downstream_key():
    assert key_of("a", {"x": 1}) != key_of("b", {"x": 1})
    assert key_of("a", {"x": 1}) == key_of("a", {"x": 1})


@pytest.mark.parametrize("world,expect", [(1, (4, 1)), (2, (2, 1)), (4, (1, 1))])
def test_global_batch_is_kept_whatever_the_world_size(world, expect):
    assert derive_batch(4, 4, world) == expect


def test_gradient_accumulation_makes_up_the_global_batch():
    micro, accum = derive_batch(64, 4, 8)
    assert (micro, accum) == (4, 2) and micro * accum * 8 == 64
    assert derive_batch(12, 5, 1) == (4, 3)


def test_indivisible_global_batch_is_a_config_error():
    from drift_exp.errors import ConfigError

    with pytest.raises(ConfigError, match="trainer.global_batch_size=4 is not divisible by the world size 3"):
        derive_batch(4, 4, 3)


def test_a_changed_eval_config_reruns_only_the_eval(tmp_path):
    rd = RunDir(tmp_path, overwrite=False)
    k1 = finish_iteration(rd, 1, "p", 0.7)
    finish_iteration(rd, 2, k1, 0.7)
    rd.stage(1, "eval", k1, {"eval": {"benchmarks": ["proxy"]}}).finish({"proxy": 1.0})
    rd = RunDir(tmp_path, overwrite=False)
    again = rd.stage(1, "eval", k1, {"eval": {"benchmarks": ["proxy", "wildbench"]}})  # no refusal, no overwrite
    assert not again.done
    assert "eval" in done_names(tmp_path / "iter_1")  # not yet: only once every stage was checked
    rd.apply()
    assert done_names(tmp_path / "iter_1") == {"requests", "generate", "pairs", "train"}
    assert (tmp_path / "iter_2" / "DONE").exists()  # later iterations untouched


def test_a_refused_run_writes_nothing_not_even_the_changed_eval(tmp_path):
    rd = RunDir(tmp_path, overwrite=False)
    k1 = finish_iteration(rd, 1, "p", 0.7)
    rd.stage(1, "eval", k1, {"eval": {"limit": 4}}).finish({"proxy": 1.0})
    finish_iteration(rd, 2, k1, 0.7)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    rd = RunDir(tmp_path, overwrite=False)
    rd.stage(1, "requests", "p", {"n": 1})
    assert not rd.stage(1, "eval", k1, {"eval": {"limit": 8}}).done  # a leaf: would rerun...
    with pytest.raises(StageConflict, match="iter_2/generate"):
        rd.stage(2, "requests", "x", {"n": 1})
        rd.stage(2, "generate", "x", {"generation": {"temperature": 1.0}})  # ...but a later stage is refused
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before


def test_a_finished_stage_after_an_unfinished_one_is_refused(tmp_path):
    rd = RunDir(tmp_path, overwrite=False)
    k1 = finish_iteration(rd, 1, "p", 0.7)
    finish_iteration(rd, 2, k1, 0.7)
    markers = json.loads((tmp_path / "iter_1" / "DONE").read_text())
    del markers["train"]  # iteration 1's training will be redone: iteration 2 was built on the old one
    (tmp_path / "iter_1" / "DONE").write_text(json.dumps(markers))
    rd = RunDir(tmp_path, overwrite=False)
    for name, section in [("requests", {"n": 1}), ("generate", {"generation": {"temperature": 0.7}}),
                          ("pairs", {}), ("train", {"trainer": {"learning_rate": 1e-6}})]:
        rd.stage(1, name, "p", section)
    with pytest.raises(StageConflict, match=r"iter_2/requests is recorded as finished, but iter_1/train"):
        rd.stage(2, "requests", "x", {"n": 1})


# --- resume records hold result-affecting settings only ---------------------------------------------

def train_section(trainer: TrainerConfig) -> dict:
    return {"trainer": result_fields(trainer), "seed": 42}


@pytest.mark.parametrize("change", [{"ddp_timeout": 7200}, {"logging_steps": 10}, {"gradient_checkpointing": False},
                                    {"signal_tau": 0.9}, {"ref_mode": "precomputed"}])
def test_neutral_settings_do_not_refuse_a_finished_stage(tmp_path, change):
    RunDir(tmp_path, False).stage(1, "train", "p", train_section(TrainerConfig())).finish()
    st = RunDir(tmp_path, False).stage(1, "train", "p", train_section(replace(TrainerConfig(), **change)))
    assert st.done


def test_markers_of_older_versions_holding_neutral_settings_are_accepted():
    old = {"trainer": asdict(TrainerConfig(ddp_timeout=60, logging_steps=5)), "seed": 42}  # whole section hashed
    assert config_changes(old, train_section(TrainerConfig())) == []
    assert config_changes(old, train_section(TrainerConfig(beta=0.5))) == ["trainer.beta: 0.1 -> 0.5"]


def test_neutral_vllm_knobs_and_result_affecting_generation_settings():
    for key in ("generation.gpu_memory_utilization", "generation.enforce_eager", "generation.tensor_parallel_size",
                "trainer.ddp_timeout", "trainer.logging_steps", "scorer.batch_size", "eval.judge.max_concurrency",
                "eval.judge.base_url", "launcher.main_process_port", "tracking.mode"):
        assert resume_rule(key)[0], key
    # generation.batch_size: the HF backend draws a batch's samples from one random stream
    for key in ("generation.batch_size", "generation.temperature", "trainer.beta", "trainer.micro_batch_size",
                "scorer.path", "eval.batch_size", "seed", "data.source"):
        assert not resume_rule(key)[0], key


def test_a_setting_added_later_with_its_default_changes_nothing():
    recorded = {"trainer": result_fields(TrainerConfig()), "seed": 42}
    del recorded["trainer"]["max_grad_norm"]  # as if the field did not exist when the stage ran
    assert config_changes(recorded, train_section(TrainerConfig())) == []
    assert config_changes(recorded, train_section(TrainerConfig(max_grad_norm=0.5))) == [
        "trainer.max_grad_norm: (not recorded) -> 0.5"]
    recorded["trainer"]["removed_knob"] = 3  # a recorded setting the schema lost: a change (the safe side)
    assert config_changes(recorded, train_section(TrainerConfig())) == ["trainer.removed_knob: 3 -> (no longer set)"]


def test_unmarked_fields_count_and_legacy_values_stand_in_for_unrecorded_ones():
    @dataclass
    class Section:
        plain: int = 1  # unmarked: result-affecting
        knob: int = field(default=2, metadata=NEUTRAL)
        new_mode: str = field(default="fast", metadata=since(legacy="exact"))  # the old behaviour was 'exact'

    @dataclass
    class Root:
        s: Section = field(default_factory=Section)

    assert resume_rule_in(Root(), "s.plain") == (False, 1)
    assert resume_rule_in(Root(), "s.knob") == (True, 2)
    assert resume_rule_in(Root(), "s.new_mode") == (False, "exact")
    assert resume_rule_in(Root(), "s.nonexistent")[0] is False and resume_rule_in(Root(), "iteration")[0] is False


def test_every_schema_field_is_marked_or_counts():
    # neutral fields never reach a record; a field nobody marked is recorded (the safe default)
    recorded = result_fields(Config())
    assert "ddp_timeout" not in recorded["trainer"] and "beta" in recorded["trainer"]
    assert "base_url" not in recorded["eval"]["judge"] and "model" in recorded["eval"]["judge"]
    assert "launcher" in recorded and recorded["launcher"] == {}


def test_a_replaced_data_file_is_refused_like_a_changed_setting(tmp_path):
    data = tmp_path / "annotation.json"
    data.write_text('{"a": 1}')
    run = tmp_path / "run"
    section = {"data": {"source": str(data)}, "data_file": data_identity(str(data))}
    RunDir(run, False).stage(None, "prepare", "", section).finish()
    assert RunDir(run, False).stage(None, "prepare", "", {**section, "data_file": data_identity(str(data))}).done
    data.write_text('{"a": 2}')  # same size, same path: the content hash tells
    with pytest.raises(StageConflict, match=r"data/prepare .*data_file\.sha256"):
        RunDir(run, False).stage(None, "prepare", "", {**section, "data_file": data_identity(str(data))})
    assert set(data_identity("sample")["sample"]) >= {"sat_dsat_annotation.json"}  # the bundled files, by content
    assert "path" not in data_identity("sample")["sample"]["sat_dsat_annotation.json"]
    assert data_identity("org/name") == {"hub": "org/name"}


def test_a_prepare_record_without_file_identity_is_accepted(tmp_path):
    # recorded by a drift_exp that did not keep the data file's identity: accepted (with a warning)
    RunDir(tmp_path, False).stage(None, "prepare", "", {"data": {"source": "sample"}}).finish()
    st = RunDir(tmp_path, False).stage(None, "prepare", "", {"data": {"source": "sample"},
                                                             "data_file": data_identity("sample")})
    assert st.done


# --- no silent fallbacks --------------------------------------------------------------------------

def fake_train_marker(rd: RunDir, k: int, stats: dict | None = None) -> None:
    rd.stage(k, "train", "p", {"trainer": {"beta": 0.1}}).finish(stats)


def test_a_missing_checkpoint_is_an_error_never_an_older_one(tmp_path):
    rd = RunDir(tmp_path, False)
    for k in (0, 1):
        fake_train_marker(rd, k)
        ckpt = tmp_path / f"iter_{k}" / "checkpoint"
        ckpt.mkdir()
        (ckpt / "config.json").write_text("{}")
        (ckpt / "model.safetensors").write_bytes(b"weights")
    assert rd.checkpoint_after(1, "base") == str(tmp_path / "iter_1" / "checkpoint")
    (tmp_path / "iter_1" / "checkpoint" / "model.safetensors").unlink()  # deleted to save disk
    with pytest.raises(DamagedRunDir, match=r"iter_1/checkpoint is missing or incomplete.*delete .*iter_1/"):
        rd.checkpoint_after(1, "base")
    with pytest.raises(DamagedRunDir, match=r"iter_2/train has not finished"):
        rd.checkpoint_after(2, "base")


def test_only_a_recorded_skipped_warm_start_means_the_base_model(tmp_path):
    rd = RunDir(tmp_path, False)
    fake_train_marker(rd, 0, {"skipped": "trainer.warm_start_epochs=0"})
    assert rd.checkpoint_after(0, "base-model") == "base-model"
    fake_train_marker(rd, 1)
    with pytest.raises(DamagedRunDir, match="iter_1/checkpoint"):
        rd.checkpoint_after(1, "base-model")


@pytest.mark.parametrize("content,what", [("", "is empty"), ('{"train": {"key": "ab', "is damaged"),
                                          ('["train"]', "is damaged")])
def test_an_empty_or_truncated_done_marker_names_the_file(tmp_path, content, what):
    (tmp_path / "iter_1").mkdir()
    (tmp_path / "iter_1" / "DONE").write_text(content)
    with pytest.raises(DamagedRunDir, match=rf"iter_1/DONE {what}.*Delete it"):
        RunDir(tmp_path, False).stage(1, "requests", "p", {})


def test_a_missing_stage_output_names_the_file(tmp_path):
    rd = RunDir(tmp_path, False)
    with pytest.raises(DamagedRunDir, match=r"data/records\.jsonl is missing.*data/DONE records data/prepare"):
        rd.require(tmp_path / "data" / "records.jsonl", "data/prepare")
    from drift_exp.errors import DataError
    from drift_exp.records import FeedbackRecord, read_jsonl

    with pytest.raises(DataError, match="records.jsonl: no such file"):
        read_jsonl(tmp_path / "records.jsonl", FeedbackRecord)


def test_a_failed_write_names_the_file_and_leaves_no_temp(tmp_path):
    from drift_exp.records import write_json

    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(UserError, match=r"file/DONE: could not write it"):
        write_json(tmp_path / "file" / "DONE", {})
    write_json(tmp_path / "DONE", {"a": 1})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["DONE", "file"]


# --- one process per run directory ----------------------------------------------------------------

HOLD = """
import sys, time
from pathlib import Path
from drift_exp.stages import RunDir
with RunDir(Path(sys.argv[1]), False).locked():
    print("locked", flush=True)
    time.sleep(120)
"""


def hold_lock(run_dir):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(run_dir)], stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_a_second_process_is_refused_naming_the_holder_and_kill_9_leaves_no_stale_lock(tmp_path):
    holder = hold_lock(tmp_path)
    try:
        with pytest.raises(RunDirLocked, match=rf"{tmp_path} is in use by another drift_exp process "
                                               rf"\(PID {holder.pid} on "):
            with RunDir(tmp_path, False).locked():
                pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with RunDir(tmp_path, False).locked() as rd:  # the kernel dropped the dead holder's lock
        with rd.locked():  # reentrant within one process
            pass


def test_the_cli_on_a_locked_run_dir_exits_2_at_once(tmp_path):
    holder = hold_lock(tmp_path / "run")
    try:
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "drift_exp", f"hydra.run.dir={tmp_path / 'run'}"], cwd=ROOT,
                              capture_output=True, text=True, timeout=120)
        elapsed = time.perf_counter() - t0
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out[-2000:]
    assert f"{tmp_path / 'run'} is in use by another drift_exp process (PID {holder.pid}" in out
    assert "Traceback" not in out
    assert not (tmp_path / "run" / "config.yaml").exists() and not (tmp_path / "run" / ".hydra").exists()
    assert elapsed < 20, elapsed  # refused before torch is imported


def test_temp_files_are_private_to_each_process(tmp_path):
    from drift_exp.records import _tmp_name, write_json

    assert _tmp_name(tmp_path / "DONE").name == f"DONE.{os.getpid()}.tmp"
    write_json(tmp_path / "DONE", {})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["DONE"]
