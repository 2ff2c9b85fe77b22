"""The evaluation stage (`evaluate`): benchmark outputs, and scores where a judge
is configured, for one policy.

    evaluate(...) -> out_dir/
        completions.jsonl, generation.json      every eval generation (reused on rerun when unchanged)
        alpaca_eval/model_outputs.json          AlpacaEval 2's official model_outputs format
        alpaca_eval/<annotator>/leaderboard.csv the official evaluator's output (eval.alpaca_eval_judge)
        wildbench/<generator>.json              WildBench v2's model-output format
        wildbench/scores.json                   WB-Score judge records (eval.judge)
        wildbench/elo.json                      WB-Elo against the leaderboard (eval.wildbench.elo)
        proxy/rewards.jsonl                     reward-model scores of the held-out prompts
        metrics.json                            the dict evaluate() returns
    judge replies are cached under eval.cache_dir (default <run dir>/eval_cache = out_dir/../../eval_cache).

Generation runs once for all benchmarks (one model load), with the eval decoding (greedy, 4096 new
tokens: WildBench's defaults) applied over the run's generation config.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from drift_exp.config import GenerationConfig, ScorerConfig, result_fields
from drift_exp.decoding import decoding_of
from drift_exp.evaluation import alpaca_eval, proxy, wildbench
from drift_exp.evaluation.benchmarks import load_alpaca_eval, load_proxy_prompts, load_wildbench
from drift_exp.evaluation.config import BENCHMARKS, EvalConfig, validate_eval
from drift_exp.evaluation.wb_metrics import leaderboard, task_groups, wb_scores
from drift_exp.records import Completion, GenRequest, read_jsonl, write_json, write_jsonl

log = logging.getLogger(__name__)


def eval_generation_config(eval_cfg: EvalConfig, gen_cfg: GenerationConfig) -> GenerationConfig:
    """The run's generation config (backend, engine settings) with the eval decoding on top."""
    return replace(gen_cfg, **decoding_of(eval_cfg),
                   max_prompt_length=eval_cfg.max_prompt_length or gen_cfg.max_prompt_length,
                   batch_size=eval_cfg.batch_size or gen_cfg.batch_size)


def safe_name(name: str) -> str:
    """A file name for the generator (WildBench names its output file after the model)."""
    return re.sub(r"[^A-Za-z0-9_.+-]", "_", name.split("/")[-1] if "/" in name else name) or "model"


def policy_fingerprint(policy_path: str) -> list:
    """What identifies the weights: a local folder's files (name, size, mtime), or the hub id itself.

    A retrained checkpoint in the same folder gets new files, so its generations are not reused.
    """
    folder = Path(policy_path)
    if not folder.is_dir():
        return [policy_path]
    return [policy_path] + sorted([p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in folder.iterdir()
                                  if p.is_file())


def _generate(reqs: list[GenRequest], gcfg: GenerationConfig, model_dtype: str, policy_path: str, seed: int,
              out_dir: Path) -> list[Completion]:
    """Generate (or reuse out_dir/completions.jsonl when policy, decoding and requests are unchanged), over
    the node's data-parallel replicas as the generate stage does (see generation/replicas.py)."""
    from drift_exp.generation.replicas import generate_on_node

    what = {"policy": policy_fingerprint(policy_path), "generation": result_fields(gcfg), "dtype": model_dtype,
            "seed": seed, "requests": [asdict(r) for r in reqs]}
    key = hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:16]
    marker, path = out_dir / "generation.json", out_dir / "completions.jsonl"
    if marker.exists() and path.exists() and json.loads(marker.read_text()).get("key") == key:
        log.info("eval: reusing %s", path)
        return read_jsonl(path, Completion)
    t0 = time.time()
    completions, throughput = generate_on_node(gcfg, model_dtype, policy_path, reqs, seed, out_dir / ".replicas")
    outputs = [c.outputs[0] for c in completions]
    write_jsonl(path, completions)
    write_json(marker, {"key": key, "policy": policy_path, "requests": len(reqs),
                        "empty": sum(not o.strip() for o in outputs),
                        "finished_with_eos": sum(bool(c.finished and c.finished[0]) for c in completions),
                        "truncated_prompts": sum(c.truncated_prompt for c in completions),
                        "mean_chars": round(sum(map(len, outputs)) / max(len(outputs), 1), 1),
                        "seconds": round(time.time() - t0, 2), "replicas": throughput["replicas"],
                        "tensor_parallel_size": throughput["tensor_parallel_size"],
                        "tokens_per_s": throughput["tokens_per_s"]})
    return completions


