"""The evaluation stage's config schema (`eval.*`) and its validation.

Defaults run anywhere (CPU, no network): the reward-model proxy on the bundled held-out prompts.
`conf/eval/full.yaml` turns on AlpacaEval 2 and WildBench v2 with their official sizes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from drift_exp.config_fields import NEUTRAL, since
from drift_exp.decoding import MAX_TOKENS, DecodingConfig, decoding_checks
from drift_exp.errors import ConfigError

BENCHMARKS = ("alpaca_eval", "wildbench", "proxy")
TEMPLATES = ("official", "project")
# WildBench's repository at the commit the leaderboard files below were read from (2024-08-01 snapshot).
WILDBENCH_COMMIT = "d6b8dcaf377d173d031980f97c16e1a82618c03d"
WILDBENCH_RAW = f"https://raw.githubusercontent.com/allenai/WildBench/{WILDBENCH_COMMIT}"


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
class EloConfig:
    # Compute WB-Elo (WildBench's leaderboard/wb_elo.py method) for each judged policy against the
    # leaderboard's other models; needs their per-task WB-Score files (downloaded once, cached).
    enabled: bool = False
    # Folder (URL or local folder) holding <model>.json per-task score files of the other models.
    results_url: str = WILDBENCH_RAW + "/eval_results/v2.0625/score.v2/eval=gpt-4o-2024-05-13"
    # The models whose files are read; null: every .json file listed by results_index_url.
    models: list[str] | None = None
    # A JSON listing of the results folder (GitHub's contents API); used only when models is null.
    results_index_url: str = ("https://api.github.com/repos/allenai/WildBench/contents/eval_results/v2.0625/"
                              "score.v2/eval=gpt-4o-2024-05-13?ref=d6b8dcaf377d173d031980f97c16e1a82618c03d")
    # Initial ratings: LMSYS Chatbot Arena Elo per model (WildBench's all_stat.json) and its key.
    init_url: str = WILDBENCH_RAW + "/leaderboard/data_dir/all_stat.json"
    init_column: str = "Arena Elo (hard-en) - latest"
    # The settings WildBench's leaderboard ran at the pinned commit (WILDBENCH_COMMIT): WildBench
    # d6b8dcaf377d173d031980f97c16e1a82618c03d leaderboard/show_eval.sh runs leaderboard/wb_elo.py with
    # margin=2 tie_margin=2 K=4 dynamic=True interval=100 --num_rounds 128 --length_margin 1500, and
    # leaderboard/data_dir/wb_elo_results.json at that commit records the same "config". (The line above
    # it there, margin=3 interval=16 with 100 rounds, is an older, commented-out setting.)
    # A score gap >= margin is a win, else a gap <= tie_margin a draw (in between: no game).
    margin: int = 2
    tie_margin: int = 2
    # Elo K-factor.
    k_factor: float = 4.0
    # Shuffled passes over the games; each starts from the initial ratings.
    rounds: int = 128
    # Anchored models move too, pulled halfway back to their Arena Elo every `interval` of their games.
    dynamic: bool = True
    interval: int = 100
    # A game whose two outputs differ by more than this many characters (stripped of surrounding white
    # space) is a draw whatever the scores (WildBench d6b8dcaf377d173d031980f97c16e1a82618c03d
    # leaderboard/wb_elo.py, compute_single_round); -1: no length rule. Runs recorded before it had none.
    length_margin: int = field(default=1500, metadata=since(legacy=-1))
    # Seed of the vote shuffles.
    seed: int = 42
    # Where downloads are kept; null: <drift_exp cache root>/wildbench.
    cache_dir: str | None = field(default=None, metadata=NEUTRAL)


@dataclass
class WildBenchConfig:
    # official: WildBench v2's own score template, read at run time from template_url (cached; its
    # sha256 goes into the metrics) | project: this project's paraphrase (a proxy, labelled so in reports).
    # Runs recorded before this setting existed were judged with the paraphrase (legacy value).
    template: str = field(default="official", metadata=since(legacy="project"))
    template_url: str = WILDBENCH_RAW + "/evaluation/eval_template.score.v2.md"
    # A local copy of the template; when set it is used instead of template_url (offline machines).
    template_file: str | None = None
    # Expected sha256 of the template; null: not checked (the checksum is still recorded).
    template_sha256: str | None = field(default=None, metadata=NEUTRAL)
    # WB-Elo against the leaderboard's other models.
    elo: EloConfig = field(default_factory=EloConfig)


@dataclass
class EvalConfig(DecodingConfig):
    # Decoding for every eval generation (the fields of drift_exp/decoding.py): WildBench's defaults
    # (scripts/_common_vllm.sh), greedy, top_p 1, no top-k, no repetition penalty, 4096 new tokens; never
    # the checkpoint's (top_k and repetition_penalty are not nullable here). conf/eval/default.yaml lowers
    # max_new_tokens for CPU runs.
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = -1
    repetition_penalty: float = 1.0
    max_new_tokens: int = 4096
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
    # Evaluate the starting model once, before the warm start (base/ in the run directory: the Base row).
    base_model: bool = field(default=True, metadata=NEUTRAL)
    # Shared cache of base-model evaluations (one per model + eval config, reused by every job of a
    # sweep; guarded by a file lock); null: <drift_exp cache root>/base_eval.
    base_cache_dir: str | None = field(default=None, metadata=NEUTRAL)
    # WildBench scoring: the judge template and WB-Elo.
    wildbench: WildBenchConfig = field(default_factory=WildBenchConfig)

    def validate(self) -> None:
        """Its checks, judge and WildBench settings included (validate_eval, below)."""
        validate_eval(self)


def validate_eval(cfg: EvalConfig) -> None:
    """Check choices and ranges; raise ConfigError naming the key (eval.*)."""
    bad = [b for b in cfg.benchmarks if b not in BENCHMARKS]
    j = cfg.judge
    checks: list[tuple[str, bool, str]] = [
        ("eval.benchmarks", not bad, f"must be a list of {BENCHMARKS}, got unknown {bad}"),
        ("eval.benchmarks", len(set(cfg.benchmarks)) == len(cfg.benchmarks),
         f"lists a benchmark twice: {list(cfg.benchmarks)}"),
        ("eval.limit", cfg.limit is None or cfg.limit >= 1, f"must be >= 1 or null (all), got {cfg.limit}"),
        *decoding_checks("eval", cfg),
        ("eval.max_prompt_length", cfg.max_prompt_length is None or cfg.max_prompt_length >= 1,
         f"must be >= 1 or null, got {cfg.max_prompt_length}"),
        # Upper bounds as generation.* (drift_exp/config.py): far above real runs, below a typo's allocation.
        ("eval.max_prompt_length", cfg.max_prompt_length is None or cfg.max_prompt_length <= MAX_TOKENS,
         f"must be <= {MAX_TOKENS:,} (prompt tokens kept; the longest context of the models in reach), "
         f"got {cfg.max_prompt_length}"),
        ("eval.batch_size", cfg.batch_size is None or cfg.batch_size >= 1,
         f"must be >= 1 or null, got {cfg.batch_size}"),
        ("eval.batch_size", cfg.batch_size is None or cfg.batch_size <= 4096,
         f"must be <= 4,096 (sequences decoded at once), got {cfg.batch_size}"),
        ("eval.alpaca_eval_source", bool(cfg.alpaca_eval_source.strip()), "must name 'sample', a file or a hub id"),
        ("eval.wildbench_source", bool(cfg.wildbench_source.strip()), "must name 'sample', a file or a hub id"),
        ("eval.proxy_source", bool(cfg.proxy_source.strip()), "must name 'sample' or a file"),
        ("eval.alpaca_eval_annotator", bool(cfg.alpaca_eval_annotator.strip()), "must not be empty"),
        ("eval.judge.model", bool(j.model.strip()), "must name the judge model"),
        ("eval.judge.base_url", j.base_url is None or j.base_url.startswith(("http://", "https://")),
         f"must be an http(s) URL or null, got {j.base_url!r}"),
        ("eval.judge.max_concurrency", j.max_concurrency >= 1, f"must be >= 1, got {j.max_concurrency}"),
        # Requests in flight at one judge server: providers' rate limits sit at tens to hundreds.
        ("eval.judge.max_concurrency", j.max_concurrency <= 1024,
         f"must be <= 1,024 (judge requests in flight), got {j.max_concurrency}"),
        ("eval.judge.max_retries", j.max_retries >= 0, f"must be >= 0, got {j.max_retries}"),
        ("eval.judge.backoff_s", j.backoff_s >= 0, f"must be >= 0, got {j.backoff_s}"),
        ("eval.judge.timeout_s", j.timeout_s > 0, f"must be > 0, got {j.timeout_s}"),
        ("eval.judge.temperature", j.temperature >= 0, f"must be >= 0, got {j.temperature}"),
        ("eval.judge.max_tokens", j.max_tokens >= 1, f"must be >= 1, got {j.max_tokens}"),
        ("eval.judge.max_tokens", j.max_tokens <= MAX_TOKENS,
         f"must be <= {MAX_TOKENS:,} (tokens per judge reply, each one paid for), got {j.max_tokens}"),
        ("eval.judge.price_in_per_1k", j.price_in_per_1k >= 0, f"must be >= 0, got {j.price_in_per_1k}"),
        ("eval.judge.price_out_per_1k", j.price_out_per_1k >= 0, f"must be >= 0, got {j.price_out_per_1k}"),
        ("eval.judge.max_words", j.max_words == -1 or j.max_words >= 1,
         f"must be -1 (off) or >= 1, got {j.max_words}"),
    ]
    w, e = cfg.wildbench, cfg.wildbench.elo
    checks += [
        ("eval.wildbench.template", w.template in TEMPLATES, f"must be one of {TEMPLATES}, got {w.template!r}"),
        ("eval.wildbench.template_url", w.template_url.startswith(("http://", "https://", "/", "file:")),
         f"must be an http(s) URL or a local path, got {w.template_url!r}"),
        ("eval.wildbench.template_sha256", w.template_sha256 is None or len(w.template_sha256) == 64,
         f"must be a 64-hex sha256 or null, got {w.template_sha256!r}"),
        ("eval.wildbench.elo.margin", e.margin >= 1, f"must be >= 1, got {e.margin}"),
        ("eval.wildbench.elo.tie_margin", 0 <= e.tie_margin <= e.margin,
         f"must be >= 0 and at most margin ({e.margin}), got {e.tie_margin}"),
        ("eval.wildbench.elo.length_margin", e.length_margin == -1 or e.length_margin >= 1,
         f"must be -1 (no length rule) or >= 1 characters, got {e.length_margin}"),
        ("eval.wildbench.elo.k_factor", e.k_factor > 0, f"must be > 0, got {e.k_factor}"),
        ("eval.wildbench.elo.rounds", e.rounds >= 1, f"must be >= 1, got {e.rounds}"),
        # Shuffled passes over every vote: WildBench runs 100-128; each pass is seconds over the leaderboard.
        ("eval.wildbench.elo.rounds", e.rounds <= 100_000, f"must be <= 100,000 (passes over the votes), "
         f"got {e.rounds}"),
        ("eval.wildbench.elo.interval", e.interval >= 0, f"must be >= 0 (0: never pulled back), got {e.interval}"),
        ("eval.wildbench.elo.models", e.models is None or len(e.models) >= 1, "must list models or be null (all)"),
        ("eval.wildbench.elo.enabled", not e.enabled or cfg.judge.enabled,
         "needs eval.judge.enabled=true (WB-Elo is computed from the judge's WB-Scores)"),
    ]
    for key, ok, why in checks:
        if not ok:
            raise ConfigError(f"{key} {why}")
