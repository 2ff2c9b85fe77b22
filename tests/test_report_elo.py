"""The report's Elo column: every policy of a sweep rated in one WB-Elo pool with a (fixture) leaderboard, the
shared Base row one player, and Elo relative to the Base row beside the paper's same difference."""

import csv
import json
from pathlib import Path

import pytest
import yaml

from drift_exp.evaluation.wb_elo import wb_elo_pool
from drift_exp.evaluation.wb_leaderboard import elo_settings, load_leaderboard
from drift_exp.report import build_report
from drift_exp.report.elo import add_paper_vs_base
from drift_exp.report.paper import load_cells, paper_index

from .helpers import write_leaderboard

SESSIONS = [f"s{n}" for n in range(6)]


def judged(scores: list[int], length: int = 20) -> list[dict]:
    """WildBench judge records (the fields the Elo reads) with one score per session."""
    return [{"session_id": s, "score": x, "model_output": "w" * length} for s, x in zip(SESSIONS, scores, strict=True)]


def write_run(root: Path, method: str, setting: str, elo_cfg: dict, evals: dict, base: list[int]) -> Path:
    """A finished run of qwen7b on wildfeedback: config.yaml, base/ and iter_k/ with metrics and judge records.
    evals: k -> (scores, the run's own Elo)."""
    run = root / f"wildfeedback-qwen7b-{method}-{setting}-s42"
    cfg = {"data": {"name": "wildfeedback"}, "model": {"name": "qwen7b"}, "method": {"name": method},
           "setting": {"name": setting}, "seed": 42, "run": {"sweep_name": "table3"},
           "eval": {"wildbench": {"elo": elo_cfg}}}
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    folders = {"base": (base, 1190.0, None)} | {f"iter_{k}": (s, e, k) for k, (s, e) in evals.items()}
    for folder, (scores, own, k) in folders.items():
        wb = run / folder / "eval" / "wildbench"
        wb.mkdir(parents=True)
        (wb / "scores.json").write_text(json.dumps(judged(scores)))
        metrics = {"eval": {"wildbench": {"task_macro": 50.0, "elo": own, "judge": "j",
                                          "template": {"template": "official", "proxy": False}}}}
        if k is not None:
            metrics.update(iteration=k, method=method, setting=setting, data="wildfeedback", model="qwen7b", seed=42)
        else:
            metrics["shared"] = {"key": "k", "reused": False}
        (run / folder / "metrics.json").write_text(json.dumps(metrics))
    return run


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    root = tmp_path_factory.mktemp("elo")
    elo = write_leaderboard(root / "leaderboard", SESSIONS)
    elo_cfg = {"enabled": True, "results_url": elo.results_url, "models": elo.models, "init_url": elo.init_url,
               "rounds": 8, "cache_dir": elo.cache_dir}
    sweep = root / "table3"
    base = [5] * 6  # the untouched model: the same scores in both runs (one shared base evaluation)
    write_run(sweep, "drift", "full", elo_cfg, {0: ([6] * 6, 1191.0), 1: ([9, 9, 9, 9, 8, 8], 1199.0)}, base)
    write_run(sweep, "spin", "controlled", elo_cfg, {0: ([6] * 6, 1191.0), 1: ([2, 2, 3, 3, 2, 2], 1170.0)}, base)
    report = build_report([sweep], root / "report", log_to_wandb=False)
    with open(report.csv, newline="") as f:
        rows = {(r["method"], r["setting"], r["iteration"]): r for r in csv.DictReader(f)}
    return {"root": root, "sweep": sweep, "elo": elo, "report": report, "rows": rows}


def test_the_elo_column_is_one_pool_of_the_sweeps_distinct_policies(sweep):
    rows = sweep["rows"]
    board = load_leaderboard(sweep["elo"])
    # Four players, one per report row: the Base row (base/ of both runs), the Seed row (iteration 0 of both),
    # and the two iteration-1 policies; they play each other and model-a / model-b on the six sessions.
    # Each is named after the first run folder that holds it (the names order the games, hence the shuffles).
    drift, spin = "wildfeedback-qwen7b-drift-full-s42", "wildfeedback-qwen7b-spin-controlled-s42"
    players = {"base": (f"{drift}/base", [5] * 6), "seed": (f"{drift}/iter_0", [6] * 6),
               "drift": (f"{drift}/iter_1", [9, 9, 9, 9, 8, 8]), "spin": (f"{spin}/iter_1", [2, 2, 3, 3, 2, 2])}
    results = {**board.scores, **{name: {s: (x, "w" * 20) for s, x in zip(SESSIONS, scores, strict=True)}
                                  for name, scores in players.values()}}
    settings = {**elo_settings(sweep["elo"]), "rounds": 8}
    pool = wb_elo_pool(results, board.init, [name for name, _ in players.values()], **settings)
    expected = {key: pool[name] for key, (name, _) in players.items()}
    assert float(rows[("base", "", "0")]["elo"]) == pytest.approx(expected["base"]["elo"], abs=0.006)
    assert float(rows[("seed", "", "0")]["elo"]) == pytest.approx(expected["seed"]["elo"], abs=0.006)
    assert float(rows[("drift", "full", "1")]["elo"]) == pytest.approx(expected["drift"]["elo"], abs=0.006)
    assert float(rows[("spin", "controlled", "1")]["elo"]) == pytest.approx(expected["spin"]["elo"], abs=0.006)
    assert expected["drift"]["games"] == 6 * 5  # 2 leaderboard models + 3 other policies, 6 sessions
    # The runs' own (lone) ratings stay in results.csv; every row says which pool rated it.
    assert float(rows[("drift", "full", "1")]["elo_alone"]) == 1199.0
    assert {r["elo_pool"] for r in rows.values() if r["runs"] != ""} == {"pool"}
    text = sweep["report"].markdown.read_text()
    assert "4 policies of these runs and the leaderboard's 2 models (1 anchored" in text
    assert "length margin 1500" in text and "8 rounds" in text


