"""The LLM judge: only the HTTP transport is stubbed (httpx.MockTransport); prompt building, retries,
concurrency, the disk cache, parsing and WB-Score aggregation run for real."""

import json
import threading
import time

import httpx
import pytest

from drift_exp.evaluation import JudgeConfig
from drift_exp.evaluation import wildbench as wb
from drift_exp.evaluation.benchmarks import load_wildbench
from drift_exp.evaluation.judge import JudgeClient, JudgeError, JudgeRequest, endpoint
from drift_exp.evaluation.wb_metrics import leaderboard, task_groups, wb_scores

BASE = "https://judge.test/v1"


def reply(content: str, usage: dict | None = None, status: int = 200, headers: dict | None = None) -> httpx.Response:
    body = {"id": "x", "choices": [{"index": 0, "message": {"role": "assistant", "content": content}}]}
    if usage is not None:
        body["usage"] = usage
    return httpx.Response(status, json=body, headers=headers)


def verdict(score) -> str:
    return json.dumps({"strengths": "fine", "weaknesses": "none", "score": str(score)})


class Server:
    """Counts requests and answers with `answer(request_json, call_no)`."""

    def __init__(self, answer):
        self.answer = answer
        self.calls = 0
        self.requests: list[httpx.Request] = []
        self.lock = threading.Lock()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        with self.lock:
            self.calls += 1
            n = self.calls
            self.requests.append(request)
        return self.answer(json.loads(request.content), n)

    @property
    def transport(self):
        return httpx.MockTransport(self)


def cfg(**kw) -> JudgeConfig:
    base = {"enabled": True, "base_url": BASE, "api_key_env": "DRIFT_TEST_JUDGE_KEY", "backoff_s": 0.0}
    return JudgeConfig(**{**base, **kw})


@pytest.fixture(autouse=True)
def key(monkeypatch):
    monkeypatch.setenv("DRIFT_TEST_JUDGE_KEY", "sk-test")


def score_by_query(body, _n):
    """Score each WildBench sample task by which of its queries the prompt holds (a deterministic judge)."""
    prompt = body["messages"][0]["content"]
    for i, t in enumerate(load_wildbench("sample")):
        if t["conversation_input"][-1]["content"] in prompt:
            return reply(verdict(3 + i % 7), usage={"prompt_tokens": 1000, "completion_tokens": 100})
    return reply("?")


def outputs_rows(tasks, texts):
    return [{"session_id": t["session_id"], "output": [o], "generator": "m"} for t, o in zip(tasks, texts,
                                                                                              strict=True)]


def test_request_is_openai_chat_completions_json_mode(tmp_path):
    server = Server(lambda body, n: reply(verdict(8), usage={"prompt_tokens": 1200, "completion_tokens": 80}))
    client = JudgeClient(cfg(), tmp_path, transport=server.transport)
    [r] = client.run([JudgeRequest("k1", "judge this, answer in JSON")])
    assert r.content == verdict(8) and not r.cached and r.error is None
    req = server.requests[0]
    assert str(req.url) == "https://judge.test/v1/chat/completions" and req.method == "POST"
    assert req.headers["authorization"] == "Bearer sk-test"
    assert json.loads(req.content) == {"model": "gpt-4o-2024-05-13", "temperature": 0.0, "max_tokens": 1024,
                                       "messages": [{"role": "user", "content": "judge this, answer in JSON"}],
                                       "response_format": {"type": "json_object"}}
    # cost from the usage field: 1200 * 0.005/1k + 80 * 0.015/1k = 0.006 + 0.0012 = 0.0072
    assert client.cost_usd == pytest.approx(0.0072)


def test_endpoint_adds_v1_only_when_missing():
    assert endpoint("https://api.openai.com/v1") == "https://api.openai.com/v1/chat/completions"
    assert endpoint("http://localhost:8000/") == "http://localhost:8000/v1/chat/completions"
    assert endpoint("http://h/v1/chat/completions") == "http://h/v1/chat/completions"


