"""GPU throughput of DPO training and HF generation on a Qwen2.5-1.5B-shaped model (random weights, no download).

What is measured (one CUDA GPU, no DeepSpeed; each training path runs in its own process, so its peak memory
and accelerate state are its own; generation runs in the process that builds the model)
-------------------------------------------------------------------------------------------------------------
  project   the project's training code itself: ``drift_exp.training.dpo.train_dpo`` with ``TrainerConfig``
            defaults (fp32 master weights + bf16 autocast, RMSprop, gradient checkpointing, RPO loss, the
            reference log-probs precomputed on GPU when ``trainer.ref_mode`` is auto), global batch 4 / micro 4.
  plain     TRL's DPOTrainer with its defaults (model loaded as saved, i.e. bf16 weights; AdamW; lr 1e-6;
            gradient checkpointing; live reference model), given only what is needed to do the same work:
            the same rows, max_length, per-device batch and gradient accumulation.
  generate  ``model.generate`` (bf16, left padding) with the project's generation settings (batch 16,
            temperature 0.7, top_p 0.9), forced to produce exactly --gen-new-tokens tokens per prompt.

Every training row is a random byte-level prompt of --prompt-len tokens whose chosen and rejected completions are
long enough to be truncated at --seq (2048), so every sequence is exactly --seq tokens: a step processes
global_batch x 2 x seq tokens. Steps are timed with CUDA synchronisation at each optimizer step's start and end;
the first --warmup steps are not counted. Reported:

  tokens/s  policy tokens (chosen + rejected) per second over the timed steps
  MFU       6 x N x tokens/s / peak bf16 FLOP/s, N = parameter count (tied embedding counted once). This is the
            usual model-FLOPs utilisation: the gradient-checkpointing recompute, the reference forward (live or
            precomputed) and attention score FLOPs are not counted as useful work. ``mfu_attn`` adds the
            attention term (12 x layers x hidden x seq per token).
  peak GB   torch.cuda.max_memory_allocated of that process (model, optimizer, activations, reference)
  init s    DPOTrainer(...) itself: tokenisation and, on the project path, the reference log-prob precompute

Peak FLOP/s: dense bf16 of the detected GPU (H100 SXM / H200 989 TFLOP/s, H100 PCIe 756, H100 NVL 835,
A100 312); anything else needs --peak-tflops.

Usage:
  python bench/bench_gpu_dpo.py                           # all three paths, ~10 min on an H100
  python bench/bench_gpu_dpo.py --paths project,plain --steps 20 --out /tmp/gpu_dpo.json
  python bench/bench_gpu_dpo.py --dry-run                 # CPU: tiny shape, 2 steps per path (checks the code)
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import string
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]

# Qwen2.5-1.5B (config.json of Qwen/Qwen2.5-1.5B-Instruct), built from the config with random weights.
QWEN25_15B = dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
                  num_key_value_heads=2, vocab_size=151936, max_position_embeddings=32768, rope_theta=1000000.0,
                  rms_norm_eps=1e-6, tie_word_embeddings=True)
# --dry-run: same architecture, tiny.
TINY = dict(QWEN25_15B, hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=2,
            num_key_value_heads=1, vocab_size=512, max_position_embeddings=4096)

PEAK_BF16_TFLOPS = [  # (substring of torch.cuda.get_device_name(), dense bf16 TFLOP/s); first match wins
    ("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H100", 989.0), ("H200", 989.0), ("GH200", 989.0),
    ("A100", 312.0),
]


def detect_peak_tflops(device_name: str) -> float | None:
    for key, tflops in PEAK_BF16_TFLOPS:
        if key.lower() in device_name.lower():
            return tflops
    return None


def random_text(rng: random.Random, n: int) -> str:
    """n characters; the byte-level test tokenizer (no merges) makes one token of each."""
    return "".join(rng.choice(string.ascii_lowercase + "     ") for _ in range(n))


def make_pairs(n_rows: int, prompt_len: int, seq: int, seed: int = 0):
    from drift_exp.records import PreferencePair

    rng = random.Random(seed)
    return [PreferencePair(id=str(i), prompt=[{"role": "user", "content": random_text(rng, prompt_len)}],
                           chosen=random_text(rng, seq), rejected=random_text(rng, seq)) for i in range(n_rows)]


# ----------------------------------------------------------------------------------------------------- children


def child_build(a: argparse.Namespace) -> dict[str, Any]:
    """Save the random model (bf16, like a real checkpoint) + the byte-level tokenizer to a folder."""
    import torch
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    from drift_exp.config import TinyModelConfig
    from drift_exp.models import build_tiny

    folder = Path(a.workdir) / "model"
    shape = TINY if a.dry_run else QWEN25_15B
    tok = AutoTokenizer.from_pretrained(build_tiny(TinyModelConfig(), root=Path(a.workdir) / "tiny"))
    config = Qwen2Config(**shape, eos_token_id=2, pad_token_id=0, bos_token_id=None)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    with torch.device(device):  # initialise on the GPU: seconds instead of a minute on the CPU
        model = Qwen2ForCausalLM(config)
    model.to(torch.bfloat16)
    model.generation_config.eos_token_id = 2
    model.generation_config.pad_token_id = 0
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    n_params = sum(p.numel() for p in model.parameters())  # tied embedding counted once
    built = {"model_dir": str(folder), "n_params": n_params, "shape": shape}
    if "generate" in a.paths.split(","):  # reuse this process and the model it holds (saves a start-up)
        if not torch.cuda.is_available():
            model.float()  # bf16 matmuls are slow on a CPU
        built["generate"] = generate(a, model, tok)
    return built


class StepTimer:
    """A TrainerCallback timing optimizer steps (CUDA-synchronised); keeps a handle on its trainer."""

    def __init__(self, warmup: int):
        import torch
        from transformers import TrainerCallback

        self.warmup, self.times, self.trainer, self.init_s = warmup, [], None, None
        sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
        timer = self

        class Callback(TrainerCallback):
            def on_step_begin(self, args, state, control, **kw):
                sync()
                timer._t0 = time.perf_counter()

            def on_step_end(self, args, state, control, **kw):
                sync()
                timer.times.append(time.perf_counter() - timer._t0)

        self.callback = Callback()

    def attach(self, trainer_module) -> None:
        """Make the project's trainer class (drift_exp.training.trainer.DriftDPOTrainer, which train_dpo looks up
        when it builds its trainer) add this callback and record its construction time."""
        base, timer = trainer_module.DriftDPOTrainer, self

        class TimedDPOTrainer(base):
            def __init__(self, *args, **kwargs):
                kwargs["callbacks"] = [*(kwargs.get("callbacks") or []), timer.callback]
                t0 = time.perf_counter()
                super().__init__(*args, **kwargs)  # tokenisation (+ the reference precompute)
                timer.init_s = round(time.perf_counter() - t0, 2)
                timer.trainer = self

        trainer_module.DriftDPOTrainer = TimedDPOTrainer

    def summary(self, tokens_per_step: float) -> dict[str, Any]:
        timed = self.times[self.warmup:] or self.times  # --dry-run: all steps
        seconds = sum(timed)
        return {"steps": len(self.times), "timed_steps": len(timed), "timed_s": round(seconds, 3),
                "s_per_step": round(seconds / len(timed), 4) if timed else None,
                "tokens_per_step": tokens_per_step,
                "tokens_per_s": round(tokens_per_step * len(timed) / seconds, 1) if seconds else None}


def tokens_per_row(dataset, max_length: int) -> float:
    """Mean policy tokens per row (chosen + rejected sequences), after TRL's truncation."""
    total = 0
    for row in dataset:
        p = len(row["prompt_ids"])
        total += min(p + len(row["chosen_ids"]), max_length) + min(p + len(row["rejected_ids"]), max_length)
    return total / len(dataset)


