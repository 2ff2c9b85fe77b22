"""transformers `generate` backend: batched, left-padded, seeded. For CPU runs and tests.

Replica-invariant sampling: the batches are formed over ALL requests (longest prompt first, in chunks of
generation.batch_size), and batch b is sampled after `torch.manual_seed(request_seed(seed, b))`. Replica r
of R generates the batches b with b % R == r, so a batch holds the same requests and draws the same random
numbers whatever the number of replicas: the completions are byte-identical for 1 or R replicas (on the
same kind of hardware). Sampling within one batch shares one random stream, so a request's samples depend
on its batch, never on the replica count.
"""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from drift_exp.config import GenerationConfig
from drift_exp.generation.protocol import prompt_ids, reply_text, request_seed
from drift_exp.generation.sampling import effective_sampling, hf_generate_kwargs
from drift_exp.models import load_policy, load_tokenizer, torch_dtype
from drift_exp.records import Completion, GenRequest


class HFGenerator:
    def __init__(self, cfg: GenerationConfig, model_dtype: str = "auto"):
        self.cfg = cfg
        self.dtype = torch_dtype(model_dtype)
        self.output_tokens = 0  # generated tokens (up to and including EOS) of the last call

    def generate(self, model_path: str, requests: list[GenRequest], seed: int) -> list[Completion]:
        share = self.generate_share(model_path, requests, seed, 0, 1)
        return [share[i] for i in range(len(requests))]

    def generate_share(self, model_path: str, requests: list[GenRequest], seed: int, replica: int,
                       replicas: int) -> dict[int, Completion]:
        """Completions of this replica's batches, by request index (see the module docstring)."""
        from transformers import GenerationConfig as HFGenerationConfig

        tok = load_tokenizer(model_path, padding_side="left")
        # Every prompt tokenised whole and cut to its last max_prompt_length tokens (BOS kept), as vLLM's.
        encoded = [prompt_ids(tok, req, self.cfg.max_prompt_length) for req in requests]
        # Longest first: less padding per batch, and the memory peak shows up in the first batch.
        order = sorted(range(len(requests)), key=lambda i: -len(encoded[i][0]))
        size = self.cfg.batch_size
        batches = [(b, order[b * size:(b + 1) * size]) for b in range((len(order) + size - 1) // size)]
        mine = [(b, batch) for b, batch in batches if b % replicas == replica]
        self.output_tokens = 0
        if not mine:
            return {}
        device = "cuda" if torch.cuda.is_available() else "cpu"
        model = load_policy(model_path, self.dtype).to(device).eval()
        eos = model.generation_config.eos_token_id
        eos_ids = set(eos if isinstance(eos, list) else [eos]) | {tok.eos_token_id}
        # The same resolved settings as the vLLM backend (checkpoint defaults + config), every field explicit.
        gen_cfg = HFGenerationConfig(**hf_generate_kwargs(effective_sampling(self.cfg, model_path)),
                                     eos_token_id=sorted(eos_ids), pad_token_id=tok.pad_token_id)
        results: dict[int, Completion] = {}
        for b, batch in tqdm(mine, desc=f"generate (replica {replica}/{replicas})" if replicas > 1 else "generate",
                             unit="batch"):
            n = requests[batch[0]].n
            if any(requests[i].n != n for i in batch):
                raise ValueError("requests in one batch must ask for the same number of samples")
            width = max(len(encoded[i][0]) for i in batch)
            input_ids = torch.full((len(batch), width), tok.pad_token_id, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, i in enumerate(batch):
                ids = encoded[i][0]
                input_ids[row, width - len(ids):] = torch.tensor(ids)
                mask[row, width - len(ids):] = 1
            gen_cfg.num_return_sequences = n
            torch.manual_seed(request_seed(seed, b))  # the batch's own seed: independent of the replicas
            with torch.no_grad():
                out = model.generate(input_ids=input_ids.to(device), attention_mask=mask.to(device),
                                     generation_config=gen_cfg)
            new = out[:, width:].cpu()
            for row, i in enumerate(batch):
                texts, finished = [], []
                for j in range(n):
                    seq = new[row * n + j].tolist()
                    ends = [k for k, t in enumerate(seq) if t in eos_ids]
                    self.output_tokens += ends[0] + 1 if ends else len(seq)
                    text, ended = reply_text(tok.decode(seq, skip_special_tokens=True), requests[i].text is not None,
                                             bool(ends))
                    finished.append(ended)
                    texts.append(text)
                results[i] = Completion(record_id=requests[i].record_id, slot=requests[i].slot, outputs=texts,
                                        prompt_tokens=len(encoded[i][0]), truncated_prompt=encoded[i][1],
                                        finished=finished)
        del model
        return results
