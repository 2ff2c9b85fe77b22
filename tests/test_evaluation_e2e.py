"""evaluate() end to end on the tiny model (CPU) with the bundled samples: real HF generation, real
tiny reward model, and a real HTTP judge: a local OpenAI-compatible server returning canned verdicts."""

import hashlib
import json
import os
import stat
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from drift_exp.config import GenerationConfig, ScorerConfig, TinyModelConfig
from drift_exp.evaluation import EvalConfig, JudgeConfig
from drift_exp.evaluation.benchmarks import load_alpaca_eval, load_proxy_prompts, load_wildbench
from drift_exp.evaluation.config import WildBenchConfig
from drift_exp.evaluation.fetch import FetchError
from drift_exp.evaluation.stage import evaluate
from drift_exp.evaluation.wb_metrics import GROUPS
from drift_exp.evaluation.wildbench import checklist_digest

from .helpers import WB_TEMPLATE as TEMPLATE
from .helpers import LocalJudge, write_leaderboard

FIXTURES = Path(__file__).parent / "fixtures" / "eval"
GENERATOR = "sample-tiny-drift-controlled-s42-iter1"  # the generator's row in fixtures/eval/leaderboard.csv


@pytest.fixture(scope="module")
def judge_server():
    server = LocalJudge()  # a fixed verdict with score 7 and a usage field
    yield server
    server.close()


@pytest.fixture(scope="module")
def run(tmp_path_factory, model_cache, judge_server):
    """One evaluation of the tiny policy (the tests below rerun it with changes)."""
    from drift_exp.models import build_tiny

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DRIFT_TEST_JUDGE_KEY", "sk-local")
        policy = str(build_tiny(TinyModelConfig()))
        root = tmp_path_factory.mktemp("run")
        out = root / "iter_1" / "eval"
        # WildBench's template and leaderboard as local copies (the tests never touch the network).
        sessions = [t["session_id"] for t in load_wildbench("sample", limit=3)]
        wildbench = WildBenchConfig(template_file=str(TEMPLATE), elo=write_leaderboard(root / "leaderboard", sessions))
        judge = JudgeConfig(enabled=True, base_url=judge_server.url, api_key_env="DRIFT_TEST_JUDGE_KEY",
                            backoff_s=0.0)
        # Greedy decoding makes the random tiny model repeat a special token (an empty reply, see
        # test_greedy_tiny_model_gives_empty_replies_scored_1); sampling (seeded) gives text to judge.
        cfg = EvalConfig(benchmarks=["alpaca_eval", "wildbench", "proxy"], limit=3, max_new_tokens=8,
                         temperature=0.7, top_p=0.9, judge=judge, wildbench=wildbench)
        args = dict(gen_cfg=GenerationConfig(), model_dtype="float32", scorer_cfg=ScorerConfig(path="tiny"),
                    policy_path=policy, out_dir=out, generator_name=GENERATOR, seed=42)
        first = evaluate(cfg, **args)
    calls_after_first = judge_server.calls
    mtime = (out / "completions.jsonl").stat().st_mtime_ns
    return {"out": out, "cfg": cfg, "args": args, "first": first, "calls": calls_after_first, "mtime": mtime}


@pytest.fixture(autouse=True)
def judge_key(monkeypatch):
    monkeypatch.setenv("DRIFT_TEST_JUDGE_KEY", "sk-local")


def test_files_in_the_official_formats(run):
    out = run["out"]
    ae = json.loads((out / "alpaca_eval" / "model_outputs.json").read_text())
    instructions = [r["instruction"] for r in load_alpaca_eval("sample", limit=3)]
    assert [r["instruction"] for r in ae] == instructions
    for row in ae:
        assert set(row) == {"instruction", "output", "generator", "dataset", "datasplit"}
        assert row["generator"] == GENERATOR and row["datasplit"] == "eval" and isinstance(row["output"], str)
    wb = json.loads((out / "wildbench" / f"{GENERATOR}.json").read_text())
    tasks = load_wildbench("sample", limit=3)
    assert [r["session_id"] for r in wb] == [t["session_id"] for t in tasks]
    for row, task in zip(wb, tasks, strict=True):
        assert set(row) == {"session_id", "chat_history", "model_input", "output", "generator", "configs", "dataset",
                            "primary_tag"}
        assert row["chat_history"] == [m["content"] for m in task["conversation_input"]]
        assert row["model_input"].endswith("<|im_start|>assistant\n")  # the tiny model's ChatML template
        assert task["conversation_input"][-1]["content"] in row["model_input"]
        assert isinstance(row["output"], list) and len(row["output"]) == 1
        assert row["configs"] == {"engine": "hf", "repetition_penalty": 1.0, "temperature": 0.7, "top_p": 0.9,
                                  "max_tokens": 8}
        assert (row["dataset"], row["primary_tag"]) == ("wild_bench", task["primary_tag"])
    scores = json.loads((out / "wildbench" / "scores.json").read_text())
    assert [s["session_id"] for s in scores] == [t["session_id"] for t in tasks]
    assert len((out / "proxy" / "rewards.jsonl").read_text().splitlines()) == 3
    assert json.loads((out / "metrics.json").read_text()) == run["first"]