def _cuda_peak() -> dict[str, Any]:
    import torch

    if not torch.cuda.is_available():
        return {"peak_gb": None}
    return {"peak_gb": round(torch.cuda.max_memory_allocated() / 2**30, 2),
            "peak_reserved_gb": round(torch.cuda.max_memory_reserved() / 2**30, 2)}


def child_project(a: argparse.Namespace, built: dict[str, Any]) -> dict[str, Any]:
    from drift_exp.config import TrainerConfig
    from drift_exp.training import dpo
    from drift_exp.training import trainer as trainer_module

    cfg = TrainerConfig(global_batch_size=a.global_batch, micro_batch_size=a.micro_batch, max_length=a.seq)
    timer = StepTimer(a.warmup)
    timer.attach(trainer_module)
    pairs = make_pairs((a.warmup + a.steps) * a.global_batch, a.prompt_len, a.seq)
    t0 = time.perf_counter()
    stats = dpo.train_dpo(model_path=built["model_dir"], ref_path=None, pairs=pairs,
                          out_dir=Path(a.workdir) / "project-checkpoint", cfg=cfg, epochs=1, seed=0,
                          report_to="none", run_name="bench-project", stage="bench/project")
    wall = time.perf_counter() - t0
    trainer = timer.trainer
    out = timer.summary(a.global_batch * tokens_per_row(trainer.train_dataset, a.seq))
    out.update(_cuda_peak())
    args = trainer.args
    out.update(wall_s=round(wall, 2), train_runtime_s=(stats or {}).get("runtime_s"), init_s=timer.init_s,
               settings={"optim": args.optim, "learning_rate": args.learning_rate, "bf16": args.bf16,
                         "gradient_checkpointing": args.gradient_checkpointing,
                         "precompute_ref_log_probs": args.precompute_ref_log_probs,
                         "loss_type": args.loss_type, "per_device_train_batch_size": args.per_device_train_batch_size,
                         "gradient_accumulation_steps": args.gradient_accumulation_steps,
                         "weights_dtype": str(trainer.model.dtype)})
    shutil.rmtree(Path(a.workdir) / "project-checkpoint", ignore_errors=True)
    return out


