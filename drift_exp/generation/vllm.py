"""vLLM backend: the same prompts and sampling settings as the HF backend, on vLLM's engine (GPUs).

Parity with `drift_exp.generation.hf` comes from three pure functions that tests check against the
HF backend without vLLM installed:

* `build_inputs`: every prompt rendered with `render_prompt`, tokenised with the model's own tokenizer
  and cut to its last `max_prompt_length` ids, exactly as the HF backend does; vLLM is handed these
  token ids (`TokensPrompt`), never text, so it cannot tokenise or truncate differently.
* `sampling_kwargs`: `SamplingParams` arguments from `drift_exp.generation.sampling` (the checkpoint's
  generation_config.json defaults with the config on top, resolved as for the HF backend), with the same
  stop tokens as the HF backend (the model's generation_config EOS ids plus the tokenizer's EOS).
* `engine_kwargs`: `vllm.LLM` arguments. `generation_config="vllm"`: the resolved settings are passed
  explicitly, so vLLM merges nothing of its own.

Seeds: `LLM(seed=seed)`, and every request gets its own seed derived from (seed, request index), so a
request's random draws do not depend on what else is in the batch, nor on how many replicas share the
requests (`generate_share`: replica r of R takes the requests i with i % R == r, keeping their index).
The draws are not the whole story: the logits they sample from are computed by batched GPU kernels whose
results depend (in the last bits) on the batch a request lands in, and one flipped token changes the
rest of the sample. So, exactly:
* generation.batch_invariant=false (vLLM's default): the same command on the same node gives the same
  completions only as far as vLLM's scheduling repeats itself; another replica count (GPU count),
  request order or engine setting can change them.
* generation.batch_invariant=true: the engine runs with VLLM_BATCH_INVARIANT=1 (set here before vllm is
  imported, `set_batch_invariance`), vLLM's batch-invariant kernels; a request's completion then does
  not depend on the batch or the replica count, on the same GPU type, vLLM version, dtype and
  tensor-parallel size (vLLM 0.32's documentation: beta; NVIDIA compute capability >= 8.0, e.g. A100,
  H100, H200; AMD Instinct; Intel XPU). A GPU without it is refused before the engine starts.
The HF backend (generation/hf.py) is replica-invariant without any switch. The two backends use
different random generators: the same seed gives samples from the same distribution, not the same samples.

GPU memory: vLLM holds its weights and KV cache (`gpu_memory_utilization` of each GPU) until the
process ends; its engine core and tensor-parallel workers are child processes. `generate` shuts the
engine down and drops it before returning, but the dependable way to give the memory back is for
the process to exit: with launcher=local the generate stage runs in its own process, which exits
after writing completions.jsonl, before training starts. Running this backend inline, in a process
that trains afterwards, is best-effort only.
"""

from __future__ import annotations

import gc
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from drift_exp.config import GenerationConfig
from drift_exp.errors import ConfigError
from drift_exp.generation.protocol import prompt_ids, reply_text, request_seed
from drift_exp.generation.sampling import effective_sampling, resolve, vllm_sampling_kwargs
from drift_exp.records import Completion, GenRequest

log = logging.getLogger(__name__)


def build_inputs(
    tokenizer, requests: Sequence[GenRequest], cfg: GenerationConfig
) -> tuple[list[list[int]], list[bool]]:
    """Prompt token ids per request, cut to the last cfg.max_prompt_length, and whether each was cut.

    The same steps as the HF backend: the whole rendered prompt is tokenised without added special
    tokens (the chat template already holds them), then its last max_prompt_length ids are kept (a
    leading BOS stays in front: `prompt_ids`).
    """
    ids_list, truncated = [], []
    for req in requests:
        ids, cut = prompt_ids(tokenizer, req, cfg.max_prompt_length)
        ids_list.append(ids)
        truncated.append(cut)
    return ids_list, truncated


def stop_token_ids(model_path: str, tokenizer) -> list[int]:
    """The ids that end a sample: the model's generation_config eos_token_id(s) and the tokenizer's EOS.

    The HF backend stops on `model.generation_config.eos_token_id` plus `tokenizer.eos_token_id`; this
    reads the same generation config (generation_config.json, or the one derived from config.json).
    """
    from transformers import AutoConfig
    from transformers import GenerationConfig as HFGenerationConfig

    from drift_exp.models import trust_remote_code

    try:
        gen = HFGenerationConfig.from_pretrained(model_path)
    except OSError:  # no generation_config.json: transformers derives it from config.json
        gen = HFGenerationConfig.from_model_config(AutoConfig.from_pretrained(model_path,
                                                                              trust_remote_code=trust_remote_code()))
    eos = gen.eos_token_id
    ids = set(eos if isinstance(eos, list) else [eos]) | {tokenizer.eos_token_id}
    return sorted(i for i in ids if i is not None)


