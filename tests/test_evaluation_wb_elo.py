"""WildBench's own judge template (read at run time, never shipped) and WB-Elo, on fixtures with known answers.

The template used here is tests/fixtures/eval/wb_score_template.md: this project's own words around the
official placeholders. WB-Elo is checked against answers derived without the code under test: the Elo
update written out by hand for two games, and the Elo of a win rate (400·log10(p/(1-p)) above the
opponent) for a long run.
"""

import hashlib
import itertools
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from drift_exp.errors import DataError
from drift_exp.evaluation import wildbench as wb
from drift_exp.evaluation.benchmarks import load_wildbench
from drift_exp.evaluation.config import EloConfig, WildBenchConfig
from drift_exp.evaluation.fetch import FetchError, cache_path
from drift_exp.evaluation.wb_elo import build_games, play, wb_elo, wb_elo_pool
from drift_exp.evaluation.wb_leaderboard import load_leaderboard

from .conftest import ROOT
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


# --------------------------------------------------- WildBench's settings and its length rule, by hand

PINNED = dict(margin=2, tie_margin=2, k_factor=4, dynamic=True, interval=100, length_margin=1500)


def test_defaults_are_the_pinned_leaderboard_settings():
    e = EloConfig()
    got = (e.margin, e.tie_margin, e.k_factor, e.dynamic, e.interval, e.rounds, e.length_margin)
    assert got == (2, 2, 4.0, True, 100, 128, 1500)
    assert "d6b8dcaf377d173d031980f97c16e1a82618c03d" in e.init_url and "d6b8dcaf377d" in e.results_url


