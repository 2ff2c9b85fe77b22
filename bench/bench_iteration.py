"""Wall time of one DRIFT iteration: the project (`python -m drift_exp`) against a hand-written script.

What is measured
----------------
Both sides do the same work for iteration 1, starting from the same warm-start checkpoint (pi_0) and the
same DSAT records, on the tiny random Qwen2 model and the bundled sample data, on CPU:

  1. build the guided prompts (the authors' plain-text format) for every DSAT record,
  2. sample one chosen reply per record from pi_0 (temperature/top_p/max_new_tokens/batch size from the
     project's config, left padding, longest prompts first, each batch seeded from seed * 1000 + 1 and its
     index like the project),
  3. make the TRL conversational pairs {prompt, chosen: the sample, rejected: the DSAT reply},
  4. train one epoch of TRL DPO (the project's DPOConfig settings) and save the model.

Each side is timed as a whole subprocess (interpreter start, imports, loading, work, saving), with
`time.perf_counter` around `subprocess.run`:

  project   a copy of the setup run directory (prepare + warm start already done), then
            `python -m drift_exp iterations=1 tracking.mode=disabled hydra.run.dir=<copy>`, which resumes after
            the warm start and runs exactly iteration 1 (requests, generate, pairs, train).
  baseline  a minimal script (written by this file to the work directory) that uses transformers, datasets and
            TRL directly. It imports nothing from drift_exp: the guided prompt is re-implemented inline (the
            authors' gen-drift.py format, as in drift_exp.methods.prompts.plain_guided_text). The settings it
            uses come from the setup run's resolved config.yaml, so overrides reach both sides.

Both project commands also pass `eval.benchmarks=[]` (the baseline evaluates nothing). They run from a snapshot
of drift_exp/ (its config tree included) copied into the work directory at start, so edits to the working tree
during the benchmark cannot mix versions.

Setup (not timed): `python -m drift_exp iterations=1 tracking.mode=disabled hydra.run.dir=<work>/setup
run.stop_after=warm_start`. The runs alternate (proj, base, base, proj, ...) to spread machine noise. The report
gives every run's wall time, the medians, the ratio median(project) / median(baseline) (goal: <= 1.10), the
split each side records (project: iter_1/DONE generate seconds and train wall/runtime; baseline: its own
timers), and checks that both sides built identical prompts and sampled identical completions (same work).
The CPU seconds other processes used during each run are recorded too: on a shared machine, `--quiet-wait`
waits for them to go idle before a run and `--retries` reruns a disturbed run.

Usage: python bench/bench_iteration.py [--repeats 3] [--max-new-tokens N] [--out FILE] [--keep]
                                       [--quiet-wait S] [--retries N] [-- OVERRIDES]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
GOAL = 1.10
NOISY = 0.10  # others' CPU seconds per wall second above which a run is flagged as disturbed

BASELINE = r'''"""Hand-written DRIFT iteration 1 (transformers + TRL): guided sampling from pi_0, one epoch of DPO."""
import hashlib
import json
import random
import sys
import time

t0 = time.perf_counter()
import torch  # noqa: E402
from datasets import Dataset  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402
from trl import DPOConfig, DPOTrainer  # noqa: E402

t_imports = time.perf_counter()
ckpt, records_path, params_path, out_dir, dump_path = sys.argv[1:6]
P = json.load(open(params_path))
gen, dpo, seed = P["generation"], P["dpo"], P["seed"]


def guided_text(prompt, rejected, feedback, instruction):  # the authors' gen-drift.py plain-text prompt
    parts = [prompt[0]["content"] + "\n\n"] if prompt and prompt[0]["role"] == "system" else []
    for m in prompt:
        if m["role"] != "system":
            parts.append(("User" if m["role"] == "user" else "Assistant") + f": {m['content']}\n")
    parts += [f"Assistant: {rejected}\n", f"User: {feedback}\n", f"System: {instruction}\n", "Assistant: "]
    return "".join(parts)


records = [json.loads(line) for line in open(records_path) if line.strip()]
dsat = [r for r in records if r["meta"]["kind"] == "dsat"]
if P["max_dsat"] is not None and len(dsat) > P["max_dsat"]:
    keep = set(random.Random(seed).sample(range(len(dsat)), P["max_dsat"]))
    dsat = [r for i, r in enumerate(dsat) if i in keep]
prompts = [guided_text(r["prompt"], r["rejected"], r["feedback"], P["instruction"]) for r in dsat]

# Generate: left padding, prompts cut to their last max_prompt_length tokens, longest first.
device = "cuda" if torch.cuda.is_available() else "cpu"
tok = AutoTokenizer.from_pretrained(ckpt)
tok.padding_side, tok.truncation_side = "left", "left"
model = AutoModelForCausalLM.from_pretrained(ckpt, dtype=torch.float32).to(device).eval()
enc = dict(add_special_tokens=False, truncation=True, max_length=gen["max_prompt_length"])
lengths = [len(ids) for ids in tok(prompts, **enc)["input_ids"]]
order = sorted(range(len(prompts)), key=lambda i: -lengths[i])
outputs = [""] * len(prompts)
for s in range(0, len(order), gen["batch_size"]):
    batch = order[s:s + gen["batch_size"]]
    # each batch seeded by its index, as the project does (replica-invariant sampling)
    digest = hashlib.sha256(f"{seed * 1000 + 1}:{s // gen['batch_size']}".encode()).digest()
    torch.manual_seed(int.from_bytes(digest[:4], "little") & 0x7FFFFFFF)
    inputs = tok([prompts[i] for i in batch], padding=True, return_tensors="pt", **enc).to(device)
    with torch.no_grad():
        out = model.generate(**inputs, do_sample=True, temperature=gen["temperature"], top_p=gen["top_p"],
                             top_k=0, max_new_tokens=gen["max_new_tokens"], pad_token_id=tok.pad_token_id)
    texts = tok.batch_decode(out[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    for i, text in zip(batch, texts):
        outputs[i] = text.strip()
t_gen = time.perf_counter()

# Pairs: chosen = the fresh sample, rejected = the real DSAT reply.
rows = [{"prompt": r["prompt"], "chosen": [{"role": "assistant", "content": o}],
         "rejected": [{"role": "assistant", "content": r["rejected"]}]} for r, o in zip(dsat, outputs) if o]

# One epoch of DPO from pi_0 (the reference is pi_0 too: TRL loads it from the model's path).
cuda = torch.cuda.is_available()
bf16 = dpo.pop("bf16")
bf16 = cuda and torch.cuda.is_bf16_supported() if bf16 == "auto" else bf16
args = DPOConfig(output_dir=f"{out_dir}/.trainer", use_cpu=not cuda, bf16=bf16,
                 gradient_checkpointing=dpo.pop("gradient_checkpointing") and cuda, save_strategy="no",
                 report_to="none", **dpo)
tok.padding_side = "right"
trainer = DPOTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tok)
result = trainer.train()
trainer.save_model(f"{out_dir}/checkpoint")
tok.save_pretrained(f"{out_dir}/checkpoint")
t_end = time.perf_counter()
json.dump({"prompts": prompts, "outputs": outputs, "pairs": len(rows), "steps": trainer.state.global_step,
           "imports_s": t_imports - t0, "generate_s": t_gen - t_imports, "train_s": t_end - t_gen,
           "train_runtime_s": result.metrics.get("train_runtime")}, open(dump_path, "w"))
'''


def env() -> dict[str, str]:
    """The same environment for both sides."""
    e = os.environ.copy()
    e.pop("OMP_NUM_THREADS", None)
    e.update(WANDB_MODE="disabled", TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1")
    return e


def cpu_children() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def cpu_machine() -> float:
    """CPU seconds every process on the machine has used since boot (Linux /proc/stat; 0 elsewhere)."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return 0.0
    busy = sum(int(x) for i, x in enumerate(fields) if i not in (3, 4))  # all but idle and iowait
    return busy / os.sysconf("SC_CLK_TCK")