def sampling_kwargs(cfg: GenerationConfig, n: int, seed: int | None, stop_ids: Sequence[int] = (),
                    model_path: str | None = None) -> dict[str, Any]:
    """`vllm.SamplingParams(**kwargs)` for one request: the settings `effective_sampling` resolves for the
    checkpoint at model_path (None: the config's alone, as sampling_defaults=none), plus n, seed and stops.

    Greedy (temperature 0) leaves top_p/top_k off, as the HF backend does; repetition_penalty applies
    in both cases (both backends penalise tokens of the prompt and of the output).
    """
    s = effective_sampling(cfg, model_path) if model_path is not None else resolve(cfg, {})
    return {
        "n": n,
        **vllm_sampling_kwargs(s),
        "seed": seed,
        "stop_token_ids": list(stop_ids),
        "skip_special_tokens": True,
    }


def visible_gpus() -> int:
    from drift_exp.devices import gpu_count

    return gpu_count()


def default_tensor_parallel(cfg: GenerationConfig, model_path: str) -> int:
    """generation.tensor_parallel_size null: the smallest legal size for the visible GPUs (layout.py), or
    every visible GPU when the model's shape is unknown."""
    from drift_exp.generation.layout import choose_layout
    from drift_exp.model_shapes import ShapeUnknown, model_shape

    gpus = visible_gpus()
    if gpus <= 1:
        return 1
    try:
        shape = model_shape(model_path)
    except ShapeUnknown:
        return max(1, gpus)
    return choose_layout(cfg, shape, gpus, gpu_memory_gib()).tensor_parallel


def gpu_memory_gib() -> float | None:
    from drift_exp.devices import visible_gpus as probe

    return probe()[1]


def engine_kwargs(cfg: GenerationConfig, model_path: str, model_dtype: str, seed: int) -> dict[str, Any]:
    """`vllm.LLM(**kwargs)` from generation.* (the vLLM fields' defaults are GenerationConfig's)."""
    from drift_exp.models import torch_dtype, trust_remote_code

    tp, max_model_len = cfg.tensor_parallel_size, cfg.max_model_len
    kwargs: dict[str, Any] = {
        "model": model_path,
        "tokenizer": model_path,
        # "auto" resolves as for the HF backend (bf16 where the GPU supports it, fp32 otherwise), not as
        # vLLM's "auto" (the checkpoint's dtype).
        "dtype": str(torch_dtype(model_dtype)).removeprefix("torch."),
        "seed": seed,
        "tensor_parallel_size": tp if tp is not None else default_tensor_parallel(cfg, model_path),
        "gpu_memory_utilization": cfg.gpu_memory_utilization,
        "enforce_eager": cfg.enforce_eager,
        # Every prompt (<= max_prompt_length) plus its reply fits; a smaller KV cache than the model's full
        # context would need. Set generation.max_model_len if the model allows less.
        "max_model_len": max_model_len if max_model_len is not None else cfg.max_prompt_length + cfg.max_new_tokens,
        # The checkpoint's sampling defaults are already in our explicit SamplingParams (sampling.py);
        # vLLM adds none of its own.
        "generation_config": "vllm",
        "trust_remote_code": trust_remote_code(),  # model.trust_remote_code
    }
    kwargs.update(cfg.engine_kwargs)
    return kwargs


BATCH_INVARIANT_ENV = "VLLM_BATCH_INVARIANT"
MIN_CAPABILITY = (8, 0)  # vLLM 0.32's batch invariance on NVIDIA GPUs


def check_batch_invariance_hardware() -> None:
    """ConfigError unless this process sees a GPU that vLLM 0.32's batch invariance supports."""
    import torch

    if not torch.cuda.is_available():
        raise ConfigError("generation.batch_invariant=true needs a GPU (vLLM's batch-invariant kernels: NVIDIA "
                          "compute capability >= 8.0, AMD Instinct or Intel XPU); none is visible. Set "
                          "generation.batch_invariant=false (completions may then depend on the GPU count)")
    if torch.version.hip is None:  # NVIDIA (ROCm builds report AMD architectures through the same call)
        cap = torch.cuda.get_device_capability(0)
        if tuple(cap) < MIN_CAPABILITY:
            raise ConfigError(f"generation.batch_invariant=true needs an NVIDIA GPU of compute capability >= 8.0 "
                              f"(vLLM 0.32: A100, H100, H200, ...); {torch.cuda.get_device_name(0)} is "
                              f"{cap[0]}.{cap[1]}. Set generation.batch_invariant=false (completions may then "
                              "depend on the GPU count)")


