"""WildBench's own judge template (read at run time, never shipped) and WB-Elo, on fixtures with known answers.

The template used here is tests/fixtures/eval/wb_score_template.md: this project's own words around the
official placeholders. WB-Elo is checked against answers derived without the code under test: the Elo
update written out by hand for two games, and the Elo of a win rate (400·log10(p/(1-p)) above the
opponent) for a long run.
"""

import hashlib
import json
import math
from pathlib import Path

import pytest

from drift_exp.errors import DataError
from drift_exp.evaluation import wildbench as wb
from drift_exp.evaluation.benchmarks import load_wildbench
from drift_exp.evaluation.config import WildBenchConfig
from drift_exp.evaluation.fetch import FetchError, cache_path
from drift_exp.evaluation.wb_elo import build_games, play, wb_elo
from drift_exp.evaluation.wb_leaderboard import load_leaderboard

from .helpers import WB_TEMPLATE as TEMPLATE
from .helpers import write_leaderboard

OUT = "a reply"  # a usable output: not empty, not truncated


# ---------------------------------------------------------------------------------------------- the template

def test_offline_without_a_cached_template_refuses_naming_the_url_and_the_override(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = WildBenchConfig()
    with pytest.raises(FetchError) as err:
        wb.load_template(cfg, tmp_path)
    msg = str(err.value)
    assert cfg.template_url in msg and "eval.wildbench.template_file" in msg and "offline" in msg
    assert cfg.template_url.endswith("evaluation/eval_template.score.v2.md")


def test_a_cached_copy_is_used_offline_and_its_checksum_recorded(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = WildBenchConfig()
    entry = cache_path(cfg.template_url, tmp_path)
    entry.parent.mkdir(parents=True)
    entry.write_bytes(TEMPLATE.read_bytes())
    text, info = wb.load_template(cfg, tmp_path)
    digest = hashlib.sha256(TEMPLATE.read_bytes()).hexdigest()
    assert text == TEMPLATE.read_text() and info["sha256"] == digest and info["source"] == cfg.template_url
    assert info["template"] == "official" and info["proxy"] is False and digest[:16] in info["version"]


def test_official_template_is_filled_at_its_placeholders():
    text, info = wb.load_template(WildBenchConfig(template_file=str(TEMPLATE)), Path("/nonexistent"))
    task = load_wildbench("sample")[1]  # two earlier turns, then the query
    prompt = wb.render_score_prompt(task, "My reply", template=text)
    conv = task["conversation_input"]
    history = f"USER: {conv[0]['content']}\n\nASSISTANT: {conv[1]['content']}\n\n"
    assert f"<<HISTORY>>\n{history}\n<</HISTORY>>" in prompt
    assert f"<<QUERY>>\n{conv[2]['content']}\n<</QUERY>>" in prompt
    assert "<<REPLY>>\nMy reply\n<</REPLY>>" in prompt
    assert "<<CHECKS>>\n" + "".join(f"- {c}\n" for c in task["checklist"]) + "\n<</CHECKS>>" in prompt
    assert "{$" not in prompt and "Grade the assistant" in prompt and info["source"] == str(TEMPLATE)


def test_a_template_without_the_placeholders_or_with_another_checksum_is_refused(tmp_path):
    bad = tmp_path / "t.md"
    bad.write_text("Score this: {$model_output}")
    with pytest.raises(DataError, match=r"placeholders .*\{\$history\}"):
        wb.load_template(WildBenchConfig(template_file=str(bad)), tmp_path)
    with pytest.raises(DataError, match="differs from eval.wildbench.template_sha256"):
        wb.load_template(WildBenchConfig(template_file=str(TEMPLATE), template_sha256="0" * 64), tmp_path)


def test_the_project_paraphrase_only_when_asked_and_labelled_a_proxy(tmp_path):
    text, info = wb.load_template(WildBenchConfig(template="project"), tmp_path)
    assert text == wb.SCORE_TEMPLATE and info["proxy"] is True and info["template"] == "project"


def test_checklist_digest_changes_with_any_checklist_item():
    tasks = load_wildbench("sample", limit=3)
    before = wb.checklist_digest(tasks)
    tasks[2] = {**tasks[2], "checklist": tasks[2]["checklist"][:-1]}
    assert wb.checklist_digest(tasks) != before and len(before) == 64


# ---------------------------------------------------------------------------------------------- the games

def test_games_follow_the_margin_and_tie_rules():
    results = {
        "a": {"s1": (8, OUT), "s2": (6, OUT), "s3": (9, OUT), "s4": (7, ""), "s5": (5, OUT)},
        "b": {"s1": (4, OUT), "s2": (5, OUT), "s3": (7, OUT), "s4": (1, OUT), "s5": (9, "cut... (truncated)")},
        "c": {"s1": (8, OUT)},
    }
    g = build_games(results, margin=3, tie_margin=1)
    games = {(g.models[i], g.models[j], float(s)) for i, j, s in zip(g.first, g.second, g.outcome, strict=True)}
    # s1: a-b gap 4 (a wins), a-c gap 0 (draw), b-c gap 4 (c wins); s2: gap 1 (draw); s3: gap 2 (no game);
    # s4 and s5: an empty or truncated output (no game).
    assert games == {("a", "b", 1.0), ("a", "c", 0.5), ("b", "c", 0.0), ("a", "b", 0.5)}
    assert len(g.first) == 4


def test_two_wins_against_a_fixed_anchor_by_hand():
    # X (start 1000) beats the anchored A (Arena Elo 1000, not dynamic) twice, K = 4:
    #   game 1: expected 0.5                      -> 1000 + 4 * 0.5        = 1002
    #   game 2: expected 1 / (1 + 10^(-2/400))    -> 1002 + 4 * (1 - that) = 1003.98849...
    results = {"A": {"s1": (2, OUT), "s2": (2, OUT)}, "X": {"s1": (9, OUT), "s2": (9, OUT)}}
    second = 1002 + 4 * (1 - 1 / (1 + 10 ** (-2 / 400)))
    assert second == pytest.approx(1003.98849, abs=1e-5)
    got = wb_elo(results, {"A": 1000.0}, "X", margin=3, tie_margin=2, k_factor=4, rounds=5, dynamic=False,
                 interval=16, seed=0)
    assert got["elo"] == pytest.approx(second, abs=1e-9) and got["std"] == pytest.approx(0, abs=1e-9)
    assert (got["games"], got["wins"], got["draws"], got["losses"]) == (2, 2, 0, 0)


def test_a_dynamic_anchor_moves_and_is_pulled_halfway_back_on_its_first_game():
    # One game, X beats A: A = 1000 - 4 * 0.5 = 998, pulled back to (998 + 1000) / 2 = 999; X = 1002.
    g = build_games({"A": {"s": (1, OUT)}, "X": {"s": (10, OUT)}}, margin=3, tie_margin=2)
    finals = play(g, {"A": 1000.0}, k_factor=4, rounds=3, dynamic=True, interval=16, seed=0)
    assert finals.tolist() == [[999.0, 1002.0]] * 3


def test_games_between_two_anchored_models_are_not_played():
    g = build_games({"A": {"s": (1, OUT)}, "B": {"s": (10, OUT)}}, margin=3, tie_margin=2)
    assert play(g, {"A": 1100.0, "B": 1200.0}, 4, 2, True, 16, 0).tolist() == [[1100.0, 1200.0]] * 2


def test_a_long_run_settles_at_the_elo_of_the_score_rate():
    # 2,000 tasks against an anchor at 1100: 750 wins, 1,000 draws, 250 losses -> score rate p = 0.625,
    # whose Elo is 1100 + 400 * log10(p / (1 - p)) = 1188.74. Any order of the games ends near it.
    a, x = {}, {}
    for n in range(2000):
        a[f"s{n}"] = (5, OUT)
        x[f"s{n}"] = (9 if n < 750 else 5 if n < 1750 else 1, OUT)
    expected = 1100 + 400 * math.log10(0.625 / 0.375)
    got = wb_elo({"A": a, "X": x}, {"A": 1100.0}, "X", margin=3, tie_margin=2, k_factor=4, rounds=20,
                 dynamic=False, interval=16, seed=1)
    assert expected == pytest.approx(1188.74, abs=0.01)
    assert got["elo"] == pytest.approx(expected, abs=8)
    assert (got["wins"], got["draws"], got["losses"]) == (750, 1000, 250)
    assert got["ci_low"] < got["elo"] < got["ci_high"]


def test_no_task_in_common_gives_no_elo():
    got = wb_elo({"A": {"s1": (5, OUT)}, "X": {"s2": (9, OUT)}}, {"A": 1100.0}, "X", margin=3, tie_margin=2,
                 k_factor=4, rounds=2, dynamic=True, interval=16, seed=0)
    assert got["elo"] is None and got["games"] == 0


# ---------------------------------------------------------------------------------------------- the leaderboard

def test_leaderboard_is_read_from_local_copies_with_checksums(tmp_path):
    board = load_leaderboard(write_leaderboard(tmp_path, ["s1", "s2"]))
    assert board.scores == {"model-a": {"s1": (3, "an answer"), "s2": (3, "an answer")},
                            "model-b": {"s1": (7, "another answer"), "s2": (7, "another answer")}}
    assert board.init == {"model-a": 1150.0}
    p = board.provenance
    assert (p["models"], p["anchored"], p["unscored_rows"]) == (2, 1, 1) and len(p["results_sha256"]) == 64


def test_leaderboard_row_without_session_id_names_file_and_row(tmp_path):
    cfg = write_leaderboard(tmp_path, ["s1"])
    (Path(cfg.results_url) / "model-a.json").write_text(json.dumps([{"session_id": "s1", "score": 2}, {"score": 5}]))
    with pytest.raises(DataError, match=r"model-a\.json: row 1: .*session_id"):
        load_leaderboard(cfg)


def test_hub_tasks_and_checklists_offline_without_a_cache_refuse_naming_the_override():
    with pytest.raises(DataError, match=r"allenai/WildBench\[v2/test\].*eval\.wildbench_source=<local"):
        load_wildbench("allenai/WildBench", "v2", "test", limit=2)
