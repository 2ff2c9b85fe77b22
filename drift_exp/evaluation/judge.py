"""An LLM judge behind any OpenAI-compatible `POST /v1/chat/completions`, with httpx.

- bounded concurrency: at most `judge.max_concurrency` requests in flight (a thread pool of that size);
- retries: network errors, HTTP 429 and 5xx are retried `judge.max_retries` times with exponential
  backoff (`backoff_s`, doubled each try; a Retry-After header wins, capped at 60 s); 401/403/404
  stop the whole run (every call would fail); other 4xx fail that item only;
- a disk cache keyed by a hash of (template version, judge model + settings, prompt, output): a
  reply is stored as soon as it arrives, so a rerun (or a resumed run) never pays for it twice;
- a progress bar, and the cost: tokens from the API's `usage` field (estimated as chars/4 when
  absent) times `price_in_per_1k` / `price_out_per_1k`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from tqdm.auto import tqdm

from drift_exp.credentials import redact_url
from drift_exp.errors import UserError
from drift_exp.evaluation.config import JudgeConfig

log = logging.getLogger(__name__)

RETRY_AFTER_CAP_S = 60.0


class JudgeError(UserError):
    """The judge cannot be used at all (no key, bad URL, unauthorised): the message says what to fix."""


class JudgeItemError(Exception):
    """One request failed for good (retries used up, or a 4xx for this request only)."""


@dataclass
class JudgeRequest:
    key: str  # cache key, from cache_key()
    prompt: str  # the judge's user message


@dataclass
class JudgeReply:
    content: str | None  # None: failed (see error)
    cached: bool = False
    error: str | None = None
    usage: dict[str, Any] = field(default_factory=dict)
    cost_usd: float = 0.0


def cache_key(template_version: str, cfg: JudgeConfig, prompt: str, output: str) -> str:
    """What makes a judgement: the template, the judge and its decoding, the task prompt, the output."""
    blob = json.dumps({"template": template_version, "model": cfg.model, "temperature": cfg.temperature,
                       "max_tokens": cfg.max_tokens, "json_mode": cfg.json_mode, "prompt": prompt,
                       "output": output}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()


def endpoint(base_url: str) -> str:
    """<base_url>/chat/completions, adding /v1 when base_url has no version segment."""
    url = base_url.rstrip("/")
    if url.endswith("/chat/completions"):
        return url
    if re.search(r"/v\d+[a-z0-9]*$", url):
        return url + "/chat/completions"
    return url + "/v1/chat/completions"


class DiskCache:
    """One JSON file per key under root/<2 hex>/<key>.json, written atomically (safe across threads/runs)."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        path = self._path(key)
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def put(self, key: str, value: dict[str, Any]) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        tmp.write_text(json.dumps(value, ensure_ascii=False), encoding="utf-8")
        os.replace(tmp, path)