def set_batch_invariance(enabled: bool) -> None:
    """VLLM_BATCH_INVARIANT=1 (or 0) in this process's environment, which the engine's processes inherit.

    vLLM reads it when it is imported, so it is set before `import vllm`; a process that has already
    imported vllm with the other value cannot switch (ConfigError: run generation in its own process,
    launcher=local)."""
    want = "1" if enabled else "0"
    have = os.environ.get(BATCH_INVARIANT_ENV, "0")
    if "vllm" in sys.modules and have != want:
        raise ConfigError(f"generation.batch_invariant={str(enabled).lower()}: vllm is already imported in this "
                          f"process with {BATCH_INVARIANT_ENV}={have}; run generation in its own process "
                          "(launcher=local) or keep one setting per process")
    os.environ[BATCH_INVARIANT_ENV] = want


def _finished(finish_reason: str | None, token_ids: Sequence[int], stop_ids: set[int]) -> bool:
    # "stop": ended on a stop token. The last-token check also covers a sample whose EOS was its
    # max_tokens-th token, which vLLM may report as "length" and the HF backend counts as finished.
    return finish_reason == "stop" or (len(token_ids) > 0 and token_ids[-1] in stop_ids)


def _shutdown(llm) -> None:
    """Stop vLLM's engine core and its workers (child processes); process exit does the rest."""
    try:
        llm.llm_engine.engine_core.shutdown()
    except Exception as err:  # best effort: the engine's internals differ across vLLM versions
        log.debug("vLLM engine shutdown: %s", err)


def _release_memory() -> None:
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception as err:
        log.debug("empty_cache: %s", err)


class VLLMGenerator:
    """`Generator` on vLLM. Import-safe without vLLM: vllm is imported only in `generate`."""

    def __init__(self, cfg: GenerationConfig, model_dtype: str = "auto"):
        self.cfg = cfg
        self.model_dtype = model_dtype
        self.output_tokens = 0  # generated tokens of the last call

    def generate(self, model_path: str, requests: list[GenRequest], seed: int) -> list[Completion]:
        share = self.generate_share(model_path, requests, seed, 0, 1)
        return [share[i] for i in range(len(requests))]

    def generate_share(self, model_path: str, requests: list[GenRequest], seed: int, replica: int,
                       replicas: int) -> dict[int, Completion]:
        """Completions of requests i with i % replicas == replica, by request index. Request i is sampled
        with request_seed(seed, i) whatever the number of replicas (and, with generation.batch_invariant,
        generates the same tokens whatever the number of replicas)."""
        if self.cfg.batch_invariant:
            check_batch_invariance_hardware()
        set_batch_invariance(self.cfg.batch_invariant)  # before vllm is imported
        from vllm import LLM, SamplingParams
        from vllm.inputs import TokensPrompt

        from drift_exp.models import load_tokenizer

        self.output_tokens = 0
        mine = [i for i in range(len(requests)) if i % replicas == replica]
        if not mine:
            return {}
        tok = load_tokenizer(model_path, padding_side="left")
        prompt_ids, truncated = build_inputs(tok, [requests[i] for i in mine], self.cfg)
        stops = stop_token_ids(model_path, tok)
        params = [SamplingParams(**sampling_kwargs(self.cfg, requests[i].n, request_seed(seed, i), stops, model_path))
                  for i in mine]
        llm = LLM(**engine_kwargs(self.cfg, model_path, self.model_dtype, seed))
        try:
            outputs = llm.generate([TokensPrompt(prompt_token_ids=ids) for ids in prompt_ids], params, use_tqdm=True)
        finally:
            _shutdown(llm)
            del llm
            _release_memory()
        stop_set = set(stops)
        completions: dict[int, Completion] = {}
        for i, ids, cut, out in zip(mine, prompt_ids, truncated, outputs, strict=True):
            req = requests[i]
            samples = sorted(out.outputs, key=lambda o: o.index)
            if len(samples) != req.n:
                raise RuntimeError(f"vLLM returned {len(samples)} samples for {req.record_id}/{req.slot}, "
                                   f"asked for {req.n}")
            self.output_tokens += sum(len(o.token_ids) for o in samples)
            replies = [reply_text(o.text, req.text is not None, _finished(o.finish_reason, o.token_ids, stop_set))
                       for o in samples]
            completions[i] = Completion(
                record_id=req.record_id, slot=req.slot,
                outputs=[text for text, _ in replies],
                prompt_tokens=len(ids), truncated_prompt=cut,
                finished=[ended for _, ended in replies],
            )
        return completions