def evaluate(eval_cfg: EvalConfig, gen_cfg: GenerationConfig, model_dtype: str, scorer_cfg: ScorerConfig,
             policy_path: str, out_dir: Path, generator_name: str, seed: int) -> dict[str, Any]:
    """Run the configured benchmarks on one policy; return the metrics (also written to out_dir/metrics.json).

    scorer_cfg must have its path resolved (drift_exp.config.scorer_path), as for IterDPO's ranking.
    Keys appear only when computed: proxy {reward_mean, reward_std, n}; alpaca_eval {n_outputs, avg_length,
    win_rate, lc_win_rate, ...}; wildbench {n_outputs, n_scored, score, task_macro, groups, judge, cost_usd, ...}.
    """
    validate_eval(eval_cfg)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    benches = [b for b in BENCHMARKS if b in eval_cfg.benchmarks]
    if not benches:
        return {}
    data: dict[str, list[dict[str, Any]]] = {}
    reqs: dict[str, list[GenRequest]] = {}
    if "alpaca_eval" in benches:
        data["alpaca_eval"] = load_alpaca_eval(eval_cfg.alpaca_eval_source, eval_cfg.limit)
        reqs["alpaca_eval"] = alpaca_eval.requests(data["alpaca_eval"])
    if "wildbench" in benches:
        data["wildbench"] = load_wildbench(eval_cfg.wildbench_source, eval_cfg.wildbench_config,
                                           eval_cfg.wildbench_split, eval_cfg.limit)
        reqs["wildbench"] = wildbench.requests(data["wildbench"])
    if "proxy" in benches:
        data["proxy"] = load_proxy_prompts(eval_cfg.proxy_source, eval_cfg.limit)
        reqs["proxy"] = proxy.requests(data["proxy"])
    log.info("eval of %s: %s", policy_path, {b: len(r) for b, r in reqs.items()})
    # The judge's template and the leaderboard come from their official source: fetched (or refused,
    # offline without a cached copy) before anything is generated.
    official = _wildbench_sources(eval_cfg) if "wildbench" in benches else None

    gcfg = eval_generation_config(eval_cfg, gen_cfg)
    flat = [r for b in benches for r in reqs[b]]
    completions = _generate(flat, gcfg, model_dtype, policy_path, seed, out_dir)
    split: dict[str, list[Completion]] = {}
    start = 0
    for b in benches:
        split[b] = completions[start:start + len(reqs[b])]
        start += len(reqs[b])

    metrics: dict[str, Any] = {}
    if "alpaca_eval" in benches:
        metrics["alpaca_eval"] = _alpaca_eval(eval_cfg, data["alpaca_eval"], split["alpaca_eval"], out_dir,
                                              generator_name)
    if "wildbench" in benches:
        cache_dir = Path(eval_cfg.cache_dir) if eval_cfg.cache_dir else out_dir.parent.parent / "eval_cache"
        metrics["wildbench"] = _wildbench(eval_cfg, gcfg, data["wildbench"], reqs["wildbench"], split["wildbench"],
                                          policy_path, out_dir, generator_name, cache_dir, official)
    if "proxy" in benches:
        summary, rows = proxy.score(data["proxy"], split["proxy"], scorer_cfg)
        write_jsonl(out_dir / "proxy" / "rewards.jsonl", rows)
        metrics["proxy"] = {k: (round(v, 6) if isinstance(v, float) else v) for k, v in summary.items()}
    write_json(out_dir / "metrics.json", metrics)
    log.info("eval metrics: %s", json.dumps(metrics))
    return metrics


def _alpaca_eval(eval_cfg: EvalConfig, rows: list[dict[str, Any]], completions: list[Completion], out_dir: Path,
                 generator: str) -> dict[str, Any]:
    folder = out_dir / "alpaca_eval"
    outputs = alpaca_eval.output_rows(rows, completions, generator)
    path = folder / alpaca_eval.OUTPUTS_FILE
    alpaca_eval.write_model_outputs(path, outputs)
    m: dict[str, Any] = {"n_outputs": len(outputs), "avg_length": alpaca_eval.avg_length(outputs),
                         "model_outputs": str(path)}
    if eval_cfg.alpaca_eval_judge:
        why = alpaca_eval.evaluator_available()
        if why:
            log.warning("AlpacaEval judge skipped: %s; %s is ready for `alpaca_eval --model_outputs`", why, path)
            m["judge_skipped"] = why
        else:
            board = alpaca_eval.run_evaluator(path, folder, eval_cfg.alpaca_eval_annotator)
            m.update(alpaca_eval.read_leaderboard(board, generator))
            m["judge"] = eval_cfg.alpaca_eval_annotator
    return m