def child_plain(a: argparse.Namespace, built: dict[str, Any]) -> dict[str, Any]:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    from drift_exp.training.dpo import derive_batch

    cuda = torch.cuda.is_available()
    micro, accum = derive_batch(a.global_batch, a.micro_batch, 1)
    tok = AutoTokenizer.from_pretrained(built["model_dir"])
    model = AutoModelForCausalLM.from_pretrained(built["model_dir"])  # as saved: bf16
    pairs = make_pairs((a.warmup + a.steps) * a.global_batch, a.prompt_len, a.seq)
    dataset = Dataset.from_list([p.to_trl() for p in pairs])
    args = DPOConfig(output_dir=str(Path(a.workdir) / "plain-out"), report_to="none", save_strategy="no",
                     max_length=a.seq, per_device_train_batch_size=micro, gradient_accumulation_steps=accum,
                     num_train_epochs=1, **({} if cuda else {"use_cpu": True, "bf16": False}))
    timer = StepTimer(a.warmup)
    t0 = time.perf_counter()
    trainer = DPOTrainer(model=model, args=args, train_dataset=dataset, processing_class=tok,
                         callbacks=[timer.callback])
    init = time.perf_counter() - t0
    result = trainer.train()
    out = timer.summary(a.global_batch * tokens_per_row(trainer.train_dataset, a.seq))
    out.update(_cuda_peak())
    out.update(wall_s=round(time.perf_counter() - t0, 2), init_s=round(init, 2),
               train_runtime_s=result.metrics.get("train_runtime"),
               settings={"optim": args.optim, "learning_rate": args.learning_rate, "bf16": args.bf16,
                         "gradient_checkpointing": args.gradient_checkpointing,
                         "precompute_ref_log_probs": args.precompute_ref_log_probs, "loss_type": args.loss_type,
                         "per_device_train_batch_size": micro, "gradient_accumulation_steps": accum,
                         "weights_dtype": str(model.dtype)})
    return out


