"""Helpers more than one test module uses: a test module imports them from here, never from another test module.

- `drift_exp`, `ok`, `mtimes`, `FAST`: run `python -m drift_exp` on a run directory and read what it left.
- `requests`, `run_hf`, `hf_effective_as_vllm`: generation requests that cover every prompt shape, and the HF
  backend run for real with its prompt rows and effective sampling settings recorded.
- `WB_TEMPLATE`, `write_leaderboard`: WildBench's score template and a two-model leaderboard as local files.
- `load`: a config composed as Hydra would, from overrides (no run).
- `DPO_PAIRS`: eight (prompt, chosen, rejected) texts for DPO steps on the tiny model.
- `write_run`, `wb`, `write_experiment_run`, `EXPERIMENT`, `wandb_teardown`: run folders and an offline W&B run
  made up for the report and the dashboards.
- `LocalJudge`, `ScoringJudge`, `judged_sweep_overrides`: a local judge (a fixed score, or one that depends on
  the reply), and the overrides that
  make a CPU sweep judge WildBench with it and rate WB-Elo against a fixture leaderboard.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from drift_exp.config import Config, GenerationConfig
from drift_exp.evaluation.config import EloConfig
from drift_exp.records import GenRequest

from .conftest import CONF, ROOT

# ------------------------------------------------------------------------------ running the CLI on a run dir

FAST = ["generation.max_new_tokens=48", "trainer.max_length=512", "trainer.rpo_alpha=0"]


def drift_exp(run_dir: Path, *overrides: str, kill_at: str | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, WANDB_MODE="offline")
    env.pop("DRIFT_EXP_KILL_AT", None)
    if kill_at:
        env["DRIFT_EXP_KILL_AT"] = kill_at
    cmd = [sys.executable, "-m", "drift_exp", f"hydra.run.dir={run_dir}", *FAST, *overrides]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)


def ok(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]


def mtimes(run_dir: Path, markers: bool = True) -> dict[str, int]:
    """Modification times of the stage outputs (DONE markers grow as later stages finish: markers=False)."""
    skip = {"__main__.log", "config.yaml", ".lock"} | (set() if markers else {"DONE"})
    return {str(p.relative_to(run_dir)): p.stat().st_mtime_ns for p in run_dir.rglob("*")
            if p.is_file() and "wandb" not in p.parts and ".hydra" not in p.parts and p.name not in skip}


# ------------------------------------------------------------------------------ generation

def requests() -> list[GenRequest]:
    long = "tell me more about byte-level tokenisers and why left truncation keeps the reply's cue " * 3
    return [
        GenRequest("r0", "chosen", [{"role": "user", "content": "Hi there"}], n=2),
        GenRequest("r1", "rejected", [{"role": "system", "content": "Be brief."},
                                      {"role": "user", "content": "What is DPO?"},
                                      {"role": "assistant", "content": "A preference loss."},
                                      {"role": "user", "content": "Shorter, please."}], n=2),
        GenRequest("r2", "chosen", [], n=2, text="User: hello\nAssistant: hi\nSystem: be nicer\nAssistant:"),
        GenRequest("r3", "candidate", [{"role": "user", "content": long}], n=2),  # cut
        GenRequest("r4", "candidate", [], n=2, text="User: " + long + "\nAssistant:"),  # cut
        GenRequest("r5", "chosen", [{"role": "user", "content": "Ünïcödé ✓ 日本語"}], n=2),
    ]


def run_hf(model_path: Path, cfg: GenerationConfig, reqs: list[GenRequest], monkeypatch):
    """HFGenerator.generate for real, recording each batch's prompt rows and effective generation config."""
    import drift_exp.generation.hf as hf_module  # torch and transformers: only for the tests that generate
    from drift_exp.generation.hf import HFGenerator
    from drift_exp.models import load_policy

    calls = []

    def recording_load_policy(path, dtype, *args, **kwargs):
        model = load_policy(path, dtype, *args, **kwargs)
        prepare = model._prepare_generation_config
        generate = model.generate

        def prepare_and_record(generation_config, *a, **kw):
            effective, model_kwargs = prepare(generation_config, *a, **kw)
            calls[-1]["config"] = effective
            return effective, model_kwargs

        def generate_and_record(input_ids=None, attention_mask=None, **kw):
            rows = [ids[mask.bool()].tolist() for ids, mask in zip(input_ids, attention_mask, strict=True)]
            calls.append({"rows": rows})
            return generate(input_ids=input_ids, attention_mask=attention_mask, **kw)

        model._prepare_generation_config = prepare_and_record
        model.generate = generate_and_record
        return model

    monkeypatch.setattr(hf_module, "load_policy", recording_load_policy)
    completions = HFGenerator(cfg, "float32").generate(str(model_path), reqs, seed=0)
    return completions, calls