def _wildbench_sources(eval_cfg: EvalConfig) -> dict[str, Any] | None:
    """The judge template (and the leaderboard for WB-Elo) when the judge will run, else None."""
    judge = eval_cfg.judge
    if not (judge.enabled and judge.base_url):
        return None
    from drift_exp.evaluation.fetch import default_cache
    from drift_exp.evaluation.wb_leaderboard import load_leaderboard

    wcfg = eval_cfg.wildbench
    template, info = wildbench.load_template(wcfg, default_cache(wcfg.elo.cache_dir))
    board = load_leaderboard(wcfg.elo) if wcfg.elo.enabled else None
    return {"template": template, "info": info, "leaderboard": board}


def _elo(eval_cfg: EvalConfig, board: Any, records: list[dict[str, Any]], generator: str, out_dir: Path
         ) -> dict[str, Any]:
    from drift_exp.evaluation.wb_elo import wb_elo
    from drift_exp.evaluation.wb_leaderboard import elo_settings, our_scores, unique_name

    name = unique_name(generator, board.scores)
    settings = elo_settings(eval_cfg.wildbench.elo)
    result = wb_elo({**board.scores, name: our_scores(records)}, board.init, name, **settings)
    write_json(out_dir / "wildbench" / "elo.json", {"model": name, **result, "settings": settings,
                                                    "leaderboard": board.provenance})
    if result["elo"] is None:
        log.warning("WB-Elo: %s shares no scored task with the leaderboard's results; no Elo", name)
    return result


def _wildbench(eval_cfg: EvalConfig, gcfg: GenerationConfig, tasks: list[dict[str, Any]], reqs: list[GenRequest],
               completions: list[Completion], policy_path: str, out_dir: Path, generator: str,
               cache_dir: Path, official: dict[str, Any] | None = None) -> dict[str, Any]:
    from drift_exp.evaluation.judge import JudgeClient
    from drift_exp.generation import render_prompt
    from drift_exp.models import load_tokenizer

    tok = load_tokenizer(policy_path, padding_side="left")
    model_inputs = [render_prompt(tok, r) for r in reqs]
    configs = {"engine": gcfg.backend, "repetition_penalty": gcfg.repetition_penalty,
               "temperature": gcfg.temperature, "top_p": gcfg.top_p, "max_tokens": gcfg.max_new_tokens}
    rows = wildbench.output_rows(tasks, completions, model_inputs, generator, configs)
    path = out_dir / "wildbench" / f"{safe_name(generator)}.json"
    write_json(path, rows)
    checklists = {"source": eval_cfg.wildbench_source, "sha256": wildbench.checklist_digest(tasks), "n": len(tasks)}
    m: dict[str, Any] = {"n_outputs": len(rows), "model_outputs": str(path), "checklists": checklists}
    judge = eval_cfg.judge
    if judge.enabled and not judge.base_url:
        why = "eval.judge.base_url is not set"
        log.warning("WildBench judge skipped: %s", why)
        m["judge_skipped"] = why
    elif judge.enabled:
        official = official or _wildbench_sources(eval_cfg)
        assert official is not None
        info = official["info"]
        client = JudgeClient(judge, cache_dir)
        records = wildbench.judge(tasks, rows, client, judge, official["template"], info["version"])
        write_json(out_dir / "wildbench" / "scores.json", records)
        row = wb_scores(records, {t["session_id"]: task_groups(t) for t in tasks})
        m.update(n_scored=row["n_scored"], **leaderboard(row), judge=judge.model,
                 cost_usd=round(client.cost_usd, 6),
                 n_cached=sum(bool(r["meta_data"].get("cached")) for r in records),
                 n_failed=sum("error" in r["meta_data"] for r in records),
                 n_unparsed=sum(r["score"] is None and "error" not in r["meta_data"] for r in records),
                 template={k: info[k] for k in ("template", "source", "sha256", "proxy")})
        if official["leaderboard"] is not None and m["n_scored"]:
            elo = _elo(eval_cfg, official["leaderboard"], records, generator, out_dir)
            m.update(elo=elo["elo"], elo_detail={k: v for k, v in elo.items() if k != "elo"})
    return m