def wait_quiet(max_wait: float) -> float:
    """Wait (at most max_wait seconds) until other processes use < NOISY of a core over 5 s; return the wait."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < max_wait:
        m0 = cpu_machine()
        time.sleep(5)
        if cpu_machine() - m0 < NOISY * 5:
            break
    return time.perf_counter() - t0


def timed(cmd: list[str], log: Path, cwd: Path) -> tuple[float, float, float]:
    """Run cmd to completion, stdout+stderr to log; exit on failure. Return its wall and user+sys CPU seconds,
    and the CPU seconds other processes used meanwhile (a noise gauge: this machine may be shared)."""
    with open(log, "w") as f:
        m0, c0, t0 = cpu_machine(), cpu_children(), time.perf_counter()
        proc = subprocess.run(cmd, cwd=cwd, env=env(), stdout=f, stderr=subprocess.STDOUT)
        wall, cpu, others = time.perf_counter() - t0, cpu_children() - c0, cpu_machine() - m0
    if proc.returncode:
        tail = "".join(log.read_text(errors="replace").splitlines(keepends=True)[-30:])
        sys.exit(f"command failed ({proc.returncode}): {' '.join(cmd)}\n--- last lines of {log} ---\n{tail}")
    return wall, cpu, max(others - cpu, 0.0)


def snapshot(dest: Path) -> Path:
    """Copy the package (its config tree included), so that edits to the working tree during the benchmark cannot
    mix versions between runs. `python -m drift_exp` run from `dest` imports this copy (the current directory comes
    first on sys.path, before the editable install)."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(REPO / "drift_exp", dest / "drift_exp", ignore=ignore, dirs_exist_ok=True)
    return dest


