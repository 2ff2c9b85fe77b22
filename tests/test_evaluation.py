"""Evaluation: config, bundled samples, AlpacaEval files, WildBench prompts, score parsing and WB-Score maths."""

import json
import re
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from drift_exp.errors import ConfigError, DataError
from drift_exp.evaluation import EvalConfig, JudgeConfig, flat_metrics, validate_eval
from drift_exp.evaluation import alpaca_eval as ae
from drift_exp.evaluation import wildbench as wb
from drift_exp.evaluation.benchmarks import (
    load_alpaca_eval,
    load_proxy_prompts,
    load_wildbench,
    read_rows,
    sample_path,
)
from drift_exp.evaluation.wb_metrics import GROUPS, leaderboard, task_groups, wb_scores
from drift_exp.records import Completion

from .conftest import CONF

FIXTURES = Path(__file__).parent / "fixtures" / "eval"


# ---------------------------------------------------------------------------------------------- config


def eval_conf(name: str) -> EvalConfig:
    merged = OmegaConf.merge(OmegaConf.structured(EvalConfig), OmegaConf.load(CONF / "eval" / f"{name}.yaml"))
    return OmegaConf.to_object(merged)


def test_default_config_is_proxy_only_and_validates():
    cfg = EvalConfig()
    validate_eval(cfg)
    assert cfg.benchmarks == ["proxy"] and cfg.judge.enabled is False and cfg.alpaca_eval_judge is False
    # WildBench's decoding defaults
    assert (cfg.temperature, cfg.top_p, cfg.max_new_tokens) == (0.0, 1.0, 4096)
    assert (cfg.judge.model, cfg.judge.temperature, cfg.judge.max_tokens) == ("gpt-4o-2024-05-13", 0.0, 1024)


def test_conf_eval_files_compose(monkeypatch):
    monkeypatch.delenv("DRIFT_JUDGE_BASE_URL", raising=False)
    default = eval_conf("default")
    validate_eval(default)
    assert default.benchmarks == ["proxy"] and default.max_new_tokens < 4096
    full = eval_conf("full")
    validate_eval(full)
    assert full.benchmarks == ["alpaca_eval", "wildbench", "proxy"] and full.max_new_tokens == 4096
    assert full.judge.enabled and full.judge.base_url is None  # judge runs only once a base_url is given
    monkeypatch.setenv("DRIFT_JUDGE_BASE_URL", "https://judge.example/v1")
    assert eval_conf("full").judge.base_url == "https://judge.example/v1"


@pytest.mark.parametrize("change,key", [
    ({"benchmarks": ["mt_bench"]}, "eval.benchmarks"),
    ({"benchmarks": ["proxy", "proxy"]}, "eval.benchmarks"),
    ({"limit": 0}, "eval.limit"),
    ({"temperature": -1.0}, "eval.temperature"),
    ({"top_p": 0.0}, "eval.top_p"),
    ({"max_new_tokens": 0}, "eval.max_new_tokens"),
    ({"batch_size": 0}, "eval.batch_size"),
    ({"wildbench_source": " "}, "eval.wildbench_source"),
    ({"judge": JudgeConfig(max_concurrency=0)}, "eval.judge.max_concurrency"),
    ({"judge": JudgeConfig(max_retries=-1)}, "eval.judge.max_retries"),
    ({"judge": JudgeConfig(base_url="api.openai.com")}, "eval.judge.base_url"),
    ({"judge": JudgeConfig(price_in_per_1k=-0.1)}, "eval.judge.price_in_per_1k"),
    ({"judge": JudgeConfig(max_words=0)}, "eval.judge.max_words"),
])
def test_validation_names_the_key(change, key):
    with pytest.raises(ConfigError, match=rf"^{re.escape(key)} "):
        validate_eval(EvalConfig(**change))


# ---------------------------------------------------------------------------------------------- samples


