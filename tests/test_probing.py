"""Issue 19's probes: one credential rule for every value and everything derived from it, path kinds checked
before anything is read, model folders checked before anything is written, `+key` typos, the data identity of
folders, files that change while read, strict conversation ids, record line counts, run-directory write failures,
and the smaller ones (zero-width prompts, UltraFeedback roles, iter_0 in run.stop_after, the refused run's log)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from drift_exp.config import Config, DataConfig, OnInvalid, register_configs
from drift_exp.credentials import check_credentials, scrub
from drift_exp.data import load as data_load
from drift_exp.data.load import load_records
from drift_exp.data.released import read_released
from drift_exp.data.wildfeedback import extract
from drift_exp.errors import ConfigError, DataError
from drift_exp.provenance import data_identity
from drift_exp.records import FeedbackRecord, read_jsonl, write_jsonl
from drift_exp.stages import config_changes

from .conftest import CONF, ROOT

register_configs()

RELEASED = Path(__file__).parent / "fixtures" / "released"


def compose_dcfg(overrides: list[str]):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


def load(overrides: list[str]) -> Config:
    return OmegaConf.to_object(compose_dcfg(overrides))


def cli(run_dir: Path, *overrides: str, env: dict | None = None, timeout: int = 120):
    """(process, seconds) of `python -m drift_exp` on `run_dir` (W&B offline)."""
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "drift_exp", f"hydra.run.dir={run_dir}", *overrides], cwd=ROOT,
                          env=dict(os.environ, WANDB_MODE="offline", **(env or {})), capture_output=True, text=True,
                          timeout=timeout)
    return proc, time.perf_counter() - t0


def files_holding(folder: Path, *secrets: str) -> list[Path]:
    """Every file below `folder` (hidden ones, .hydra/, logs and W&B's offline files included) holding a secret."""
    if not folder.exists():
        return []
    return [p for p in folder.rglob("*") if p.is_file() and any(s.encode() in p.read_bytes() for s in secrets)]


# --- 1. credentials -------------------------------------------------------------------------------------

SK = "sk-proj-" + "A1b2C3d4E5f6G7h8I9j0K1l2"


@pytest.mark.parametrize("override,key,what", [
    (f"eval.judge.base_url='https://judge.example/v1?api_key={SK}'", "eval.judge.base_url", "key (sk-...)"),
    ("eval.judge.base_url='https://judge.example/v1?Access-Token=tok123'", "eval.judge.base_url", "query parameter"),
    ("eval.judge.base_url='https://judge.example/v1#access_token=tok123'", "eval.judge.base_url", "fragment parameter"),
    ("eval.judge.base_url=https://user:hunter2@${oc.env:JUDGE_HOST}/v1", "eval.judge.base_url", "user-info"),
    ("eval.wildbench.template_url='https://raw.example/t.md?token=tok123'", "eval.wildbench.template_url", "query"),
    ("+generation.engine_kwargs.headers.Authorization='Bearer tok123'",
     "generation.engine_kwargs.headers.Authorization", "named like a credential"),
    ("+generation.engine_kwargs.headers.X-Api-Key=tok123", "generation.engine_kwargs.headers.X-Api-Key", "named like"),
    (f"eval.judge.api_key_env={SK}", "eval.judge.api_key_env", "variable name"),
    ("+generation.engine_kwargs.note=hf_" + "a" * 34, "generation.engine_kwargs.note", "Hugging Face token"),
    ("+generation.engine_kwargs.aws=AKIA" + "ABCDEFGHIJKLMNOP", "generation.engine_kwargs.aws", "AWS"),
])
def test_every_spelling_of_a_literal_credential_is_refused(override, key, what):
    with pytest.raises(ConfigError, match=r"holds a credential written out literally") as err:
        check_credentials(compose_dcfg([override]))
    assert str(err.value).startswith(key) and what in str(err.value) and "${oc.env:" in str(err.value)
    assert "tok123" not in str(err.value) and SK not in str(err.value) and "hunter2" not in str(err.value)


def test_references_pass_and_what_they_resolve_to_is_masked():
    from drift_exp.credentials import mask_text

    for override in ("eval.judge.base_url='https://user:${oc.env:PW}@judge.example/v1?api_key=${oc.env:KEY}'",
                     "+generation.engine_kwargs.headers.Authorization='Bearer ${oc.env:TOKEN}'",
                     "eval.judge.api_key_env=MY_JUDGE_KEY"):
        check_credentials(compose_dcfg([override]))
    resolved = {"eval": {"judge": {"base_url": f"https://judge.example/v1?x=1&api_key={SK}&sig=abcd#frag"}},
                "generation": {"engine_kwargs": {"headers": {"Authorization": "Bearer tok123", "Accept": "json"}}}}
    masked = scrub(resolved)
    assert masked["eval"]["judge"]["base_url"] == "https://judge.example/v1?x=1&api_key=***&sig=***#frag"
    assert masked["generation"]["engine_kwargs"]["headers"] == {"Authorization": "***", "Accept": "json"}
    assert mask_text(f"got 'ftp://user:PASSWORD@host/x' and {SK}.") == "got 'ftp://***@host/x' and ***."


def test_no_option_of_the_shipped_configs_looks_like_a_credential():
    """False positives stay low: every value of every option file passes, and masking changes none."""
    from drift_exp.credentials import literal_problems

    for group in sorted(p for p in CONF.iterdir() if p.is_dir()):
        for option in sorted(group.glob("*.yaml")):
            plus = "+" if group.name == "sweep" else ""  # the sweeps are appended, not in the defaults list
            dcfg = compose_dcfg([f"{plus}{group.name}={option.stem}"])
            check_credentials(dcfg)
            raw = OmegaConf.to_container(dcfg, resolve=False)
            assert scrub(raw) == raw, option
    assert literal_problems("method.instruction", "Revise the risk-assessment-and-mitigation-strategy task.") == []


def test_a_literal_credential_is_refused_before_hydra_can_print_it(tmp_path):
    """iterations is an int: Hydra's own type error would echo the value; the command line is checked first."""
    run = tmp_path / "run"
    proc, _ = cli(run, "iterations=ftp://user:PASSWORD@host/x")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out[-2000:]
    assert "iterations holds a credential" in out and "PASSWORD" not in out and "Traceback" not in out
    assert files_holding(tmp_path, "PASSWORD") == []


def test_a_value_refused_by_validation_is_echoed_masked(tmp_path):
    """The value comes from the environment (so it passes the literal check) and fails a range check: the
    message names the key and shows the value with its password masked, on the console and in no file."""
    run = tmp_path / "run"
    proc, _ = cli(run, "eval.judge.base_url=${oc.env:DRIFT_TEST_URL}", env={"DRIFT_TEST_URL": "ftp://user:PASSWORD@h/x"})
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out[-2000:]
    assert "eval.judge.base_url must be an http(s) URL" in out and "ftp://***@h/x" in out and "PASSWORD" not in out
    assert files_holding(tmp_path, "PASSWORD") == []


@pytest.mark.parametrize("override", [
    "eval.judge.base_url='https://judge.example/v1?api_key=" + SK + "'",
    "eval.judge.base_url=https://user:hunter2@${oc.env:HOME}/v1",
    "+generation.engine_kwargs.headers.Authorization='Bearer hunter2hunter2'",
    "eval.judge.api_key_env=" + SK,
])
def test_a_refused_run_stores_the_secret_nowhere(tmp_path, override):
    run = tmp_path / "run"
    proc, _ = cli(run, override)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2 and "holds a credential written out literally" in out, out[-2000:]
    assert SK not in out and "hunter2" not in out
    assert files_holding(tmp_path, SK, "hunter2") == []
    assert not (run / ".hydra").exists() and not (run / "config.yaml").exists()


@pytest.mark.e2e
def test_an_accepted_reference_is_masked_in_every_file_of_the_run(tmp_path, model_cache):
    """References are accepted; what they resolve to never reaches config.yaml, .hydra/, the DONE markers (which
    record resolved sections), the logs or the offline W&B files."""
    secrets = {"DRIFT_TEST_JUDGE": f"https://judge.example/v1?api_key={SK}",
               "DRIFT_TEST_TEMPLATE": "https://raw.example/t.md?token=tplsecret999",
               "DRIFT_TEST_BEARER": "Bearer bearersecret999"}
    run = tmp_path / "run"
    proc, _ = cli(run, "eval.judge.base_url=${oc.env:DRIFT_TEST_JUDGE}",
                  "eval.wildbench.template_url=${oc.env:DRIFT_TEST_TEMPLATE}",
                  "+generation.engine_kwargs.headers.Authorization=${oc.env:DRIFT_TEST_BEARER}",
                  "trainer.max_length=512", "trainer.warm_start_epochs=1", "run.stop_after=warm_start",
                  "eval.benchmarks=[]", env=secrets, timeout=900)  # one training stage: the W&B run has data
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    words = (SK, "tplsecret999", "bearersecret999")
    assert not any(w in out for w in words)
    files = [p for p in run.rglob("*") if p.is_file()]
    assert any("wandb" in p.parts for p in files) and (run / ".hydra" / "hydra.yaml").exists()
    assert files_holding(run, *words) == []
    done = (run / "iter_0" / "DONE").read_text()  # the evaluation's marker records the resolved eval section
    assert "t.md?token=***" in done and '"Authorization": "***"' in done  # (base_url is neutral: not recorded)


# --- 2. path kinds --------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["fifo", "dev_zero_symlink"])
def test_a_fifo_or_device_as_data_source_answers_at_once(tmp_path, kind):
    path = tmp_path / "data.json"
    if kind == "fifo":
        os.mkfifo(path)
    else:
        path.symlink_to("/dev/zero")
    proc, seconds = cli(tmp_path / "run", f"data.source={path}", timeout=60)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2 and "Traceback" not in out, out[-2000:]
    assert f"data.source='{path}' is " + ("a FIFO" if kind == "fifo" else "a character device") in out
    assert seconds < 10, seconds
    assert not (tmp_path / "run" / "data").exists()


def test_a_large_folder_as_data_source_answers_at_once(tmp_path):
    proc, seconds = cli(tmp_path / "run", "data.source=/usr", timeout=60)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2 and "data.source='/usr' is a folder without a file any reader takes" in out, out[-2000:]
    assert seconds < 10, seconds


def _released_copy(folder: Path, seed: bool = True) -> Path:
    shutil.copytree(RELEASED, folder)
    if not seed:
        shutil.rmtree(folder / "seed-data")
    return folder


def test_folder_identity_reads_only_the_readers_files_and_is_cheap_on_10_gb(tmp_path):
    data = _released_copy(tmp_path / "released")
    other = data / "checkpoints"
    other.mkdir()
    for i in range(160):  # 160 sparse files of 63 MiB: 10 GB the readers never read
        with open(other / f"shard{i}.bin", "wb") as f:
            f.truncate(63 * 2**20)
    t0 = time.perf_counter()
    first, again = data_identity(str(data)), data_identity(str(data))
    seconds = time.perf_counter() - t0
    assert first == again and sorted(first["files"]) == ["dsat_data.jsonl", "sat_data.jsonl", "seed-data/train.jsonl"]
    assert seconds < 1, seconds
    with open(data / "sat_data.jsonl", "r+b") as f:  # a reader's file of 10 GB: size, mtime and inode, no hash
        f.truncate(10 * 2**30)
    t0 = time.perf_counter()
    big = data_identity(str(data))["files"]["sat_data.jsonl"]
    assert time.perf_counter() - t0 < 1 and set(big) == {"size", "mtime_ns", "inode"}


def test_a_readers_file_that_is_a_fifo_is_refused(tmp_path):
    data = _released_copy(tmp_path / "released")
    (data / "sat_data.jsonl").unlink()
    os.mkfifo(data / "sat_data.jsonl")
    with pytest.raises(DataError, match=r"sat_data.jsonl.* is a FIFO"):
        data_identity(str(data))


@pytest.mark.parametrize("override,key", [
    ("eval.wildbench.template_file=/dev/zero", "eval.wildbench.template_file"),
    ("eval.proxy_source=/dev/zero", "eval.proxy_source"),
    ("data.source=/dev/zero", "data.source"),
])
def test_every_path_setting_is_checked_for_its_kind(override, key):
    from drift_exp.provenance import check_input_paths

    with pytest.raises(ConfigError, match=rf"{key}='/dev/zero' is a character device"):
        check_input_paths(load([override]))


# --- 3. model folders ------------------------------------------------------------------------------------

def _model_folder(tmp_path: Path, config: dict | None, weights: bool) -> Path:
    folder = tmp_path / "model"
    folder.mkdir()
    if config is not None:
        (folder / "config.json").write_text(json.dumps(config))
    if weights:
        (folder / "model.safetensors").write_bytes(b"\0" * 16)
    return folder


@pytest.mark.parametrize("case,match", [
    ("passwd", r"model.path='/etc/passwd' is a file, expected a model folder"),
    ("empty", r"no config.json in this folder"),
    ("no_weights", r"config.json but no weights"),
    ("unknown_architecture", r"transformers cannot read its config.json"),
])
def test_a_folder_that_is_no_model_is_refused_naming_model_path(tmp_path, case, match):
    from drift_exp.models import check_model_folder

    path = {"passwd": lambda: Path("/etc/passwd"),
            "empty": lambda: _model_folder(tmp_path, None, False),
            "no_weights": lambda: _model_folder(tmp_path, {"model_type": "qwen2"}, False),
            "unknown_architecture": lambda: _model_folder(tmp_path, {"model_type": "banana_lm",
                                                                      "architectures": ["BananaForCausalLM"]}, True),
            }[case]()
    with pytest.raises(ConfigError, match=match) as err:
        check_model_folder("model.path", str(path))
    assert str(err.value).startswith("model.path=")


def test_a_real_model_folder_passes(model_cache):
    from drift_exp.config import TinyModelConfig
    from drift_exp.models import build_tiny, check_model_folder

    check_model_folder("model.path", str(build_tiny(TinyModelConfig())))
    check_model_folder("scorer.path", str(build_tiny(TinyModelConfig(init_seed=1), head="reward")))


def test_the_cli_refuses_an_empty_model_folder_before_writing_anything(tmp_path):
    (tmp_path / "empty").mkdir()
    proc, _ = cli(tmp_path / "run", f"model.path={tmp_path / 'empty'}")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2 and f"model.path='{tmp_path / 'empty'}': no config.json" in out, out[-2000:]
    assert "Traceback" not in out and not (tmp_path / "run" / "data").exists()


# --- 4. +key typos ---------------------------------------------------------------------------------------

def test_a_plus_key_the_schema_lacks_is_refused_with_the_closest_key():
    from drift_exp.config_keys import check_known_keys

    with pytest.raises(ConfigError, match=r"trainer.learnig_rate: no such setting; did you mean trainer.learning_rate"):
        check_known_keys(compose_dcfg(["+trainer.learnig_rate=1"]))
    with pytest.raises(ConfigError, match=r"eval.judge.base_ulr: no such setting; did you mean eval.judge.base_url"):
        check_known_keys(compose_dcfg(["+eval.judge.base_ulr=x"]))
    # dict-typed fields stay open; config groups added with + are not keys
    check_known_keys(compose_dcfg(["+generation.engine_kwargs.swap_space=8", "+sweep=table3"]))


def test_the_cli_refuses_a_plus_key_typo(tmp_path):
    proc, _ = cli(tmp_path / "run", "+trainer.learnig_rate=1")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2 and "did you mean trainer.learning_rate?" in out and "Traceback" not in out


# --- 5. data identity of folders; files that change while read --------------------------------------------

def test_a_file_added_removed_or_replaced_in_a_data_folder_is_a_named_change(tmp_path):
    data = _released_copy(tmp_path / "released", seed=False)
    before = {"data_file": data_identity(str(data))}
    (data / "seed-data").mkdir()
    shutil.copy(RELEASED / "seed-data" / "train.jsonl", data / "seed-data" / "train.jsonl")
    added = {"data_file": data_identity(str(data))}
    changes = config_changes(before, added)
    assert changes and all("seed-data/train.jsonl" in c for c in changes)
    (data / "sat_data.jsonl").unlink()
    removed = config_changes(added, {"data_file": data_identity(str(data))})
    assert removed and all("sat_data.jsonl" in c and "no longer set" in c for c in removed)
    again = {"data_file": data_identity(str(data))}
    (data / "dsat_data.jsonl").write_text((data / "dsat_data.jsonl").read_text().replace("bakery", "bistro"))
    assert any("dsat_data.jsonl.sha256" in c for c in config_changes(again, {"data_file": data_identity(str(data))}))


def test_records_of_an_older_drift_exp_stay_reusable():
    """A record without any data identity, or with a large file's size but no inode (recorded before inodes
    were), is still accepted: that exemption is for older records only."""
    now = {"data_file": {"path": "/d/a.json", "size": 5, "mtime_ns": 7, "inode": 9}}
    assert config_changes({}, now) == []
    assert config_changes({"data_file": {"path": "/d/a.json", "size": 5, "mtime_ns": 7}}, now) == []


def test_a_file_rewritten_while_it_is_read_is_an_error(tmp_path, monkeypatch):
    """A writer appends to dsat_data.jsonl while the reader is at work (the reader is wrapped to let it in at
    that moment): the records are from neither version, so the read is refused, whatever the file's size."""
    data = _released_copy(tmp_path / "released")
    real = data_load.READERS["released"]

    def reader_with_a_concurrent_writer(cfg, seed):
        out = real(cfg, seed)
        with open(data / "dsat_data.jsonl", "a") as f:
            f.write((RELEASED / "dsat_data.jsonl").read_text().splitlines()[0] + "\n")
        return out

    monkeypatch.setitem(data_load.READERS, "released", reader_with_a_concurrent_writer)
    with pytest.raises(DataError, match=r"dsat_data.jsonl changed while it was read"):
        load_records(DataConfig(name="rel", source=str(data), format="released"))


@pytest.mark.e2e
def test_resume_sees_an_added_seed_file_and_a_records_file_cut_at_a_line(tmp_path, model_cache):
    data = _released_copy(tmp_path / "released", seed=False)
    run = tmp_path / "run"
    args = (f"data.source={data}", "data.name=rel", "data.format=released", "run.stop_after=prepare",
            "tracking.mode=disabled")
    proc, _ = cli(run, *args, timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    records = run / "data" / "records.jsonl"
    lines = records.read_text().splitlines(keepends=True)
    records.write_text("".join(lines[:-1]))  # cut at a line boundary
    proc, _ = cli(run, *args, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2 and f"{records}: {len(lines) - 1} rows, but the stage that wrote it recorded " \
        f"{len(lines)}" in out, out[-3000:]
    records.write_text("".join(lines))
    (data / "seed-data").mkdir()
    shutil.copy(RELEASED / "seed-data" / "train.jsonl", data / "seed-data" / "train.jsonl")
    proc, _ = cli(run, *args, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2 and "data/prepare was finished with a different config" in out, out[-3000:]
    assert "seed-data/train.jsonl" in out


# --- 6. conversation ids ----------------------------------------------------------------------------------

def _row(uid, role: str, content: str, sat: bool = False, dsat: bool = False) -> dict:
    return {"UtterranceId": uid, "TurnId": 1, "Role": role, "Content": content, "State": "", "Preceeding": "YES",
            "Satisfaction": sat, "Satisfaction-Justificiation": "", "Disatisfaction": dsat,
            "Dissatisfaction-Justificiation": ""}


def _rows(bad_id) -> list[dict]:
    return [_row(0, "User", "q0"), _row(1, "Agent", "a0"), _row(2, "User", "wrong", dsat=True),
            _row(3, "Agent", "a0 again"), _row(bad_id, "User", "more"), _row(5, "Agent", "a0 third"),  # conv 0
            _row(0, "User", "q1"), _row(1, "Agent", "a1"), _row(2, "User", "thanks", sat=True)]  # conv 1


@pytest.mark.parametrize("bad_id", [False, 0.0])
def test_an_id_equal_to_0_but_not_an_integer_skips_its_whole_conversation(bad_id):
    records, stats = extract(_rows(bad_id), "f.json", "wf", skip_invalid=True)
    assert stats["conversations"] == 2 and stats["skipped"] == {"conversation_with_wrong_type": 1}
    assert stats["skipped_rows"] == 6 and stats["dsat"] == 0
    assert [r.id for r in records] == ["wf-c1-u1-sat"]


@pytest.mark.parametrize("bad_id", [False, 0.0])
def test_an_id_equal_to_0_but_not_an_integer_names_its_conversation(bad_id):
    with pytest.raises(DataError, match=r"utterance 4 \(conversation 0\): field 'UtterranceId': expected an integer"):
        extract(_rows(bad_id), "f.json", "wf", skip_invalid=False)


# --- 7. record line counts ----------------------------------------------------------------------------------

def test_a_records_file_cut_at_a_line_boundary_is_refused(tmp_path):
    from drift_exp.records import record_count

    recs = [FeedbackRecord(id=f"r{i}", prompt=[{"role": "user", "content": "q"}], meta={"kind": "dsat"})
            for i in range(3)]
    path = tmp_path / "records.jsonl"
    write_jsonl(path, recs[:2])
    assert record_count({"dsat": 2, "sat": 0, "seed_pairs": 1}) == 3 and record_count({"prompts": 3}) == 3
    with pytest.raises(DataError, match=r"records.jsonl: 2 rows, but the stage that wrote it recorded 3"):
        read_jsonl(path, FeedbackRecord, 3)
    assert len(read_jsonl(path, FeedbackRecord, 2)) == 2


# --- 8. run-directory write failures ---------------------------------------------------------------------

def test_an_unwritable_run_directory_ends_in_one_line(tmp_path):
    proc, _ = cli(Path("/sys/drift_exp_probe/run"))
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2 and "hydra.run.dir=/sys/drift_exp_probe/run: cannot write there" in out, out[-2000:]
    assert "Traceback" not in out and len(out.strip().splitlines()) == 1


def test_a_disk_full_mid_run_is_told_in_one_line_and_other_errors_are_not(tmp_path):
    """A write that fails later (safetensors saving a checkpoint on a full disk words it its own way) ends with
    the project's one line; a permission refused outside the run directory is not taken for a disk problem."""
    import errno

    from drift_exp.run_dir_check import disk_problem

    full = RuntimeError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No space '
                        'left on device" })')
    assert "StorageFull" in disk_problem(full, tmp_path)
    assert disk_problem(OSError(errno.ENOSPC, "No space left on device", "/elsewhere/x"), tmp_path)
    assert disk_problem(PermissionError(errno.EACCES, "Permission denied", str(tmp_path / "iter_1")), tmp_path)
    assert disk_problem(PermissionError(errno.EACCES, "Permission denied", "/models/m/config.json"), tmp_path) is None
    assert disk_problem(ValueError("a bug"), tmp_path) is None


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 2 MiB tmpfs (root only; skipped where mounting is not allowed)."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_a_full_or_read_only_disk_ends_in_one_line(small_tmpfs):
    proc, _ = cli(small_tmpfs / "run")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2 and "its disk is full" in out and "Traceback" not in out, out[-2000:]
    subprocess.run(["mount", "-o", "remount,ro", str(small_tmpfs)], check=True)
    proc, _ = cli(small_tmpfs / "run2")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2 and "cannot write there (Read-only file system)" in out, out[-2000:]
    assert "Traceback" not in out


# --- 9. the smaller ones -----------------------------------------------------------------------------------

def test_a_zero_width_prompt_or_feedback_counts_as_empty(tmp_path):
    folder = tmp_path / "rel"
    folder.mkdir()
    rows = [{"prompt": [{"role": "user", "content": "\u200b\u2060 \ufeff"}], "rejected": "r",
             "user_preference": {"role": "user", "content": "no"}},
            {"prompt": [{"role": "user", "content": "q"}], "rejected": "r",
             "user_preference": {"role": "user", "content": "\u200b"}},
            {"prompt": [{"role": "user", "content": "q"}], "rejected": "\u200b\u200b",
             "user_preference": {"role": "user", "content": "no"}},
            {"prompt": [{"role": "user", "content": "ok"}], "rejected": "r",
             "user_preference": {"role": "user", "content": "no"}}]
    (folder / "dsat_data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    records, stats = read_released(folder, "rel")
    assert len(records) == 1 and stats["skipped"] == {"empty_feedback": 1, "empty_prompt": 1, "empty_reply": 1}
    wf = [_row(0, "User", "\u200b"), _row(1, "Agent", "a"), _row(2, "User", "bad", dsat=True)]
    records, stats = extract(wf, "f.json", "wf", skip_invalid=False)
    assert records == [] and stats["skipped"] == {"empty_prompt": 1}


def _uf_row(chosen: list[dict], rejected: list[dict]) -> dict:
    return {"prompt": "q", "prompt_id": "p", "chosen": chosen, "rejected": rejected, "score_chosen": 8.0,
            "score_rejected": 2.0}


@pytest.mark.parametrize("prompt,reason,match", [
    ([{"role": "banana", "content": "q"}], "unknown_role", r"field 'chosen\[0\].role': expected one of"),
    ([{"role": "assistant", "content": "q"}], "bad_prompt", r"expected the prompt to end with the user's turn"),
    ([{"role": "user", "content": "\u200b"}], "empty_prompt", r"non-empty user prompt"),
])
def test_ultrafeedback_roles_and_prompts_are_checked(tmp_path, prompt, reason, match):
    from drift_exp.data import ultrafeedback

    good = _uf_row([{"role": "user", "content": "q"}, {"role": "assistant", "content": "yes"}],
                   [{"role": "user", "content": "q"}, {"role": "assistant", "content": "no"}])
    bad = _uf_row([*prompt, {"role": "assistant", "content": "yes"}], [*prompt, {"role": "assistant", "content": "no"}])
    path = tmp_path / "uf.jsonl"
    path.write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n")
    cfg = DataConfig(name="uf", source=str(path), format="ultrafeedback_binarized", on_invalid=OnInvalid.skip)
    records, stats = ultrafeedback.load(cfg, "ultrafeedback_binarized", 42)
    assert len(records) == 1 and stats["skipped"] == {reason: 1}
    with pytest.raises(DataError, match=match):
        ultrafeedback.load(DataConfig(name="uf", source=str(path), format="ultrafeedback_binarized"),
                           "ultrafeedback_binarized", 42)


def test_stop_after_iteration_0_points_at_warm_start(tmp_path):
    proc, _ = cli(tmp_path / "run", "run.stop_after=iter_0/train")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2 and "iteration 0 is the warm start" in out and "run.stop_after=warm_start" in out


def test_a_run_refused_by_validation_leaves_no_log_behind(tmp_path):
    run = tmp_path / "outputs" / "exp"
    proc, _ = cli(run, "trainer.beta=-1")
    assert proc.returncode == 2 and "trainer.beta must be > 0" in proc.stdout + proc.stderr
    assert not (run / "__main__.log").exists() and not run.exists()
    run.mkdir(parents=True)
    (run / "config.yaml").write_text("kept: true\n")  # a folder of an earlier run: its files are left alone
    proc, _ = cli(run, "trainer.beta=-1")
    assert proc.returncode == 2 and (run / "__main__.log").exists() and (run / "config.yaml").exists()