def test_second_run_makes_zero_calls(tmp_path):
    tasks = load_wildbench("sample", limit=5)
    rows = outputs_rows(tasks, [f"answer {i}" for i in range(5)])
    server = Server(score_by_query)
    first = wb.judge(tasks, rows, JudgeClient(cfg(), tmp_path / "cache", transport=server.transport), cfg())
    assert server.calls == 5
    assert [r["score"] for r in first] == [3.0, 4.0, 5.0, 6.0, 7.0]
    again = JudgeClient(cfg(), tmp_path / "cache", transport=server.transport)
    second = wb.judge(tasks, rows, again, cfg())
    assert server.calls == 5 and again.http_calls == 0 and again.cost_usd == 0
    assert [r["score"] for r in second] == [r["score"] for r in first]
    assert all(r["meta_data"]["cached"] for r in second)
    # a changed output, judge model or template is a new key: one new call
    rows[0]["output"] = ["a different answer"]
    wb.judge(tasks, rows, JudgeClient(cfg(), tmp_path / "cache", transport=server.transport), cfg())
    assert server.calls == 6
    wb.judge(tasks[:1], rows[:1], JudgeClient(cfg(model="other"), tmp_path / "cache", transport=server.transport),
             cfg(model="other"))
    assert server.calls == 7


def test_empty_output_scores_1_without_a_call(tmp_path):
    tasks = load_wildbench("sample", limit=2)
    server = Server(score_by_query)
    recs = wb.judge(tasks, outputs_rows(tasks, ["  \n", "fine"]), JudgeClient(cfg(), tmp_path,
                                                                              transport=server.transport), cfg())
    assert server.calls == 1
    assert recs[0]["score"] == 1.0 and recs[0]["parsed_result"]["score"] == "1" and recs[0]["model_output"] == "  \n"
    assert recs[1]["score"] == 4.0
    assert set(recs[1]) == {"session_id", "parsed_result", "meta_data", "model_test", "score", "model_output"}


def test_429_then_success_is_retried_with_backoff(tmp_path):
    def answer(body, n):
        if n == 1:
            return httpx.Response(429, json={"error": {"message": "rate limited"}})
        if n == 2:
            return httpx.Response(503, text="overloaded", headers={"Retry-After": "0.25"})
        return reply(verdict(9))

    waits = []
    server = Server(answer)
    client = JudgeClient(cfg(backoff_s=0.5), tmp_path, transport=server.transport, sleep=waits.append)
    [r] = client.run([JudgeRequest("k", "p")])
    assert r.content == verdict(9) and r.error is None
    assert server.calls == 3 and client.http_calls == 3
    assert waits == [0.5, 0.25]  # exponential backoff (0.5 * 2**0), then the server's Retry-After


def test_network_errors_are_retried_and_exhaustion_fails_only_that_item(tmp_path):
    def answer(body, n):
        if body["messages"][0]["content"] == "flaky" and n <= 2:
            raise httpx.ConnectError("connection refused")
        if body["messages"][0]["content"] == "doomed":
            return httpx.Response(500, text="boom")
        return reply(verdict(6))

    waits = []
    server = Server(answer)
    client = JudgeClient(cfg(max_retries=2, backoff_s=1.0, max_concurrency=1), tmp_path, transport=server.transport,
                         sleep=waits.append)
    flaky, doomed = client.run([JudgeRequest("a", "flaky"), JudgeRequest("b", "doomed")])
    assert flaky.content == verdict(6)
    assert doomed.content is None and "gave up after 3 tries: HTTP 500" in doomed.error
    assert waits == [1.0, 2.0, 1.0, 2.0]  # 1 * 2**attempt for each item
    # the failure is not cached: a rerun asks again, the success is not asked again
    before = server.calls
    client2 = JudgeClient(cfg(max_retries=0), tmp_path, transport=server.transport)
    flaky2, doomed2 = client2.run([JudgeRequest("a", "flaky"), JudgeRequest("b", "doomed")])
    assert flaky2.cached and server.calls == before + 1 and doomed2.error