def test_metrics_contract(run):
    m = run["first"]
    assert set(m) == {"alpaca_eval", "wildbench", "proxy"}
    p = m["proxy"]
    assert p["n"] == 3 and isinstance(p["reward_mean"], float) and p["reward_std"] >= 0
    a = m["alpaca_eval"]
    assert a["n_outputs"] == 3 and isinstance(a["avg_length"], int) and "win_rate" not in a
    w = m["wildbench"]
    outputs = [r["output"][0] for r in json.loads((run["out"] / "wildbench" / f"{GENERATOR}.json").read_text())]
    assert all(o.strip() for o in outputs), outputs  # seeded sampling on CPU: deterministic, non-empty replies
    assert (w["n_outputs"], w["n_scored"], w["judge"], w["n_cached"], w["n_failed"]) == (3, 3, "gpt-4o-2024-05-13",
                                                                                         0, 0)
    assert run["calls"] == 3
    # every reply scored 7: adjusted (7 - 5) * 2 = 4 -> x10 = 40 overall and in every group present.
    # The first three sample tasks cover Coding, Planning & Reasoning, Creative and Math, not Info/Advice:
    # task_macro = 4 * (1.25 + 1.25 + 0.5 + 1.0) / 4.75 = 16 / 4.75 = 3.368421 -> x10 = 33.684211
    assert w["score"] == 40.0
    assert w["task_macro"] == pytest.approx(33.6842, abs=1e-4)
    assert w["groups"] == {"Creative Tasks": 40.0, "Planning & Reasoning": 40.0, "Math & Data Analysis": 40.0,
                           "Information/Advice seeking": None, "Coding & Debugging": 40.0}
    assert set(w["groups"]) == set(GROUPS)
    # cost: 3 x (500 * 0.005 + 40 * 0.015) / 1000 = 3 x 0.0031 = 0.0093
    assert w["cost_usd"] == pytest.approx(0.0093)


def test_proxy_matches_the_reward_model(run):
    from drift_exp.scoring import RewardScorer, question_text

    rows = [json.loads(line) for line in (run["out"] / "proxy" / "rewards.jsonl").read_text().splitlines()]
    prompts = load_proxy_prompts("sample", limit=3)
    assert [r["id"] for r in rows] == [p["id"] for p in prompts]
    again = RewardScorer(ScorerConfig(path="tiny")).score([question_text(p["messages"]) for p in prompts],
                                                          [r["output"] for r in rows])
    mean = sum(again) / 3
    assert run["first"]["proxy"]["reward_mean"] == pytest.approx(mean, abs=1e-5)
    assert run["first"]["proxy"]["reward_std"] == pytest.approx((sum((x - mean) ** 2 for x in again) / 3) ** 0.5,
                                                                abs=1e-5)


def test_rerun_reuses_generation_and_judge_cache_and_reads_the_alpaca_eval_leaderboard(run, judge_server, tmp_path,
                                                                                         monkeypatch):
    # A stand-in for the `alpaca_eval` CLI (the real one needs the network): it checks the official
    # arguments and writes the leaderboard.csv fixture where the real evaluator writes it.
    fake = tmp_path / "bin" / "alpaca_eval"
    fake.parent.mkdir()
    fake.write_text(f"""#!{sys.executable}
import json, shutil, sys
from pathlib import Path
a = sys.argv[1:]
assert a[0::2] == ["--model_outputs", "--annotators_config", "--output_path"], a
rows = json.loads(Path(a[1]).read_text())
assert rows and all(set(r) >= {{"instruction", "output", "generator"}} for r in rows)
(Path(a[5]) / a[3]).mkdir(parents=True, exist_ok=True)
shutil.copy({str(FIXTURES / "leaderboard.csv")!r}, Path(a[5]) / a[3] / "leaderboard.csv")
print("done")
""")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-dummy")
    second = evaluate(replace(run["cfg"], alpaca_eval_judge=True), **run["args"])
    assert (run["out"] / "completions.jsonl").stat().st_mtime_ns == run["mtime"]  # generation reused
    assert judge_server.calls == run["calls"]  # every verdict from the cache: zero calls
    w = second["wildbench"]
    assert (w["n_cached"], w["cost_usd"], w["task_macro"]) == (3, 0.0, run["first"]["wildbench"]["task_macro"])
    a = second["alpaca_eval"]
    assert (a["win_rate"], a["lc_win_rate"], a["avg_length"], a["judge"]) == (
        43.79123, 41.49377, 1987, "weighted_alpaca_eval_gpt4_turbo")
    assert second["proxy"] == run["first"]["proxy"]
    assert all(a == "Bearer sk-local" for a in judge_server.auth)