def test_cfg_job_of_eval_full_shows_the_pinned_settings():
    proc = subprocess.run([sys.executable, "-m", "drift_exp", "--cfg", "job", "eval=full"], cwd=ROOT,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    elo = proc.stdout[proc.stdout.index("    elo:\n"):]
    elo = elo[:elo.index("seed:")]
    for line in ("enabled: true", "margin: 2", "tie_margin: 2", "k_factor: 4.0", "rounds: 128", "dynamic: true",
                 "interval: 100", "length_margin: 1500"):
        assert f"      {line}\n" in elo, elo


def test_with_margin_2_and_tie_margin_2_a_gap_of_2_wins_and_1_draws():
    results = {"a": {"s1": (7, OUT), "s2": (6, OUT), "s3": (5, OUT)}, "b": {"s1": (5, OUT), "s2": (5, OUT),
                                                                           "s3": (5, OUT)}}
    g = build_games(results, margin=2, tie_margin=2)
    assert sorted(g.outcome.tolist()) == [0.5, 0.5, 1.0]  # s1 gap 2: a wins; s2 gap 1, s3 gap 0: draws


def one_game(score_x: int, len_x: int, len_a: int, **settings) -> dict:
    """X (unanchored, 1000) against the fixed anchor A (1000) on one task: X's Elo after that one game is
    1000 + 4 * (result - 0.5), i.e. 1002 for a win and 1000 for a draw."""
    results = {"A": {"s": (3, "a" * len_a)}, "X": {"s": (score_x, "x" * len_x)}}
    return wb_elo(results, {"A": 1000.0}, "X", rounds=2, seed=0, **{**PINNED, "dynamic": False, **settings})


def test_the_length_rule_makes_a_decided_game_a_draw():
    # X outscores A by 6 (a win), but its output is 1501 characters longer: more than 1500 -> a draw.
    tie = one_game(9, 1601, 100)
    assert tie["elo"] == pytest.approx(1000.0) and (tie["wins"], tie["draws"], tie["length_ties"]) == (0, 1, 1)
    # Exactly 1500 longer is not "more than": the scores decide (a win, 1000 + 4 * 0.5).
    win = one_game(9, 1600, 100)
    assert win["elo"] == pytest.approx(1002.0) and (win["wins"], win["length_ties"]) == (1, 0)
    # Either direction counts: A's output the longer one.
    assert one_game(9, 100, 1601)["elo"] == pytest.approx(1000.0)
    # A loss becomes a draw too (X scores 1, A 3).
    assert one_game(1, 5000, 10)["elo"] == pytest.approx(1000.0)
    assert one_game(1, 10, 10)["elo"] == pytest.approx(998.0)
    # -1 switches the rule off.
    assert one_game(9, 5000, 100, length_margin=-1)["elo"] == pytest.approx(1002.0)


def test_the_length_rule_counts_stripped_lengths_and_makes_no_game_of_a_non_game():
    # 2,000 spaces around a short reply: WildBench strips outputs when it loads them, so no length gap.
    padded = wb_elo({"A": {"s": (3, "a")}, "X": {"s": (9, " " * 1000 + "x" + " " * 1000)}}, {"A": 1000.0}, "X",
                    rounds=1, seed=0, **{**PINNED, "dynamic": False})
    assert padded["elo"] == pytest.approx(1002.0)
    # margin 3, tie margin 1: a gap of 2 is no game, and the length rule does not create one.
    g = build_games({"A": {"s": (3, "a")}, "X": {"s": (5, "x" * 3000)}}, margin=3, tie_margin=1, length_margin=1500)
    assert len(g.first) == 0


def test_dynamic_anchor_with_interval_100_by_hand():
    # X beats the dynamic anchor A (Arena Elo 1000) on two tasks; K = 4, interval 100. Either order:
    #   game 1: E = 0.5: X = 1002, A = 998, A's 1st game -> pulled halfway back: (998 + 1000) / 2 = 999
    #   game 2: E_X = 1 / (1 + 10^((999 - 1002) / 400)); X = 1002 + 4 (1 - E_X), A = 999 - 4 (1 - E_X) (no pull)
    e_x = 1 / (1 + 10 ** ((999 - 1002) / 400))
    x2, a2 = 1002 + 4 * (1 - e_x), 999 - 4 * (1 - e_x)
    assert x2 == pytest.approx(1003.98274, abs=1e-5)
    g = build_games({"A": {"s1": (1, OUT), "s2": (1, OUT)}, "X": {"s1": (9, OUT), "s2": (9, OUT)}}, 2, 2, 1500)
    finals = play(g, {"A": 1000.0}, k_factor=4, rounds=3, dynamic=True, interval=100, seed=0)
    assert finals.ravel().tolist() == pytest.approx([a2, x2] * 3, abs=1e-9)


def wildbench_single_round(votes: list[tuple[str, str, str, int, int]], k: float, init: dict[str, float],
                           dynamic: bool, interval: int, length_margin: int) -> dict[str, float]:
    """WildBench's compute_single_round for one given order of the votes, written out plainly here:
    votes are (model_1, model_2, winner or 'tie', length_1, length_2)."""
    elo = dict(init)
    for m1, m2, *_ in votes:
        elo.setdefault(m1, 1000.0)
        elo.setdefault(m2, 1000.0)
    count = {m: 0 for m in elo}
    for m1, m2, winner, l1, l2 in votes:
        if m1 in init and m2 in init:
            continue
        e1 = 1 / (1 + 10 ** ((elo[m2] - elo[m1]) / 400))
        e2 = 1 / (1 + 10 ** ((elo[m1] - elo[m2]) / 400))
        if length_margin > 0 and abs(l1 - l2) > length_margin:
            winner = "tie"
        s1, s2 = (1, 0) if winner == m1 else (0, 1) if winner == m2 else (0.5, 0.5)
        for m, s, e in ((m1, s1, e1), (m2, s2, e2)):
            if m not in init:
                elo[m] += k * (s - e)
            elif dynamic:
                elo[m] += k * (s - e)
                if interval > 0 and count[m] % interval == 0:
                    elo[m] = (elo[m] + init[m]) / 2
        count[m1] += 1
        count[m2] += 1
    return elo


def test_each_round_is_wildbench_single_round_on_some_order_of_the_games():
    # Two policies P and Q and the dynamic anchor A (interval 1: pulled back after every game), one task
    # each pair: P-A (P wins), Q-A (A wins), P-Q (P wins on score, but 1600 characters longer: a draw).
    results = {"A": {"s1": (5, "a" * 100), "s2": (8, "a" * 100)},
               "P": {"s1": (8, "p" * 100), "s3": (9, "p" * 1700)},
               "Q": {"s2": (4, "q" * 100), "s3": (6, "q" * 100)}}
    votes = [("A", "P", "P", 100, 100), ("A", "Q", "A", 100, 100), ("P", "Q", "P", 1700, 100)]
    init = {"A": 1100.0}
    expected = [wildbench_single_round(list(order), 4, init, True, 1, 1500) for order in itertools.permutations(votes)]
    g = build_games(results, margin=2, tie_margin=2, length_margin=1500)
    # P-A: P wins, A-Q: A wins (Q's loss), P-Q: a draw by the length rule.
    assert sorted(g.outcome.tolist()) == [0.0, 0.5, 1.0]
    finals = play(g, init, k_factor=4, rounds=40, dynamic=True, interval=1, seed=3)
    seen = set()
    for row in finals:
        matches = [i for i, e in enumerate(expected)
                   if all(abs(row[g.models.index(m)] - e[m]) < 1e-9 for m in ("A", "P", "Q"))]
        assert matches, f"round {row.tolist()} is no order of WildBench's rounds"
        seen.add(matches[0])
    assert len(seen) >= 3  # the rounds do shuffle the order
    pool = wb_elo_pool(results, init, ["P", "Q"], rounds=40, seed=3, k_factor=4, margin=2, tie_margin=2,
                       dynamic=True, interval=1, length_margin=1500)
    assert pool["P"]["elo"] == pytest.approx(finals[:, g.models.index("P")].mean())
    assert (pool["P"]["games"], pool["P"]["wins"], pool["P"]["draws"], pool["P"]["length_ties"]) == (2, 1, 1, 1)
    assert (pool["Q"]["games"], pool["Q"]["losses"], pool["Q"]["draws"]) == (2, 1, 1)


def test_a_pool_rates_policies_against_each_other_a_lone_rating_does_not():
    # P and Q draw with the fixed anchor A (1000) on 20 tasks; on 50 more (A has no score there) P beats Q.
    # Rated alone against A, P only draws at expectation 0.5 and stays at 1000; in one pool P also plays
    # (and beats) Q, so P ends above 1000 and Q below.
    a = {f"s{n}": (5, OUT) for n in range(20)}
    p = {**{f"s{n}": (5, OUT) for n in range(20)}, **{f"t{n}": (9, OUT) for n in range(50)}}
    q = {**{f"s{n}": (5, OUT) for n in range(20)}, **{f"t{n}": (3, OUT) for n in range(50)}}
    settings = dict(rounds=4, seed=0, **{**PINNED, "dynamic": False})
    alone = wb_elo({"A": a, "P": p}, {"A": 1000.0}, "P", **settings)
    assert alone["elo"] == pytest.approx(1000.0) and alone["games"] == 20
    pool = wb_elo_pool({"A": a, "P": p, "Q": q}, {"A": 1000.0}, ["P", "Q"], **settings)
    assert pool["P"]["games"] == pool["Q"]["games"] == 90  # 20 with A, 20 + 50 with each other
    assert pool["P"]["elo"] > 1000 > pool["Q"]["elo"]
    with pytest.raises(KeyError, match="R"):
        wb_elo_pool({"A": a}, {}, ["R"], **settings)


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