def test_client_errors_other_than_auth_fail_the_item_without_retry(tmp_path):
    server = Server(lambda body, n: httpx.Response(400, json={"error": {"message": "context too long"}}))
    [r] = JudgeClient(cfg(), tmp_path, transport=server.transport).run([JudgeRequest("k", "p")])
    assert server.calls == 1 and "HTTP 400" in r.error


def test_unauthorised_stops_the_run(tmp_path):
    server = Server(lambda body, n: httpx.Response(401, json={"error": {"message": "bad key"}}))
    client = JudgeClient(cfg(max_concurrency=2), tmp_path, transport=server.transport)
    with pytest.raises(JudgeError, match="HTTP 401"):
        client.run([JudgeRequest(f"k{i}", f"p{i}") for i in range(10)])
    assert server.calls <= 2  # the requests already in flight; nothing queued is sent after the 401


def test_missing_api_key_names_the_setting(tmp_path, monkeypatch):
    monkeypatch.delenv("DRIFT_TEST_JUDGE_KEY")
    server = Server(lambda body, n: reply(verdict(5)))
    with pytest.raises(JudgeError, match="eval.judge.api_key_env: environment variable DRIFT_TEST_JUDGE_KEY"):
        JudgeClient(cfg(), tmp_path, transport=server.transport).run([JudgeRequest("k", "p")])
    # no key needed for a local server
    [r] = JudgeClient(cfg(api_key_env=""), tmp_path, transport=server.transport).run([JudgeRequest("k", "p")])
    assert r.content and "authorization" not in server.requests[-1].headers


def test_concurrency_never_exceeds_the_bound(tmp_path):
    state = {"now": 0, "max": 0}
    lock = threading.Lock()

    def answer(body, n):
        with lock:
            state["now"] += 1
            state["max"] = max(state["max"], state["now"])
        time.sleep(0.03)
        with lock:
            state["now"] -= 1
        return reply(verdict(7))

    server = Server(answer)
    replies = JudgeClient(cfg(max_concurrency=3), tmp_path, transport=server.transport).run(
        [JudgeRequest(f"k{i}", f"p{i}") for i in range(20)])
    assert server.calls == 20 and all(r.content for r in replies)
    assert 2 <= state["max"] <= 3  # parallel, but never more than max_concurrency


def test_usage_missing_is_estimated(tmp_path):
    server = Server(lambda body, n: reply("x" * 400))  # no usage field
    client = JudgeClient(cfg(price_in_per_1k=1.0, price_out_per_1k=1.0), tmp_path, transport=server.transport)
    client.run([JudgeRequest("k", "p" * 4000)])
    # chars / 4: 1000 prompt tokens + 100 completion tokens at $1 per 1k each = $1.10
    assert client.cost_usd == pytest.approx(1.1)


def test_judged_sample_aggregates_to_wb_scores(tmp_path):
    tasks = load_wildbench("sample")
    rows = outputs_rows(tasks, [f"answer {i}" for i in range(len(tasks))])
    client = JudgeClient(cfg(), tmp_path, transport=Server(score_by_query).transport)
    recs = wb.judge(tasks, rows, client, cfg())
    # scores 3 + i % 7 for i = 0..11: 3,4,5,6,7,8,9,3,4,5,6,7 -> sum 67, mean 67/12 = 5.5833
    assert [r["score"] for r in recs] == [3, 4, 5, 6, 7, 8, 9, 3, 4, 5, 6, 7]
    row = wb_scores(recs, {t["session_id"]: task_groups(t) for t in tasks})
    assert row["score"] == pytest.approx(67 / 12)
    # Coding & Debugging: tasks 0 (3), 5 (8: Data Analysis with a Coding secondary tag) and 10 (6)
    #   -> mean 17/3 -> (17/3 - 5) * 2 = 4/3 -> x10 = 13.3333
    assert leaderboard(row)["groups"]["Coding & Debugging"] == pytest.approx(13.3333, abs=1e-4)
    # 12 calls x (1000 * 0.005 + 100 * 0.015) / 1000 = 12 x 0.0065 = 0.078
    assert client.cost_usd == pytest.approx(0.078)