def test_judge_enabled_without_base_url_writes_outputs_only(run, tmp_path):
    cfg = EvalConfig(benchmarks=["wildbench"], limit=1, max_new_tokens=4, judge=JudgeConfig(enabled=True))
    m = evaluate(cfg, **{**run["args"], "out_dir": tmp_path / "eval"})
    assert m == {"wildbench": {"n_outputs": 1, "model_outputs": str(tmp_path / "eval" / "wildbench" /
                                                                    f"{GENERATOR}.json"),
                               "checklists": {"source": "sample", "n": 1,
                                              "sha256": checklist_digest(load_wildbench("sample", limit=1))},
                               "judge_skipped": "eval.judge.base_url is not set"}}


def test_wb_elo_template_and_checklist_checksums_in_the_metrics(run):
    w = run["first"]["wildbench"]
    tasks = load_wildbench("sample", limit=3)
    assert w["template"]["sha256"] == hashlib.sha256(TEMPLATE.read_bytes()).hexdigest()
    assert (w["template"]["template"], w["template"]["proxy"]) == ("official", False)
    assert w["checklists"] == {"source": "sample", "sha256": checklist_digest(tasks), "n": 3}
    # Every reply scored 7: against model-a (3 everywhere, Arena Elo 1150) a win on each of the 3 tasks,
    # against model-b (7, no Arena Elo) a draw on each.
    d = w["elo_detail"]
    assert (d["games"], d["wins"], d["draws"], d["losses"], d["models"], d["anchored"]) == (6, 3, 3, 0, 3, 1)
    assert isinstance(w["elo"], float) and w["elo"] > 1000  # started at 1000, never lost
    saved = json.loads((run["out"] / "wildbench" / "elo.json").read_text())
    assert saved["elo"] == w["elo"] and saved["leaderboard"]["models"] == 2 and saved["settings"]["k_factor"] == 4


def test_official_template_offline_and_uncached_stops_before_generating(run, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("DRIFT_EXP_CACHE", str(tmp_path / "empty-cache"))
    cfg = replace(run["cfg"], benchmarks=["wildbench"], wildbench=WildBenchConfig())
    with pytest.raises(FetchError, match="eval.wildbench.template_file"):
        evaluate(cfg, **{**run["args"], "out_dir": tmp_path / "eval"})
    assert not (tmp_path / "eval" / "completions.jsonl").exists()


def test_no_benchmarks_is_a_no_op(run, tmp_path):
    assert evaluate(EvalConfig(benchmarks=[]), **{**run["args"], "out_dir": tmp_path / "eval"}) == {}


def test_greedy_tiny_model_gives_empty_replies_scored_1(run, judge_server, tmp_path):
    calls = judge_server.calls
    cfg = replace(run["cfg"], temperature=0.0, top_p=1.0, benchmarks=["wildbench"])
    w = evaluate(cfg, **{**run["args"], "out_dir": tmp_path / "eval"})["wildbench"]
    rows = json.loads((tmp_path / "eval" / "wildbench" / f"{GENERATOR}.json").read_text())
    assert [r["output"] for r in rows] == [[""], [""], [""]]
    assert judge_server.calls == calls  # WildBench gives an empty output score 1 without asking the judge
    # (1 - 5) * 2 * 10 = -80; empty outputs are left out of every group, so no group has a score and the
    # task macro is 0 / 4.75 = 0, as in WildBench's _create_tables.py
    assert (w["n_scored"], w["score"], w["task_macro"]) == (3, -80.0, 0.0)
    assert set(w["groups"].values()) == {None}


def test_a_retrained_checkpoint_is_not_served_stale_generations(run, tmp_path):
    from drift_exp.evaluation.stage import policy_fingerprint

    ckpt = tmp_path / "checkpoint"
    ckpt.mkdir()
    (ckpt / "model.safetensors").write_bytes(b"v1")
    before = policy_fingerprint(str(ckpt))
    (ckpt / "model.safetensors").write_bytes(b"v2-longer")
    assert policy_fingerprint(str(ckpt)) != before
    assert policy_fingerprint("Qwen/Qwen2.5-7B-Instruct") == ["Qwen/Qwen2.5-7B-Instruct"]