def estimate_tokens(text: str) -> int:
    return max(1, len(text) // 4)


class JudgeClient:
    def __init__(self, cfg: JudgeConfig, cache_dir: Path, transport: httpx.BaseTransport | None = None,
                 sleep: Callable[[float], None] = time.sleep):
        if not cfg.base_url:
            raise JudgeError("eval.judge.base_url is not set: name an OpenAI-compatible server")
        self.cfg = cfg
        self.url = endpoint(cfg.base_url)
        self.shown_url = redact_url(self.url)  # for messages and logs: never a user:password@
        self.cache = DiskCache(cache_dir)
        self.transport = transport
        self.sleep = sleep
        self._lock = threading.Lock()
        self._abort = threading.Event()  # set on a JudgeError: queued requests are not sent
        self.http_calls = 0  # HTTP requests sent, retries included
        self.cost_usd = 0.0  # this run's new calls
        self.tokens = {"prompt_tokens": 0, "completion_tokens": 0}

    def _headers(self) -> dict[str, str]:
        env = self.cfg.api_key_env
        if not env:
            return {}
        key = os.environ.get(env)
        if not key:
            raise JudgeError(f"eval.judge.api_key_env: environment variable {env} is not set (export it, or set "
                             "eval.judge.api_key_env='' for a server without authentication)")
        return {"Authorization": f"Bearer {key}"}

    def _cost(self, usage: dict[str, Any]) -> float:
        return (usage.get("prompt_tokens", 0) * self.cfg.price_in_per_1k
                + usage.get("completion_tokens", 0) * self.cfg.price_out_per_1k) / 1000

    def _body(self, prompt: str) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.cfg.model, "messages": [{"role": "user", "content": prompt}],
                                "temperature": self.cfg.temperature, "max_tokens": self.cfg.max_tokens}
        if self.cfg.json_mode:
            body["response_format"] = {"type": "json_object"}
        return body

    def _retry_wait(self, resp: httpx.Response | None, attempt: int) -> float:
        if resp is not None and resp.headers.get("retry-after"):
            try:
                return min(float(resp.headers["retry-after"]), RETRY_AFTER_CAP_S)
            except ValueError:
                pass
        return self.cfg.backoff_s * 2 ** attempt

    def complete(self, client: httpx.Client, prompt: str, headers: dict[str, str]) -> tuple[str, dict[str, Any]]:
        """One judgement with retries: (content, usage). Raises JudgeItemError or JudgeError."""
        why = ""
        for attempt in range(self.cfg.max_retries + 1):
            resp = None
            with self._lock:
                self.http_calls += 1
            try:
                resp = client.post(self.url, json=self._body(prompt), headers=headers)
            except httpx.TransportError as err:  # connection errors and timeouts
                why = f"{type(err).__name__}: {err}"
            else:
                code = resp.status_code
                if code == 200:
                    try:
                        data = resp.json()
                        content = data["choices"][0]["message"]["content"] or ""
                        return content, dict(data.get("usage") or {})
                    except (ValueError, KeyError, IndexError, TypeError) as err:
                        why = f"malformed reply ({type(err).__name__}): {resp.text[:200]!r}"
                elif code in (401, 403, 404):
                    self._abort.set()
                    raise JudgeError(f"judge at {self.shown_url} answered HTTP {code}: {resp.text[:300]} "
                                     "(check eval.judge.base_url, eval.judge.model and the API key)")
                elif code == 429 or code >= 500:
                    why = f"HTTP {code}: {resp.text[:200]}"
                else:
                    raise JudgeItemError(f"HTTP {code}: {resp.text[:300]}")
            if attempt == self.cfg.max_retries:
                break
            delay = self._retry_wait(resp, attempt)
            log.debug("judge retry %d/%d in %.1fs: %s", attempt + 1, self.cfg.max_retries, delay, why)
            self.sleep(delay)
        raise JudgeItemError(f"gave up after {self.cfg.max_retries + 1} tries: {why}")

    def _one(self, client: httpx.Client, req: JudgeRequest, headers: dict[str, str]) -> JudgeReply:
        if self._abort.is_set():
            return JudgeReply(content=None, error="not sent: the judge run was stopped")
        try:
            content, usage = self.complete(client, req.prompt, headers)
        except JudgeItemError as err:
            return JudgeReply(content=None, error=str(err))
        estimated = not {"prompt_tokens", "completion_tokens"} <= usage.keys()
        if estimated:
            usage = {"prompt_tokens": estimate_tokens(req.prompt), "completion_tokens": estimate_tokens(content)}
        usage = {"prompt_tokens": int(usage["prompt_tokens"]), "completion_tokens": int(usage["completion_tokens"])}
        cost = self._cost(usage)
        self.cache.put(req.key, {"content": content, "usage": usage, "usage_estimated": estimated,
                                 "model": self.cfg.model, "cost_usd": cost})
        with self._lock:
            self.cost_usd += cost
            for k in self.tokens:
                self.tokens[k] += usage[k]
        return JudgeReply(content=content, usage=usage, cost_usd=cost)

    def run(self, requests: list[JudgeRequest], desc: str = "judge") -> list[JudgeReply]:
        """Judge every request (cache first); replies in request order. Failed items carry .error."""
        replies: list[JudgeReply | None] = [None] * len(requests)
        todo = []
        for i, req in enumerate(requests):
            hit = self.cache.get(req.key)
            if hit is not None:
                replies[i] = JudgeReply(content=hit["content"], cached=True, usage=hit.get("usage", {}))
            else:
                todo.append(i)
        est_in = sum(estimate_tokens(requests[i].prompt) for i in todo)
        est = (est_in * self.cfg.price_in_per_1k + len(todo) * self.cfg.max_tokens * self.cfg.price_out_per_1k) / 1000
        log.info("%s (%s at %s): %d requests, %d cached, %d to send; estimated cost <= $%.2f (~%d input tokens)",
                 desc, self.cfg.model, self.shown_url, len(requests), len(requests) - len(todo), len(todo), est, est_in)
        if todo:
            headers = self._headers()
            limits = httpx.Limits(max_connections=self.cfg.max_concurrency)
            with httpx.Client(transport=self.transport, timeout=self.cfg.timeout_s, limits=limits) as client, \
                    ThreadPoolExecutor(max_workers=self.cfg.max_concurrency) as pool, \
                    tqdm(total=len(todo), desc=desc, unit="call") as bar:
                futures = {pool.submit(self._one, client, requests[i], headers): i for i in todo}
                pending = set(futures)
                while pending:
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for fut in done:
                        if fut.exception() is not None:  # JudgeError: every call would fail
                            for p in pending:
                                p.cancel()
                            raise fut.exception()
                        replies[futures[fut]] = fut.result()
                        bar.update(1)
                    bar.set_postfix(cost=f"${self.cost_usd:.3f}")
        failed = [r for r in replies if r is not None and r.error]
        if failed:
            log.warning("%s: %d of %d requests failed (rerun to retry them; e.g. %s)", desc, len(failed),
                        len(requests), failed[0].error)
        log.info("%s: spent $%.4f on %d HTTP calls (%d prompt + %d completion tokens)", desc, self.cost_usd,
                 self.http_calls, self.tokens["prompt_tokens"], self.tokens["completion_tokens"])
        assert all(r is not None for r in replies)
        return replies  # type: ignore[return-value]