def test_elo_relative_to_base_beside_the_papers_difference(sweep):
    rows = sweep["rows"]
    base = float(rows[("base", "", "0")]["elo"])
    drift = rows[("drift", "full", "1")]
    assert float(drift["elo_vs_base"]) == pytest.approx(float(drift["elo"]) - base, abs=0.011)
    assert float(drift["elo_vs_base"]) > 0 > float(rows[("spin", "controlled", "1")]["elo_vs_base"])
    assert float(rows[("base", "", "0")]["elo_vs_base"]) == 0
    # Table 3/5: Qwen2.5-7B DRIFT full iter1 1194.81, Base 1194.67 -> +0.14; SPIN iter1 1180.75 -> -13.92.
    assert drift["elo_vs_base_paper"] == "+0.14"
    assert rows[("spin", "controlled", "1")]["elo_vs_base_paper"] == "-13.92"
    assert float(drift["elo_vs_base_delta"]) == pytest.approx(float(drift["elo_vs_base"]) - 0.14, abs=0.011)


def test_paper_vs_base_for_every_row_with_an_elo():
    paper = add_paper_vs_base(paper_index(load_cells()))
    # Table 5: Qwen2.5-14B-WildFeedback-DRIFT-iter2 1217.61, its -4k (controlled) twin 1214.03; Instruct 1213.17.
    assert paper[("wildfeedback", "qwen14b", "full", "drift", 2)]["elo_vs_base"] == "+4.44"
    assert paper[("wildfeedback", "qwen14b", "controlled", "drift", 2)]["elo_vs_base"] == "+0.86"
    assert paper[("", "qwen7b", "", "base", 0)]["elo_vs_base"] == "+0.00"


def test_alone_keeps_each_runs_own_rating(sweep, tmp_path):
    report = build_report([sweep["sweep"]], tmp_path / "alone", log_to_wandb=False, elo="alone")
    with open(report.csv, newline="") as f:
        rows = {(r["method"], r["setting"], r["iteration"]): r for r in csv.DictReader(f)}
    assert float(rows[("drift", "full", "1")]["elo"]) == 1199.0 and rows[("drift", "full", "1")]["elo_pool"] == "alone"
    assert float(rows[("drift", "full", "1")]["elo_vs_base"]) == 9.0  # 1199 - the base's own 1190
    assert "rated alone" in report.markdown.read_text()


def test_an_unreadable_leaderboard_falls_back_to_each_runs_rating_and_says_why(sweep, tmp_path):
    import shutil

    copy = tmp_path / "table3"
    shutil.copytree(sweep["sweep"], copy)
    for cfg_path in copy.glob("*/config.yaml"):
        cfg = yaml.safe_load(cfg_path.read_text())
        cfg["eval"]["wildbench"]["elo"]["init_url"] = str(tmp_path / "missing.json")
        cfg_path.write_text(yaml.safe_dump(cfg))
    report = build_report([copy], tmp_path / "out", log_to_wandb=False)
    text = report.markdown.read_text()
    assert "not rated (leaderboard not readable" in text and "missing.json" in text
    with open(report.csv, newline="") as f:
        rows = {(r["method"], r["setting"], r["iteration"]): r for r in csv.DictReader(f)}
    assert (float(rows[("drift", "full", "1")]["elo"]), rows[("drift", "full", "1")]["elo_pool"]) == (1199.0, "alone")


def test_a_broken_judge_record_file_is_named(sweep, tmp_path):
    import shutil

    from drift_exp.report import ReportError

    copy = tmp_path / "table3"
    shutil.copytree(sweep["sweep"], copy)
    broken = copy / "wildfeedback-qwen7b-spin-controlled-s42" / "iter_1" / "eval" / "wildbench" / "scores.json"
    broken.write_text('{"session_id": "s0", "score": 5}')  # an object, not a list of records
    with pytest.raises(ReportError, match=r"spin-controlled-s42/iter_1/eval/wildbench/scores.json: not a WildBench"):
        build_report([copy], tmp_path / "out", log_to_wandb=False)