def test_alpaca_eval_sample_has_the_official_schema():
    rows = read_rows(sample_path("alpaca_eval"))
    assert len(rows) == 12
    for row in rows:
        assert set(row) == {"instruction", "output", "generator", "dataset"}
        assert all(isinstance(v, str) and v for v in row.values())
    assert {r["dataset"] for r in rows} <= {"helpful_base", "koala", "oasst", "selfinstruct", "vicuna"}
    assert load_alpaca_eval("sample", limit=3) == rows[:3]


def test_wildbench_sample_has_the_v2_schema_and_covers_every_group():
    rows = read_rows(sample_path("wildbench"))
    assert len(rows) == 12
    keys = {"id", "session_id", "conversation_input", "references", "length", "checklist", "intent", "primary_tag",
            "secondary_tags"}
    for row in rows:
        assert set(row) == keys
        assert re.fullmatch(r"[0-9a-f]{16}", row["session_id"]) and row["id"] == row["session_id"]
        conv = row["conversation_input"]
        assert conv[-1]["role"] == "user" and row["length"] == len(conv)
        for turn in conv:
            assert set(turn) == {"role", "content", "language", "redacted", "timestamp", "toxic"}
            assert isinstance(turn["redacted"], bool) and isinstance(turn["toxic"], bool)
            assert isinstance(turn["timestamp"], str)
        assert set(row["references"]) == {"gpt-4"} and isinstance(row["references"]["gpt-4"], str)
        assert 5 <= len(row["checklist"]) <= 10 and all(isinstance(c, str) for c in row["checklist"])
        assert isinstance(row["intent"], str) and isinstance(row["secondary_tags"], list)
    assert sum(len(r["conversation_input"]) > 1 for r in rows) >= 3
    assert {g for r in rows for g in task_groups(r)} == set(GROUPS)
    assert load_wildbench("sample", limit=2) == rows[:2]


def test_proxy_sample_has_16_prompts_some_multi_turn():
    prompts = load_proxy_prompts("sample")
    assert len(prompts) == 16 and len({p["id"] for p in prompts}) == 16
    assert sum(len(p["messages"]) > 1 for p in prompts) >= 2
    assert all(p["messages"][-1]["role"] == "user" for p in prompts)


def test_loaders_name_file_row_and_field(tmp_path):
    rows = read_rows(sample_path("wildbench"))
    rows[2]["secondary_tags"] = ["Cooking"]
    bad = tmp_path / "wb.json"
    bad.write_text(json.dumps(rows))
    with pytest.raises(DataError, match=r"wb\.json: row 2: unknown tag 'Cooking'"):
        load_wildbench(str(bad))
    rows = read_rows(sample_path("wildbench"))
    rows[1]["conversation_input"] = rows[1]["conversation_input"][:-1]  # ends with the assistant turn
    bad.write_text(json.dumps(rows))
    with pytest.raises(DataError, match=r"row 1: conversation_input must end with the user query"):
        load_wildbench(str(bad))
    jl = tmp_path / "ae.jsonl"
    jl.write_text('{"instruction": "hi"}\n{"output": "no instruction"}\n')
    with pytest.raises(DataError, match=r"ae\.jsonl: row 1: missing field 'instruction'"):
        load_alpaca_eval(str(jl))
    with pytest.raises(DataError, match="no such file"):
        load_proxy_prompts(str(tmp_path / "missing.json"))


# ---------------------------------------------------------------------------------------------- AlpacaEval