def hf_effective_as_vllm(gen) -> dict:
    """The settings transformers samples with, in SamplingParams names (off = what vLLM calls off)."""
    sampling = bool(gen.do_sample)
    return {
        "n": gen.num_return_sequences,
        "temperature": gen.temperature if sampling else 0.0,
        "top_p": gen.top_p if sampling and gen.top_p is not None else 1.0,
        "top_k": gen.top_k if sampling and gen.top_k else -1,
        "repetition_penalty": 1.0 if gen.repetition_penalty is None else gen.repetition_penalty,
        "max_tokens": gen.max_new_tokens,
        "stop_token_ids": sorted(gen.eos_token_id if isinstance(gen.eos_token_id, list) else [gen.eos_token_id]),
    }


# ------------------------------------------------------------------------------ WildBench files

WB_TEMPLATE = Path(__file__).parent / "fixtures" / "eval" / "wb_score_template.md"


def write_leaderboard(folder: Path, sessions: list[str]) -> EloConfig:
    """Two leaderboard models in WildBench's file formats, as local copies."""
    results = folder / "results"
    results.mkdir(parents=True)
    rows_a = [{"session_id": s, "parsed_result": {}, "meta_data": {}, "model_test": "model-a", "score": "3",
               "model_output": "an answer"} for s in sessions]
    rows_b = [{"session_id": s, "score": "7", "model_output": "another answer"} for s in sessions]
    rows_b.append({"session_id": "unscored", "score": "N/A", "model_output": "x"})
    (results / "model-a.json").write_text(json.dumps(rows_a))
    (results / "model-b@together.json").write_text(json.dumps(rows_b))
    stats = {"model-a": {"Arena Elo (hard-en) - latest": 1150, "AE2.0": "-"},
             "model-b@together": {"Arena Elo (hard-en) - latest": "-"}}
    (folder / "all_stat.json").write_text(json.dumps(stats))
    return EloConfig(enabled=True, results_url=str(results), models=["model-a", "model-b@together"],
                     init_url=str(folder / "all_stat.json"), rounds=4, cache_dir=str(folder / "cache"))


# ------------------------------------------------------------------------------ DPO pairs

# test_diagnostics trains on them; test_golden_loss appends two more (their order is part of the golden run).
DPO_PAIRS = [
    ("How do I boil an egg?", "Put it in boiling water for 8 minutes.", "Eggs are oval."),
    ("Name a prime number.", "Seven is prime.", "Nine, I think."),
    ("Translate 'cat' to French.", "Chat.", "Chien."),
    ("What is 2 + 2?", "Four.", "Twenty-two, obviously, when you write them side by side."),
    ("Give me a synonym for happy.", "Joyful.", "Sad."),
    ("Capital of Italy?", "Rome is the capital of Italy.", "Milan."),
    ("Say hi.", "Hi!", "No."),
    ("Is water wet?", "Water makes things wet; whether it is itself wet depends on the definition.", "Yes."),
]


# ------------------------------------------------------------------------------ composing a config