def project_cmd(run_dir: Path, overrides: list[str]) -> list[str]:
    # eval.benchmarks=[]: the baseline evaluates nothing, so neither does the project side. trainer.truncation=trl:
    # the baseline is plain TRL 1.16 (keeps the start of long pairs, drops those whose prompt fills max_length).
    return [sys.executable, "-m", "drift_exp", "iterations=1", "tracking.mode=disabled", "eval.benchmarks=[]",
            "trainer.truncation=trl", f"hydra.run.dir={run_dir}", *overrides]


def baseline_params(cfg: dict[str, Any]) -> dict[str, Any]:
    """What the baseline needs, from the project's resolved config (mapped like drift_exp/training/dpo.py)."""
    t, g = cfg["trainer"], cfg["generation"]
    if t["global_batch_size"] not in (None, t["micro_batch_size"]):  # null: micro_batch_size per device
        sys.exit("the baseline assumes trainer.global_batch_size null or == trainer.micro_batch_size (no accumulation)")
    m = cfg["method"]
    if m["kind"] != "drift" or m["prompt_format"] != "plain" or not m["guided"] or m["n_samples"] != 1:
        sys.exit("the baseline implements guided DRIFT with the plain prompt format and one sample per record")
    # null = the checkpoint's generation_config.json, which for the tiny model sets neither: off
    if g["top_k"] not in (-1, None) or g["repetition_penalty"] not in (1.0, None):
        sys.exit("the baseline samples with top_k and repetition_penalty off (the tiny checkpoint sets neither)")
    alpha = t["rpo_alpha"]
    return {
        "seed": cfg["seed"],
        "max_dsat": cfg["setting"].get("max_records", cfg["setting"].get("max_dsat")),  # renamed in the project
        "instruction": cfg["method"]["instruction"],
        "generation": {k: g[k] for k in ("temperature", "top_p", "max_new_tokens", "max_prompt_length", "batch_size")},
        "dpo": {
            "seed": cfg["seed"], "data_seed": cfg["seed"], "num_train_epochs": t["epochs"],
            "per_device_train_batch_size": t["micro_batch_size"], "gradient_accumulation_steps": 1,
            "learning_rate": t["learning_rate"], "lr_scheduler_type": t["lr_scheduler_type"],
            "warmup_steps": t["warmup_ratio"],  # transformers 5: a float < 1 is a ratio, as the project passes it
            "optim": t["optim"], "beta": t["beta"], "max_length": t["max_length"],
            "max_grad_norm": t["max_grad_norm"], "logging_steps": t["logging_steps"],
            "bf16": "auto" if t["bf16"] is None else t["bf16"],  # auto: where the GPU supports it, like the project
            "gradient_checkpointing": t["gradient_checkpointing"],  # only on CUDA, like the project
            "loss_type": ["sigmoid", "sft"] if alpha > 0 else ["sigmoid"],
            "loss_weights": [1.0, alpha] if alpha > 0 else [1.0],
        },
    }


def project_split(run_dir: Path, wall: float) -> dict[str, Any]:
    done = json.loads((run_dir / "iter_1" / "DONE").read_text())
    missing = [s for s in ("requests", "generate", "pairs", "train") if s not in done]
    if missing:
        sys.exit(f"{run_dir}/iter_1/DONE lacks the stage(s) {missing}")
    metrics = json.loads((run_dir / "iter_1" / "metrics.json").read_text())
    gen, train = done["generate"]["stats"]["seconds"], done["train"]["stats"]["wall_s"]
    return {"generate_s": gen, "train_s": train, "train_runtime_s": metrics["train"]["runtime_s"],
            "other_s": round(wall - gen - train, 2), "pairs": done["pairs"]["stats"].get("pairs"),
            "steps": metrics["train"]["steps"]}


