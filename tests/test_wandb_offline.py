"""Reading an offline W&B run back from its .wandb file (drift_exp.report.wandb_offline), as written by the W&B
library itself: records over several 32 KiB blocks, define_metric axes, tables, a resumed run, bad files."""

from pathlib import Path

import pytest

from drift_exp.report.wandb_offline import OfflineRunError, find_offline_runs, read_offline_run


@pytest.fixture
def offline(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    import wandb

    yield wandb
    wandb.teardown()


def test_history_summary_config_and_axes_come_back(tmp_path, offline):
    wandb = offline
    long_text = "é" * 50_000  # a record longer than a block: written in FIRST / MIDDLE / LAST chunks
    run = wandb.init(project="p", dir=str(tmp_path), name="exp", group="grp", job_type="experiment",
                     tags=["sweep:t"], config={"method": {"name": "drift"}, "notes": long_text})
    run.define_metric("iteration")
    run.define_metric("eval/*", step_metric="iteration")
    for k in range(3):
        run.log({"train/global_step": k + 1, "train/loss": 0.7 - 0.1 * k})
        run.log({"iteration": k, "eval/proxy/reward_mean": 0.5 * k, "eval/text": long_text if k == 1 else "x"})
    run.log({"pairs/preview": wandb.Table(columns=["a", "b"], data=[[1, None], [2, "x"]])})
    run.summary["base/eval/proxy/reward_mean"] = -0.2
    run.finish()
    wandb.teardown()  # the files are complete once W&B's service has ended
    (folder,) = (tmp_path / "wandb").glob("offline-run-*")
    r = read_offline_run(folder)
    assert (r.name, r.group, r.job_type, r.tags, r.id) == ("exp", "grp", "experiment", ["sweep:t"], run.id)
    assert r.config["method"] == {"name": "drift"} and r.config["notes"] == long_text
    assert r.column("eval/proxy/reward_mean") == [(0, 0.0), (1, 0.5), (2, 1.0)]
    assert r.step_metric("eval/proxy/reward_mean") == "iteration" and r.step_metric("train/loss") is None
    assert [row["eval/text"] for row in r.history if "eval/text" in row][1] == long_text
    assert {"train/loss", "iteration", "pairs/preview", "eval/text"} <= r.history_keys
    assert r.summary["base/eval/proxy/reward_mean"] == -0.2 and r.summary["pairs/preview"]["_type"] == "table-file"
    assert r.scan_history(["iteration", "eval/proxy/reward_mean"]) == [
        {"iteration": k, "eval/proxy/reward_mean": 0.5 * k} for k in range(3)]


def test_a_resumed_run_is_one_run(tmp_path, offline):
    wandb = offline
    for k in range(2):  # two processes, one run id (a resume)
        run = wandb.init(project="p", dir=str(tmp_path), id="abc123", resume="allow", name="exp")
        run.log({"iteration": k, "eval/x": float(k)})
        run.finish()
        wandb.teardown()
    assert len(list((tmp_path / "wandb").glob("offline-run-*"))) == 2
    (r,) = find_offline_runs(tmp_path)
    assert r.id == "abc123" and [row["eval/x"] for row in r.history] == [0.0, 1.0]


def test_bad_files_are_named(tmp_path, offline):
    wandb = offline
    run = wandb.init(project="p", dir=str(tmp_path))
    run.log({"a": 1})
    run.finish()
    wandb.teardown()
    (path,) = (tmp_path / "wandb").glob("offline-run-*/*.wandb")
    data = bytearray(path.read_bytes())
    data[40] ^= 0xFF
    bad = tmp_path / "bad.wandb"
    bad.write_bytes(bytes(data))
    with pytest.raises(OfflineRunError, match=r"bad.wandb: corrupt record at byte \d+"):
        read_offline_run(bad)
    (tmp_path / "not.wandb").write_text("hello")
    with pytest.raises(OfflineRunError, match="not a W&B transaction log"):
        read_offline_run(tmp_path / "not.wandb")
    header_only = tmp_path / "header.wandb"
    header_only.write_bytes(bytes(data[:7]))
    with pytest.raises(OfflineRunError, match="no run record"):
        read_offline_run(header_only)
    with pytest.raises(OfflineRunError, match="cannot read"):
        read_offline_run(Path(tmp_path / "missing.wandb"))