def test_alpaca_eval_model_outputs_in_the_official_format(tmp_path):
    rows = [{"instruction": "Say abc", "output": "ref", "generator": "g", "dataset": "koala"},
            {"instruction": "Greet", "output": "ref", "generator": "g", "dataset": "oasst"},
            {"instruction": "Nothing", "output": "ref", "generator": "g", "dataset": "vicuna"},
            {"instruction": "Count", "output": "ref", "generator": "g", "dataset": "selfinstruct"}]
    reqs = ae.requests(rows)
    assert [r.messages for r in reqs][1] == [{"role": "user", "content": "Greet"}]
    outs = ["abc", "hello world", "", "12345678"]
    comps = [Completion(record_id=r.record_id, slot="eval", outputs=[o]) for r, o in zip(reqs, outs, strict=True)]
    written = ae.output_rows(rows, comps, "my-model")
    ae.write_model_outputs(tmp_path / "model_outputs.json", written)
    assert json.loads((tmp_path / "model_outputs.json").read_text()) == [
        {"instruction": "Say abc", "output": "abc", "generator": "my-model", "dataset": "koala", "datasplit": "eval"},
        {"instruction": "Greet", "output": "hello world", "generator": "my-model", "dataset": "oasst",
         "datasplit": "eval"},
        {"instruction": "Nothing", "output": "", "generator": "my-model", "dataset": "vicuna", "datasplit": "eval"},
        {"instruction": "Count", "output": "12345678", "generator": "my-model", "dataset": "selfinstruct",
         "datasplit": "eval"},
    ]
    # avg_length: (3 + 11 + 0 + 8) / 4 = 22 / 4 = 5.5 -> int -> 5
    assert ae.avg_length(written) == 5


def test_leaderboard_csv_is_read_for_our_generator():
    got = ae.read_leaderboard(FIXTURES / "leaderboard.csv", "sample-tiny-drift-controlled-s42-iter1")
    assert got == {"win_rate": 43.79123, "lc_win_rate": 41.49377, "win_rate_se": 1.52044, "lc_win_rate_se": 0.73901,
                   "avg_length": 1987, "n_total": 805}
    assert ae.read_leaderboard(FIXTURES / "leaderboard.csv", "gpt4_turbo")["win_rate"] == 50.0


def test_leaderboard_errors(tmp_path):
    with pytest.raises(DataError, match="no row for generator 'other'.*Qwen2.5-7B-Instruct"):
        ae.read_leaderboard(FIXTURES / "leaderboard.csv", "other")
    bad = tmp_path / "leaderboard.csv"
    bad.write_text(",win_rate,n_total\nm,40.0,805\n")
    with pytest.raises(DataError, match="no 'length_controlled_winrate' column"):
        ae.read_leaderboard(bad, "m")


def test_evaluator_command_is_the_official_invocation(tmp_path):
    assert ae.evaluator_command(tmp_path / "o.json", tmp_path, "weighted_alpaca_eval_gpt4_turbo") == [
        "alpaca_eval", "--model_outputs", str(tmp_path / "o.json"), "--annotators_config",
        "weighted_alpaca_eval_gpt4_turbo", "--output_path", str(tmp_path)]


# ---------------------------------------------------------------------------------------------- WildBench


def test_wildbench_requests_and_outputs_file_format():
    tasks = load_wildbench("sample", limit=3)
    reqs = wb.requests(tasks)
    assert [m["role"] for m in reqs[1].messages] == ["user", "assistant", "user"]
    assert reqs[1].messages[-1]["content"] == tasks[1]["conversation_input"][-1]["content"]
    comps = [Completion(record_id=r.record_id, slot="eval", outputs=[f"out {i}"]) for i, r in enumerate(reqs)]
    configs = {"engine": "hf", "repetition_penalty": 1.0, "temperature": 0.0, "top_p": 1.0, "max_tokens": 4096}
    rows = wb.output_rows(tasks, comps, ["<p0>", "<p1>", "<p2>"], "org/model", configs)
    assert rows[1] == {"session_id": tasks[1]["session_id"],
                       "chat_history": [m["content"] for m in tasks[1]["conversation_input"]],
                       "model_input": "<p1>", "output": ["out 1"], "generator": "org/model", "configs": configs,
                       "dataset": "wild_bench", "primary_tag": "Creative Writing"}


