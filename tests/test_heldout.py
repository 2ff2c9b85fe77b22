"""data.holdout (drift_exp/heldout.py): which records are held out, how pairs are split, old run directories."""

from __future__ import annotations

import json

import pytest

from drift_exp.config import Config, DataConfig, result_fields
from drift_exp.errors import StageConflict, UserError
from drift_exp.heldout import heldout_records, split_for_training, split_pairs, used_counts
from drift_exp.methods import seed_pairs
from drift_exp.records import PreferencePair, write_jsonl
from drift_exp.stages import RunDir

from .helpers import load


@pytest.fixture(scope="module")
def sample():
    from drift_exp.data.load import load_records

    cfg = load([])
    return cfg, load_records(cfg.data, cfg.seed)[0]


def test_the_sample_holds_out_its_first_records_per_method(sample):
    cfg, records = sample
    assert cfg.data.holdout == 6 and Config().data.holdout == 100  # the sample's setting; the authors' default
    held = heldout_records(cfg, records)
    assert [r.id for r in held] == [r.id for r in records if r.kind == "dsat"][:6]  # file order
    spin = load(["method=spin"])
    assert [r.id for r in heldout_records(spin, records)] == [r.id for r in records if r.kind == "sat"][:6]
    controlled = load(["setting.max_records=12"])
    from drift_exp.data.load import select_records

    picked = select_records(records, "dsat", controlled.setting, controlled.seed)
    assert heldout_records(controlled, records) == picked[:6]  # among the records the run iterates on
    assert heldout_records(load(["data.holdout=0"]), records) == []
    assert used_counts(cfg, records) == {"heldout": 6, "holdout": 6}
    assert used_counts(load(["data.holdout=1000"]), records)["heldout"] == 38
    from drift_exp.errors import ConfigError
    from drift_exp.plan import validate

    with pytest.raises(ConfigError, match=r"data\.holdout must be >= 0"):
        validate(load(["data.holdout=-1"]), environment=False)


def test_iteration_pairs_split_by_their_record(sample):
    cfg, records = sample
    held = heldout_records(cfg, records)
    dsat = [r for r in records if r.kind == "dsat"]
    pairs = [PreferencePair(id=r.id, prompt=r.prompt, chosen="new", rejected=r.rejected or "",
                            meta={"record_id": r.id}) for r in dsat]
    train, out = split_pairs(pairs, held, warm_start=False)
    assert [p.id for p in out] == [r.id for r in held] and len(train) == len(dsat) - 6
    assert split_pairs(pairs, [], warm_start=False) == (pairs, [])


def test_warm_start_holds_out_the_seed_pairs_of_held_out_contexts(sample):
    """A DSAT->SAT seed pair comes from the same judged reply as a DSAT record: the held-out records' seeds
    are held out of the warm start too (nothing trained on shares a held-out record's context)."""
    cfg, records = sample
    held = heldout_records(cfg, records)
    seeds = seed_pairs(records)
    train, out = split_pairs(seeds, held, warm_start=True)
    contexts = [json.dumps(r.prompt, sort_keys=True) for r in held]
    assert out and all(json.dumps(p.prompt, sort_keys=True) in contexts for p in out)
    assert not any(json.dumps(p.prompt, sort_keys=True) in contexts for p in train)
    assert len(train) + len(out) == len(seeds) == 20
    for p in out:  # the seed's rejected reply is the held-out DSAT reply itself
        assert any(p.rejected == r.rejected and p.prompt == r.prompt for r in held)


def test_split_for_training_reads_the_run_directory(sample, tmp_path):
    cfg, records = sample
    write_jsonl(tmp_path / "data" / "records.jsonl", records)
    pairs = [PreferencePair(id=r.id, prompt=r.prompt, chosen="c", rejected="r", meta={"record_id": r.id})
             for r in records if r.kind == "dsat"]
    train, out = split_for_training(cfg, tmp_path, 1, pairs)
    assert (len(train), len(out)) == (32, 6)
    assert split_for_training(load(["data.holdout=0"]), tmp_path, 1, pairs) == (pairs, [])
    with pytest.raises(UserError, match=r"data\.holdout=100"):
        split_for_training(load(["data.holdout=100"]), tmp_path, 1, pairs)


def test_a_run_directory_from_before_holdout_resumes_only_with_holdout_0(tmp_path):
    """Run directories made before data.holdout trained on every record: their records count as holdout=0, so
    they resume with data.holdout=0 and are refused (naming it) with the new default."""
    old = {k: v for k, v in result_fields(DataConfig(name="sample", source="sample")).items() if k != "holdout"}
    RunDir(tmp_path, False).stage(None, "prepare", "", {"data": old}).finish()
    now = result_fields(DataConfig(name="sample", source="sample", holdout=0))
    assert RunDir(tmp_path, False).stage(None, "prepare", "", {"data": now}).done
    with pytest.raises(StageConflict, match=r"data\.holdout: \(not recorded\) -> 8"):
        RunDir(tmp_path, False).stage(None, "prepare", "", {"data": {**now, "holdout": 8}})


def released_folder(folder, records) -> list[str]:
    """The bundled sample's records written as the DRIFT authors' released files (dsat_data.jsonl, sat_data.jsonl,
    seed-data/train.jsonl); returns the DSAT replies in file order."""
    def msgs(text):
        return [{"role": "assistant", "content": text}]

    dsat = [{"prompt": r.prompt, "rejected": msgs(r.rejected), "user_preference": {"role": "user",
             "content": r.feedback}} for r in records if r.kind == "dsat"]
    sat = [{"prompt": r.prompt, "chosen": msgs(r.chosen)} for r in records if r.kind == "sat"]
    seed = [{"prompt": r.prompt, "chosen": msgs(r.chosen), "rejected": msgs(r.rejected)}
            for r in records if r.kind == "seed"]
    for name, rows in (("dsat_data.jsonl", dsat), ("sat_data.jsonl", sat), ("seed-data/train.jsonl", seed)):
        write_jsonl(folder / name, rows)
    return [d["rejected"][0]["content"] for d in dsat]


@pytest.mark.e2e
def test_a_run_on_the_released_files_holds_out_their_first_dsat_records(sample, tmp_path):
    """The authors' split on their own file format: the first data.holdout DSAT lines (file order) are sampled and
    paired but never trained on; every training stage reports the held-out pairs, and the counts say so."""
    from .helpers import drift_exp, ok

    _, records = sample
    folder = tmp_path / "released"
    replies = released_folder(folder, records)
    run = tmp_path / "run"
    ok(drift_exp(run, "data=wildfeedback", f"data.source={folder}", "data.holdout=3", "iterations=2",
                 "eval.benchmarks=[]"))
    stats = json.loads((run / "data" / "stats.json").read_text())
    assert stats["used"]["heldout"] == 3 and stats["used"]["holdout"] == 3
    for k in (1, 2):
        train = json.loads((run / f"iter_{k}" / "train_stats.json").read_text())
        pairs = [json.loads(line) for line in (run / f"iter_{k}" / "pairs.jsonl").read_text().splitlines()]
        held = [p for p in pairs if p["rejected"] in replies[:3]]
        assert held and train["heldout"]["pairs"] == len(held)
        assert train["pairs"] == len(pairs) - len(held)  # the count of training pairs leaves them out
        assert 0 <= train["heldout"]["reward_accuracy"] <= 1 and "margin_mean" in train["heldout"]