def generate(a: argparse.Namespace, model, tok) -> dict[str, Any]:
    """HF generate throughput of `model` (already on its device) with the project's sampling settings."""
    import torch

    from drift_exp.config import GenerationConfig

    gen = GenerationConfig()
    cuda = torch.cuda.is_available()
    device = model.device
    tok.padding_side = "left"
    model.eval()
    rng = random.Random(1)
    batch = a.gen_batch or gen.batch_size
    prompts = [tok.apply_chat_template([{"role": "user", "content": random_text(rng, a.gen_prompt_len)}],
                                       tokenize=False, add_generation_prompt=True) for _ in range(batch)]
    enc = tok(prompts, return_tensors="pt", padding=True).to(device)
    new = a.gen_new_tokens or gen.max_new_tokens
    kwargs = dict(do_sample=True, temperature=gen.temperature, top_p=gen.top_p, pad_token_id=tok.pad_token_id)
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    with torch.inference_mode():
        model.generate(**enc, max_new_tokens=4, min_new_tokens=4, **kwargs)  # warm-up
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        sync()
        t0 = time.perf_counter()
        out_ids = model.generate(**enc, max_new_tokens=new, min_new_tokens=new, **kwargs)
        sync()
        seconds = time.perf_counter() - t0
    generated = (out_ids.shape[1] - enc["input_ids"].shape[1]) * batch
    out = {"batch": batch, "prompt_tokens": int(enc["input_ids"].shape[1]), "new_tokens_per_prompt": new,
           "generated_tokens": generated, "seconds": round(seconds, 3),
           "tokens_per_s": round(generated / seconds, 1), "dtype": str(model.dtype)}
    out.update(_cuda_peak())
    return out


CHILDREN = {"build": child_build, "project": child_project, "plain": child_plain}


def run_child(name: str, a: argparse.Namespace, argv: list[str]) -> dict[str, Any]:
    """Run one path in a fresh process (its own CUDA peak memory, no accelerate state shared); return its json."""
    result = Path(a.workdir) / f"{name}.json"
    log = Path(a.workdir) / f"{name}.log"
    cmd = [sys.executable, str(Path(__file__).resolve()), *argv, "--workdir", a.workdir, "--child", name]
    env = {**os.environ, "WANDB_MODE": "disabled", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    t0 = time.perf_counter()
    with open(log, "w") as f:
        rc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=a.workdir).returncode
    if rc != 0 or not result.exists():
        tail = "".join(log.read_text(errors="replace").splitlines(keepends=True)[-30:])
        raise SystemExit(f"bench path '{name}' failed (exit {rc}); last lines of {log}:\n{tail}")
    print(f"  {name + (' + generate' if name == 'build' and 'generate' in a.paths else ''):<16} done in "
          f"{time.perf_counter() - t0:6.1f} s", flush=True)
    return json.loads(result.read_text())


# ------------------------------------------------------------------------------------------------------- parent


def mfu(tokens_per_s: float | None, flops_per_token: float, peak_tflops: float | None) -> float | None:
    if not tokens_per_s or not peak_tflops:
        return None
    return round(flops_per_token * tokens_per_s / (peak_tflops * 1e12), 4)