def test_score_prompt_has_history_query_output_and_checklist_bullets():
    task = load_wildbench("sample")[1]  # two earlier turns, then the query
    prompt = wb.render_score_prompt(task, "There once was a keeper named Lou")
    conv = task["conversation_input"]
    history = f"USER: {conv[0]['content']}\n\nASSISTANT: {conv[1]['content']}\n\n"
    assert f"<|begin_of_history|>\n\n{history}\n\n<|end_of_history|>" in prompt
    assert f"<|begin_of_query|>\n\n{conv[2]['content']}\n\n<|end_of_query|>" in prompt
    assert "<|begin_of_response|>\n\nThere once was a keeper named Lou\n\n<|end_of_response|>" in prompt
    bullets = "".join(f"- {c}\n" for c in task["checklist"])
    assert f"<|begin_of_checklist|>\n\n{bullets}\n\n<|end_of_checklist|>" in prompt
    assert '"strengths"' in prompt and '"weaknesses"' in prompt and '"score"' in prompt and "JSON" in prompt
    assert "{$" not in prompt
    single = load_wildbench("sample")[0]
    assert "<|begin_of_history|>\n\n\n\n<|end_of_history|>" in wb.render_score_prompt(single, "x")
    cut = wb.render_score_prompt(single, "one two three four five", max_words=3)
    assert "one two three... (truncated)" in cut


@pytest.mark.parametrize("reply,score", [
    ('{"strengths": "clear", "weaknesses": "none", "score": "8"}', 8.0),
    ('{"strengths": "line one\nline two", "weaknesses": "w", "score": "7"}', 7.0),  # raw newline in a string
    ('Here is my verdict:\n```json\n{"strengths": "s", "weaknesses": "w", "score": "6"}\n```', 6.0),
    ('Analysis first. {"strengths": "s", "weaknesses": "w", "score": 9} Done.', 9.0),
    ('{"strengths": "s", "weaknesses": "w", "score": 10}', 10.0),
    ('{"strengths": "s", "weaknesses": "w", "score": 7.5}', 7.5),
    ('{"strengths": "s", "weaknesses": "w", "score": "8/10"}', 8.0),
    ('{"strengths": "s", "weaknesses": "w", "score": ["5"]}', 5.0),
    ('{"strengths": "s", "weaknesses": "w", "score": "[3]"}', 3.0),
    ('{"strengths": "s", "weaknesses": "w", "score": "[1~10]"}', None),  # placeholder echoed
    ('{"strengths": "s", "weaknesses": "w", "score": "0"}', None),  # out of range
    ('{"strengths": "s", "weaknesses": "w", "score": 11}', None),
    ('{"strengths": "s", "weaknesses": "w", "score": "N/A"}', None),
    ('{"strengths": "s", "weaknesses": "w"}', None),
    ('{"strengths": "good", "weaknesses": "cut off", "score": "7', 7.0),  # truncated JSON: regex fallback
    ("The response is decent. Score: 6", 6.0),
    ("Overall score = 4/10.", 4.0),
    ("", None),
    ("I cannot evaluate this.", None),
])
def test_score_parsing(reply, score):
    got, parsed = wb.parse_score(reply)
    assert got == score
    assert isinstance(parsed, dict)


def test_unparsable_reply_gets_wildbench_placeholder():
    assert wb.parse_score("no json here") == (None, {"N/A": "N/A"})


# ---------------------------------------------------------------------------------------------- WB-Score maths


def load_records():
    rows = json.loads((FIXTURES / "wb_tasks.json").read_text())
    return rows, {r["session_id"]: task_groups(r) for r in rows}


def test_task_groups_follow_the_mapping_and_deduplicate():
    rows, groups = load_records()
    assert groups["aaaaaaaaaaaa0001"] == ["Coding & Debugging", "Planning & Reasoning"]
    assert groups["aaaaaaaaaaaa0002"] == ["Creative Tasks"]  # Creative Writing + Editing + Brainstorming
    assert groups["aaaaaaaaaaaa0005"] == ["Creative Tasks", "Information/Advice seeking", "Planning & Reasoning"]
    assert groups["aaaaaaaaaaaa0006"] == ["Creative Tasks"]  # Others