def load(overrides: list[str]) -> Config:
    """The typed config Hydra composes from these overrides (no run)."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from drift_exp.config import register_configs

    register_configs()  # the schema, the cells and the run-directory resolver (idempotent)
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        dcfg = compose(config_name="config", overrides=overrides)
    return OmegaConf.to_object(dcfg)


# ------------------------------------------------------------------------------ the report and the dashboards

def write_run(root: Path, data: str, model: str, method: str, setting: str, evals: dict[int, dict],
              seed: int = 42) -> Path:
    run = root / f"{data}-{model}-{method}-{setting}-s{seed}"
    for k, ev in evals.items():
        (run / f"iter_{k}").mkdir(parents=True, exist_ok=True)
        history = [{"loss": 0.69 - 0.01 * i, "rewards/chosen": 0.01 * i, "rewards/rejected": -0.02 * i, "step": i + 1}
                   for i in range(4)]
        metrics = {"iteration": k, "experiment": run.name, "method": method, "data": data, "model": model,
                   "setting": setting, "seed": seed,
                   "train": {"final": {"loss": 0.6 - 0.1 * k, "rewards/margins": 0.05 * k}, "history": history},
                   "eval": ev}
        (run / f"iter_{k}" / "metrics.json").write_text(json.dumps(metrics))
    return run


def wb(task: float, creative: float | None = None, elo: float | None = None) -> dict:
    out = {"task_macro": task, "score": task + 1, "n_outputs": 1024, "n_scored": 1024, "groups": {}}
    if creative is not None:
        out["groups"]["Creative Tasks"] = creative
    if elo is not None:
        out["elo"] = elo
    return out


EXPERIMENT = "wildfeedback-qwen7b-drift-full-s42"


def wandb_teardown() -> None:
    """End this process's W&B service, which writes the offline runs' files: after it, they are complete."""
    import wandb

    wandb.teardown()


def write_experiment_run(root: Path) -> Path:
    """An offline W&B run in the layout of names.py: one run per experiment, per-iteration numbers against
    `iteration`, the training curves against a global step summed over the iterations, the Base row in the summary."""
    import wandb

    from drift_exp.names import WANDB_ITERATION, WANDB_PER_ITERATION, WANDB_TRAIN, WANDB_TRAIN_STEP

    config = {"seed": 42, "method": {"name": "drift"}, "data": {"name": "wildfeedback"}, "model": {"name": "qwen7b"},
              "setting": {"name": "full"}, "run": {"sweep_name": "table3"},
              "tracking": {"project": "drift_exp", "entity": None}}
    run = wandb.init(project="drift_exp", name=EXPERIMENT, group=EXPERIMENT[:-4], job_type="experiment",
                     mode="offline", dir=str(root), config=config, tags=["sweep:table3", "method:drift"])
    run.define_metric(WANDB_TRAIN_STEP)
    run.define_metric(WANDB_TRAIN + "*", step_metric=WANDB_TRAIN_STEP)
    run.define_metric(WANDB_ITERATION)
    for prefix in WANDB_PER_ITERATION:
        run.define_metric(prefix + "*", step_metric=WANDB_ITERATION)
    run.summary.update({"base/eval/wildbench/task_macro": 48.0, "base/eval/alpaca_eval/win_rate": 37.0})
    step = 0
    for k, task in ((0, 49.0), (1, 51.0), (2, 50.0)):
        for i in range(3):
            step += 1
            run.log({WANDB_TRAIN_STEP: step, "train/iteration_step": i + 1, "train/loss": 0.7 - 0.1 * i - 0.01 * k,
                     "train/rewards/chosen": 0.1 * i, "train/rewards/rejected": -0.1 * i,
                     "train/rewards/margins": 0.2 * i + k})
        run.log({WANDB_ITERATION: k, "stage/train/steps": 3, "stage/train/train_loss": 0.6,
                 "eval/wildbench/task_macro": task, "eval/wildbench/groups/Creative Tasks": task + 1,
                 "heldout/reward_accuracy": 0.5 + 0.1 * k})
    run.finish()
    wandb_teardown()
    return Path(run.dir).parent


class LocalJudge:
    """A local OpenAI-compatible judge: POST /v1/chat/completions (JSON mode) -> a WB-Score verdict whose score is
    `score(prompt)`, with a usage field. Records the calls and the Authorization headers it saw; a request on
    another path or without JSON mode is answered 400 (a failed judge call)."""

    def __init__(self, score=lambda prompt: 7, usage: tuple[int, int] = (500, 40)):
        self.calls = 0
        self.auth: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's name)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if self.path != "/v1/chat/completions" or body.get("response_format") != {"type": "json_object"}:
                    self.send_error(400, "expected POST /v1/chat/completions in JSON mode")
                    return
                outer.calls += 1
                outer.auth.append(self.headers.get("Authorization", ""))
                verdict = {"strengths": "on topic", "weaknesses": "short",
                           "score": str(score(body["messages"][-1]["content"]))}
                data = json.dumps({"choices": [{"message": {"role": "assistant", "content": json.dumps(verdict)}}],
                                   "usage": {"prompt_tokens": usage[0], "completion_tokens": usage[1]}}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def reply_score(prompt: str) -> int:
    """1..10 from a hash of the text between <<REPLY>> and <</REPLY>>: different replies, different scores."""
    reply = re.search(r"<<REPLY>>(.*?)<</REPLY>>", prompt, re.S)
    text = reply.group(1) if reply else prompt
    return 1 + int(hashlib.sha256(text.encode()).hexdigest(), 16) % 10


class ScoringJudge(LocalJudge):
    """A local judge whose WB-Score depends on the reply it is shown, so different policies get different scores,
    reproducibly."""

    def __init__(self):
        super().__init__(score=reply_score, usage=(100, 10))


def judged_sweep_overrides(judge_url: str, root: Path) -> list[str]:
    """Overrides that make a CPU sweep judge WildBench (3 bundled tasks, the local judge) and rate WB-Elo
    against a fixture leaderboard of two models, one anchored."""
    from drift_exp.evaluation.benchmarks import load_wildbench


    elo = write_leaderboard(root / "leaderboard", [t["session_id"] for t in load_wildbench("sample", limit=3)])
    return ["eval.benchmarks=[proxy,wildbench]", "eval.limit=3", "eval.max_new_tokens=8", "eval.temperature=0.7",
            "eval.top_p=0.9", "eval.judge.enabled=true", f"eval.judge.base_url={judge_url}",
            "eval.judge.api_key_env=null", "eval.judge.backoff_s=0", f"eval.wildbench.template_file={WB_TEMPLATE}",
            "eval.wildbench.elo.enabled=true", f"eval.wildbench.elo.results_url={elo.results_url}",
            "eval.wildbench.elo.models=[model-a,'model-b@together']", f"eval.wildbench.elo.init_url={elo.init_url}",
            "eval.wildbench.elo.rounds=8", f"eval.wildbench.elo.cache_dir={elo.cache_dir}"]
