"""The evaluation stage's config schema (`eval.*`) and its validation.

Defaults run anywhere (CPU, no network): the reward-model proxy on the bundled held-out prompts.
`conf/eval/full.yaml` turns on AlpacaEval 2 and WildBench v2 with their official sizes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from drift_exp.config_fields import NEUTRAL
from drift_exp.errors import ConfigError

BENCHMARKS = ("alpaca_eval", "wildbench", "proxy")


@dataclass
class JudgeConfig:
    # Score WildBench outputs with an LLM judge. It runs only when this is true AND base_url is set
    # (conf/eval/full.yaml sets it true and reads base_url from $DRIFT_JUDGE_BASE_URL).
    enabled: bool = False
    # Any OpenAI-compatible server: 'https://api.openai.com/v1', 'http://host:8000/v1', ... POST
    # <base_url>/chat/completions ('/v1' is appended when base_url has no version segment). Where the
    # judge is served, not which judge (judge.model): neutral for resume, like the transport knobs below.
    # Credentials in it must come from the environment: base_url='${oc.env:VAR}' (drift_exp/credentials.py).
    base_url: str | None = field(default=None, metadata=NEUTRAL)
    # WildBench v2's WB-Score judge (evaluation/run_score_eval_batch.sh).
    model: str = "gpt-4o-2024-05-13"
    # Environment variable holding the API key (never stored in the config); '' or null: no auth header.
    api_key_env: str | None = field(default="OPENAI_API_KEY", metadata=NEUTRAL)
    # Judge requests in flight at once.
    max_concurrency: int = field(default=8, metadata=NEUTRAL)
    # Retries of one request after a network error, HTTP 429 or 5xx (exponential backoff).
    max_retries: int = field(default=5, metadata=NEUTRAL)
    # First backoff in seconds; doubled after each failed try (a Retry-After header wins, up to 60 s).
    backoff_s: float = field(default=2.0, metadata=NEUTRAL)
    # Seconds one HTTP request may take.
    timeout_s: float = field(default=120.0, metadata=NEUTRAL)
    # WildBench's judge settings: greedy, 1024 tokens, JSON mode.
    temperature: float = 0.0
    max_tokens: int = 1024
    json_mode: bool = True
    # USD per 1k tokens, for the cost shown and logged (gpt-4o-2024-05-13 list prices; 0: not shown).
    price_in_per_1k: float = field(default=0.005, metadata=NEUTRAL)
    price_out_per_1k: float = field(default=0.015, metadata=NEUTRAL)
    # WildBench's --max_words_to_eval: cut history/query/output to this many words in the judge
    # prompt (marked '... (truncated)'); -1: never (WildBench's default).
    max_words: int = -1


@dataclass
class EvalConfig:
    # Which benchmarks run after each iteration: any of alpaca_eval, wildbench, proxy; [] disables the stage.
    benchmarks: list[str] = field(default_factory=lambda: ["proxy"])
    # 'sample' (bundled, 12 rows), a local .json/.jsonl file, or a hub dataset id (tatsu-lab/alpaca_eval:
    # its alpaca_eval.json, 805 instructions). The hub is contacted only when a hub id is named here.
    alpaca_eval_source: str = "sample"
    # 'sample' (bundled, 12 tasks), a local .json/.jsonl/.parquet file, or a hub id (allenai/WildBench).
    wildbench_source: str = "sample"
    # Hub config and split of WildBench v2 (1,024 tasks).
    wildbench_config: str = "v2"
    wildbench_split: str = "test"
    # Held-out prompts for the reward-model proxy: 'sample' (bundled, 16 prompts) or a local .json/.jsonl file.
    proxy_source: str = "sample"
    # Only the first N examples of every benchmark (quick runs); null: all of them.
    limit: int | None = None
    # Decoding for every eval generation; WildBench's defaults (scripts/_common_vllm.sh): greedy,
    # top_p 1, 4096 new tokens. conf/eval/default.yaml lowers max_new_tokens for CPU runs.
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = -1
    repetition_penalty: float = 1.0
    max_new_tokens: int = 4096
    # null: generation.max_prompt_length / generation.batch_size.
    max_prompt_length: int | None = None
    batch_size: int | None = None
    # LLM judge of WildBench's WB-Score.
    judge: JudgeConfig = field(default_factory=JudgeConfig)
    # Run the official AlpacaEval 2 evaluator (`alpaca_eval` CLI + OPENAI_API_KEY must be present;
    # otherwise only model_outputs.json is written and the reason is logged).
    alpaca_eval_judge: bool = False
    # Its annotator config; AlpacaEval 2's default (GPT-4 Turbo, logprob-weighted, LC win rate).
    alpaca_eval_annotator: str = "weighted_alpaca_eval_gpt4_turbo"
    # Judge response cache (shared by iterations and reruns); null: <run dir>/eval_cache.
    cache_dir: str | None = field(default=None, metadata=NEUTRAL)


def validate_eval(cfg: EvalConfig) -> None:
    """Check choices and ranges; raise ConfigError naming the key (eval.*)."""
    bad = [b for b in cfg.benchmarks if b not in BENCHMARKS]
    j = cfg.judge
    checks: list[tuple[str, bool, str]] = [
        ("eval.benchmarks", not bad, f"must be a list of {BENCHMARKS}, got unknown {bad}"),
        ("eval.benchmarks", len(set(cfg.benchmarks)) == len(cfg.benchmarks),
         f"lists a benchmark twice: {list(cfg.benchmarks)}"),
        ("eval.limit", cfg.limit is None or cfg.limit >= 1, f"must be >= 1 or null (all), got {cfg.limit}"),
        ("eval.temperature", cfg.temperature >= 0, f"must be >= 0 (0 = greedy), got {cfg.temperature}"),
        ("eval.top_p", 0 < cfg.top_p <= 1, f"must be in (0, 1], got {cfg.top_p}"),
        ("eval.top_k", cfg.top_k == -1 or cfg.top_k >= 1, f"must be -1 (off) or >= 1, got {cfg.top_k}"),
        ("eval.repetition_penalty", cfg.repetition_penalty > 0, f"must be > 0, got {cfg.repetition_penalty}"),
        ("eval.max_new_tokens", cfg.max_new_tokens >= 1, f"must be >= 1, got {cfg.max_new_tokens}"),
        ("eval.max_prompt_length", cfg.max_prompt_length is None or cfg.max_prompt_length >= 1,
         f"must be >= 1 or null, got {cfg.max_prompt_length}"),
        ("eval.batch_size", cfg.batch_size is None or cfg.batch_size >= 1,
         f"must be >= 1 or null, got {cfg.batch_size}"),
        ("eval.alpaca_eval_source", bool(cfg.alpaca_eval_source.strip()), "must name 'sample', a file or a hub id"),
        ("eval.wildbench_source", bool(cfg.wildbench_source.strip()), "must name 'sample', a file or a hub id"),
        ("eval.proxy_source", bool(cfg.proxy_source.strip()), "must name 'sample' or a file"),
        ("eval.alpaca_eval_annotator", bool(cfg.alpaca_eval_annotator.strip()), "must not be empty"),
        ("eval.judge.model", bool(j.model.strip()), "must name the judge model"),
        ("eval.judge.base_url", j.base_url is None or j.base_url.startswith(("http://", "https://")),
         f"must be an http(s) URL or null, got {j.base_url!r}"),
        ("eval.judge.max_concurrency", j.max_concurrency >= 1, f"must be >= 1, got {j.max_concurrency}"),
        ("eval.judge.max_retries", j.max_retries >= 0, f"must be >= 0, got {j.max_retries}"),
        ("eval.judge.backoff_s", j.backoff_s >= 0, f"must be >= 0, got {j.backoff_s}"),
        ("eval.judge.timeout_s", j.timeout_s > 0, f"must be > 0, got {j.timeout_s}"),
        ("eval.judge.temperature", j.temperature >= 0, f"must be >= 0, got {j.temperature}"),
        ("eval.judge.max_tokens", j.max_tokens >= 1, f"must be >= 1, got {j.max_tokens}"),
        ("eval.judge.price_in_per_1k", j.price_in_per_1k >= 0, f"must be >= 0, got {j.price_in_per_1k}"),
        ("eval.judge.price_out_per_1k", j.price_out_per_1k >= 0, f"must be >= 0, got {j.price_out_per_1k}"),
        ("eval.judge.max_words", j.max_words == -1 or j.max_words >= 1,
         f"must be -1 (off) or >= 1, got {j.max_words}"),
    ]
    for key, ok, why in checks:
        if not ok:
            raise ConfigError(f"{key} {why}")