def test_wb_score_and_task_macro_match_hand_computation():
    records, groups = load_records()
    row = wb_scores(records, groups)
    # Scored: 8, 6, 4, 9, 7, 1 (empty output), 3 (truncated output); task 7 was never judged.
    # mean = 38 / 7 = 5.428571...; adjusted = (38/7 - 5) * 2 = 6/7 = 0.857142...
    assert row["total"] == 8 and row["n_scored"] == 7
    assert row["score"] == pytest.approx(38 / 7)
    assert row["adjusted_score"] == pytest.approx(0.8571428571)
    # Group means leave out the empty (task 6) and truncated (task 8) outputs:
    #   Coding   {t1: 8}            -> (8 - 5) * 2 = 6
    #   Planning {t1: 8, t3: 4, t5: 7} -> (19/3 - 5) * 2 = 8/3 = 2.6667
    #   Math     {t3: 4}            -> (4 - 5) * 2 = -2
    #   Info     {t4: 9, t5: 7}     -> (8 - 5) * 2 = 6
    #   Creative {t2: 6, t5: 7}     -> (6.5 - 5) * 2 = 3
    cats = row["task_categorized_scores"]
    assert cats == pytest.approx({"Coding & Debugging": 6.0, "Planning & Reasoning": 2.6666666667,
                                  "Math & Data Analysis": -2.0, "Information/Advice seeking": 6.0,
                                  "Creative Tasks": 3.0})
    # task_macro = (3*0.5 + 8/3*1.25 + (-2)*1.0 + 6*0.75 + 6*1.25) / (0.5+1.25+1.0+0.75+1.25)
    #            = (1.5 + 3.3333 - 2 + 4.5 + 7.5) / 4.75 = 14.8333 / 4.75 = 178/57 = 3.1228070
    assert row["task_macro_score"] == pytest.approx(3.1228070175)
    # avg_len over the five counted outputs: (17 + 7 + 6 + 21 + 12) / 5 = 63 / 5 = 12.6
    assert row["avg_len"] == pytest.approx(12.6)
    board = leaderboard(row)
    assert board["score"] == pytest.approx(8.5714, abs=1e-4)  # x10
    assert board["task_macro"] == pytest.approx(31.2281, abs=1e-4)  # x10: the paper's Task Score
    assert board["groups"] == pytest.approx({"Creative Tasks": 30.0, "Planning & Reasoning": 26.6667,
                                             "Math & Data Analysis": -20.0, "Information/Advice seeking": 60.0,
                                             "Coding & Debugging": 60.0}, abs=1e-4)


def test_task_macro_divides_by_all_five_weights_when_a_group_is_missing():
    records = [{"session_id": "c1", "score": 9, "model_output": "a"},
               {"session_id": "c2", "score": 9, "model_output": "b"}]
    row = wb_scores(records, {"c1": ["Creative Tasks"], "c2": ["Creative Tasks"]})
    # Creative: (9 - 5) * 2 = 8; task_macro = 8 * 0.5 / 4.75 = 0.8421053 (x10: 8.421053)
    assert row["task_macro_score"] == pytest.approx(0.8421052632)
    board = leaderboard(row)
    assert board["groups"]["Creative Tasks"] == 80.0 and board["groups"]["Coding & Debugging"] is None
    assert board["task_macro"] == pytest.approx(8.4211, abs=1e-4)


def test_nothing_scored_gives_no_scores():
    row = wb_scores([{"session_id": "x", "score": None, "model_output": "o"}], {"x": ["Creative Tasks"]})
    assert row == {"total": 1, "n_scored": 0} and leaderboard(row) == {}


def test_flat_metrics_for_wandb():
    m = {"proxy": {"reward_mean": 0.5, "reward_std": 0.1, "n": 16},
         "wildbench": {"judge": "gpt-4o", "task_macro": 31.2,
                       "groups": {"Coding & Debugging": 60.0, "Creative Tasks": None}}}
    assert flat_metrics(m) == {"proxy/reward_mean": 0.5, "proxy/reward_std": 0.1, "proxy/n": 16,
                               "wildbench/task_macro": 31.2, "wildbench/groups/Coding & Debugging": 60.0}