def baseline_split(dump: dict[str, Any], wall: float) -> dict[str, Any]:
    gen, train = dump["generate_s"], dump["train_s"]
    return {"generate_s": round(gen, 2), "train_s": round(train, 2), "train_runtime_s": dump["train_runtime_s"],
            "imports_s": round(dump["imports_s"], 2), "other_s": round(wall - gen - train, 2),
            "pairs": dump["pairs"], "steps": dump["steps"]}


def same_work(proj_dir: Path, dump: dict[str, Any]) -> dict[str, Any]:
    """Did both sides build the same prompts and sample the same completions?"""
    requests = [json.loads(line) for line in open(proj_dir / "iter_1" / "requests.jsonl")]
    completions = [json.loads(line) for line in open(proj_dir / "iter_1" / "completions.jsonl")]
    proj_out = [c["outputs"][0] for c in completions]
    return {
        "records": len(requests),
        "prompts_identical": [r["text"] for r in requests] == dump["prompts"],
        "completions_identical": sum(a == b for a, b in zip(proj_out, dump["outputs"], strict=False)),
        "project_chars": sum(map(len, proj_out)),
        "baseline_chars": sum(map(len, dump["outputs"])),
    }


def med(runs: list[dict[str, Any]], side: str, key: str) -> float | None:
    values = [r[key] if key in r else r["split"].get(key) for r in runs if r["side"] == side]
    values = [v for v in values if v is not None]
    return round(statistics.median(values), 2) if values else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=3, help="runs of each side (default 3)")
    ap.add_argument("--max-new-tokens", type=int, default=None,
                    help="generation.max_new_tokens for both sides (default: the project's, 512)")
    ap.add_argument("--out", type=Path, default=Path("/tmp/bench_iteration.json"), help="JSON results")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (run dirs, logs, checkpoints)")
    ap.add_argument("--workdir", type=Path, default=None, help="work directory (default: a new one under /tmp)")
    ap.add_argument("--quiet-wait", type=float, default=0, metavar="S",
                    help="before each timed run, wait up to S seconds for other processes to go idle (shared machines)")
    ap.add_argument("--retries", type=int, default=0, metavar="N",
                    help="rerun a run disturbed by other processes up to N times (the disturbed one is discarded)")
    ap.add_argument("overrides", nargs="*", help="Hydra overrides for both sides, after '--'")
    a = ap.parse_args()
    overrides = list(a.overrides)
    if a.max_new_tokens is not None:
        overrides.append(f"generation.max_new_tokens={a.max_new_tokens}")
    work = a.workdir or Path(tempfile.mkdtemp(prefix="bench_iteration_", dir="/tmp"))
    work.mkdir(parents=True, exist_ok=True)
    logs = work / "logs"
    logs.mkdir(exist_ok=True)

    src = snapshot(work / "src")
    setup = work / "setup"
    print(f"work directory {work} (project snapshot in {src})\nsetup (not timed): warm start ...", flush=True)
    setup_s, _, _ = timed(project_cmd(setup, [*overrides, "run.stop_after=warm_start"]), logs / "setup.log", src)
    ckpt, records = setup / "iter_0" / "checkpoint", setup / "data" / "records.jsonl"
    if not (ckpt / "config.json").exists() or not records.exists():
        sys.exit(f"setup did not leave {ckpt} and {records}")
    cfg = yaml.safe_load((setup / "config.yaml").read_text())
    params = baseline_params(cfg)
    (work / "baseline_params.json").write_text(json.dumps(params, indent=2))
    script = work / "baseline_iteration.py"
    script.write_text(BASELINE)
    print(f"setup took {setup_s:.1f}s; timing {a.repeats} runs of each side", flush=True)

    def run_project(r: int) -> dict[str, Any]:
        run_dir = work / f"proj_{r}"
        shutil.rmtree(run_dir, ignore_errors=True)
        shutil.copytree(setup, run_dir)
        wall, cpu, others = timed(project_cmd(run_dir, overrides), logs / f"proj_{r}.log", src)
        return {"wall_s": wall, "cpu_s": cpu, "others_cpu_s": others, "split": project_split(run_dir, wall)}

    def run_baseline(r: int) -> dict[str, Any]:
        out_dir = work / f"base_{r}"
        shutil.rmtree(out_dir, ignore_errors=True)
        out_dir.mkdir()
        cmd = [sys.executable, str(script), str(ckpt), str(records), str(work / "baseline_params.json"),
               str(out_dir), str(out_dir / "dump.json")]
        wall, cpu, others = timed(cmd, logs / f"base_{r}.log", out_dir)
        if not (out_dir / "checkpoint" / "config.json").exists():
            sys.exit(f"baseline run {r} saved no model in {out_dir}/checkpoint")
        dumps[r] = json.loads((out_dir / "dump.json").read_text())
        return {"wall_s": wall, "cpu_s": cpu, "others_cpu_s": others, "split": baseline_split(dumps[r], wall)}

    runs: list[dict[str, Any]] = []
    discarded: list[dict[str, Any]] = []
    dumps: dict[int, dict[str, Any]] = {}
    for r in range(a.repeats):
        for side in ("project", "baseline") if r % 2 == 0 else ("baseline", "project"):
            for attempt in range(a.retries + 1):
                waited = wait_quiet(a.quiet_wait) if a.quiet_wait > 0 else 0.0
                rec = run_project(r) if side == "project" else run_baseline(r)
                rec = {"side": side, "repeat": r, "attempt": attempt, "waited_s": round(waited, 1),
                       **{k: round(v, 2) if isinstance(v, float) else v for k, v in rec.items()}}
                disturbed = rec["others_cpu_s"] > NOISY * rec["wall_s"]
                print(f"  {side:8s} run {r}: {rec['wall_s']:6.1f}s wall, {rec['cpu_s']:6.1f}s cpu, "
                      f"others {rec['others_cpu_s']:5.1f}s cpu{' (disturbed)' if disturbed else ''}  {rec['split']}",
                      flush=True)
                if disturbed and attempt < a.retries:
                    discarded.append(rec)
                    continue
                runs.append(rec)
                break
    checks = [same_work(work / "proj_0", d) for _, d in sorted(dumps.items())]

    med_p, med_b = med(runs, "project", "wall_s"), med(runs, "baseline", "wall_s")
    ratio = med_p / med_b
    result = {
        "command": " ".join([sys.executable, *sys.argv]),
        "overrides": overrides,
        "repeats": a.repeats,
        "cpus": os.cpu_count(),
        "setup_s": round(setup_s, 2),
        "runs": runs,
        "discarded_disturbed_runs": discarded,
        "median_s": {"project": med_p, "baseline": med_b},
        "median_cpu_s": {side: med(runs, side, "cpu_s") for side in ("project", "baseline")},
        "median_split_s": {side: {k: med(runs, side, k) for k in ("generate_s", "train_s", "train_runtime_s",
                                                                  "other_s")} for side in ("project", "baseline")},
        "ratio": round(ratio, 3),
        "goal": GOAL,
        "meets_goal": ratio <= GOAL,
        "disturbed_runs": sum(x["others_cpu_s"] > NOISY * x["wall_s"] for x in runs),
        "same_work": checks,
        "baseline_params": params,
        "work_dir": str(work) if a.keep else None,
    }
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=2))

    print("\n| run | side | wall s | cpu s | generate s | train s (trainer runtime s) | other s | others' cpu s |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for x in runs:
        s = x["split"]
        print(f"| {x['repeat']} | {x['side']} | {x['wall_s']:.1f} | {x['cpu_s']:.1f} | {s['generate_s']:.1f} | "
              f"{s['train_s']:.1f} ({s['train_runtime_s']:.1f}) | {s['other_s']:.1f} | {x['others_cpu_s']:.1f} |")
    for side in ("project", "baseline"):
        m = result["median_split_s"][side]
        print(f"| median | {side} | {result['median_s'][side]:.1f} | {result['median_cpu_s'][side]:.1f} | "
              f"{m['generate_s']:.1f} | {m['train_s']:.1f} ({m['train_runtime_s']:.1f}) | {m['other_s']:.1f} | |")
    noisy = [x for x in runs if x["others_cpu_s"] > NOISY * x["wall_s"]]
    if noisy:
        print(f"warning: other processes used > {NOISY:.0%} of a core during {len(noisy)} of {len(runs)} runs; "
              "the machine was shared and these timings are noisy")
    verdict = "meets" if ratio <= GOAL else "misses"
    print(f"\nratio median(project) / median(baseline) = {ratio:.3f} ({verdict} the goal <= {GOAL})")
    for c in checks:
        print(f"same work: prompts identical {c['prompts_identical']}, "
              f"completions identical {c['completions_identical']}/{c['records']}")
    print(f"results: {a.out}")
    if a.keep:
        print(f"kept {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