def report(results: dict[str, Any], a: argparse.Namespace, peak: float | None, device: str) -> str:
    built = results["build"]
    n, shape = built["n_params"], built["shape"]
    attn = 12 * shape["num_hidden_layers"] * shape["hidden_size"] * a.seq
    lines = [f"device: {device}; peak bf16 {peak or 'unknown'} TFLOP/s; model: {n / 1e6:,.1f} M params "
             f"(Qwen2.5-1.5B shape{', TINY dry-run' if a.dry_run else ''}); seq {a.seq}; global batch "
             f"{a.global_batch}, micro {a.micro_batch}; {a.steps} timed steps after {a.warmup} warm-up", "",
             "| path | tokens/s | s/step | MFU (6N) | MFU (+attn) | peak GB | init s | weights | optim |",
             "|---|---:|---:|---:|---:|---:|---:|---|---|"]
    for name in ("project", "plain"):
        r = results.get(name)
        if r is None:
            continue
        r["mfu"] = mfu(r["tokens_per_s"], 6 * n, peak)
        r["mfu_attn"] = mfu(r["tokens_per_s"], 6 * n + attn, peak)
        s = r["settings"]
        weights = s["weights_dtype"] + (" + bf16 autocast" if s["bf16"] else "")
        ref = "precomputed" if s["precompute_ref_log_probs"] else "live"
        lines.append(f"| {name} | {r['tokens_per_s']} | {r['s_per_step']} | {r['mfu']} | {r['mfu_attn']} | "
                     f"{r['peak_gb']} | {r['init_s']} | {weights} | {s['optim']} lr {s['learning_rate']}, ref {ref} |")
    g = results.get("generate")
    if g is not None:
        lines += ["", f"generate: {g['tokens_per_s']} tokens/s ({g['batch']} prompts x {g['new_tokens_per_prompt']} "
                      f"new tokens, prompt {g['prompt_tokens']} tokens, {g['dtype']}); peak {g['peak_gb']} GB"]
    return "\n".join(lines)


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench/bench_gpu_dpo.py", description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n".join(__doc__.splitlines()[2:]))
    p.add_argument("--paths", default="project,plain,generate", help="comma list of project, plain, generate")
    p.add_argument("--steps", type=int, default=10, help="timed optimizer steps per training path")
    p.add_argument("--warmup", type=int, default=3, help="untimed optimizer steps first")
    p.add_argument("--seq", type=int, default=2048, help="tokens per sequence (trainer.max_length)")
    p.add_argument("--prompt-len", type=int, default=512, help="prompt tokens of each training row")
    p.add_argument("--global-batch", type=int, default=4, help="trainer.global_batch_size (one GPU: per device)")
    p.add_argument("--micro-batch", type=int, default=4, help="trainer.micro_batch_size")
    p.add_argument("--gen-batch", type=int, default=None, help="prompts per generate call (default: project's 16)")
    p.add_argument("--gen-new-tokens", type=int, default=None, help="tokens generated per prompt (default 512)")
    p.add_argument("--gen-prompt-len", type=int, default=512)
    p.add_argument("--peak-tflops", type=float, default=None, help="peak dense bf16 TFLOP/s (default: detected)")
    p.add_argument("--dry-run", action="store_true", help="CPU allowed: tiny shape, 2 steps per path, seq 64")
    p.add_argument("--out", default=None, help="write all results as json here")
    p.add_argument("--workdir", default=None, help="scratch folder (default: a temp dir, removed unless --keep)")
    p.add_argument("--keep", action="store_true")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.dry_run:
        a.steps, a.warmup, a.seq, a.prompt_len = 2, 0, 64, 16
        a.gen_batch, a.gen_new_tokens, a.gen_prompt_len = a.gen_batch or 2, a.gen_new_tokens or 8, 16
    return a


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    a = parse(argv)
    if a.child is not None:  # inside one path's process
        built = {} if a.child == "build" else json.loads((Path(a.workdir) / "build.json").read_text())
        fn = CHILDREN[a.child]
        result = fn(a) if a.child == "build" else fn(a, built)
        (Path(a.workdir) / f"{a.child}.json").write_text(json.dumps(result, indent=2))
        return

    import torch

    if not torch.cuda.is_available() and not a.dry_run:
        raise SystemExit("bench_gpu_dpo.py measures GPU throughput and needs a CUDA GPU, but torch sees none "
                         f"(torch {torch.__version__}, CUDA build: {torch.version.cuda}). Run it on a GPU machine "
                         "with a CUDA build of torch, or pass --dry-run to check the code path on this CPU.")
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU (dry run)"
    peak = a.peak_tflops or (detect_peak_tflops(device) if torch.cuda.is_available() else None)
    if torch.cuda.is_available() and peak is None:
        print(f"unknown GPU {device!r}: MFU is left out; pass --peak-tflops", file=sys.stderr)
    paths = [x.strip() for x in a.paths.split(",") if x.strip()]
    unknown = set(paths) - {"project", "plain", "generate"}
    if unknown:
        raise SystemExit(f"--paths: unknown {sorted(unknown)}; choose from project, plain, generate")
    own_dir = a.workdir is None
    a.workdir = str(Path(a.workdir or tempfile.mkdtemp(prefix="bench_gpu_dpo-")).resolve())
    Path(a.workdir).mkdir(parents=True, exist_ok=True)
    child_argv = [x for x in argv if x not in ("--keep",)]
    print(f"bench_gpu_dpo on {device}; work dir {a.workdir}", flush=True)
    try:
        results = {"build": run_child("build", a, child_argv)}  # + the generate path, in the same process
        if "generate" in results["build"]:
            results["generate"] = results["build"].pop("generate")
        for name in paths:
            if name != "generate":
                results[name] = run_child(name, a, child_argv)
        text = report(results, a, peak, device)
        print(text)
        if a.out:
            Path(a.out).write_text(json.dumps({"device": device, "peak_tflops": peak, "args": vars(a),
                                               "results": results, "report": text}, indent=2, default=str))
            print(f"results: {a.out}")
    finally:
        if own_dir and not a.keep:
            shutil.rmtree(a.workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
