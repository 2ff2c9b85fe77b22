"""transformers `generate` backend: batched, left-padded, seeded. For CPU runs and tests."""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from drift_exp.config import GenerationConfig
from drift_exp.generation import render_prompt, reply_text, sampling_settings
from drift_exp.records import Completion, GenRequest
from drift_exp.training.models import load_policy, load_tokenizer, torch_dtype


class HFGenerator:
    def __init__(self, cfg: GenerationConfig, model_dtype: str = "auto"):
        self.cfg = cfg
        self.dtype = torch_dtype(model_dtype)

    def generate(self, model_path: str, requests: list[GenRequest], seed: int) -> list[Completion]:
        from transformers import GenerationConfig as HFGenerationConfig

        tok = load_tokenizer(model_path, padding_side="left")
        device = "cuda" if torch.cuda.is_available() else "cpu"
        model = load_policy(model_path, self.dtype).to(device).eval()
        s = sampling_settings(self.cfg)
        eos = model.generation_config.eos_token_id
        eos_ids = set(eos if isinstance(eos, list) else [eos]) | {tok.eos_token_id}
        gen_cfg = HFGenerationConfig(
            do_sample=s["temperature"] > 0,
            temperature=s["temperature"] if s["temperature"] > 0 else None,
            top_p=s["top_p"] if s["temperature"] > 0 else None,
            top_k=s["top_k"] if s["top_k"] > 0 else 0,  # 0, not None: None is filled in with 50
            repetition_penalty=s["repetition_penalty"],
            max_new_tokens=s["max_tokens"],
            eos_token_id=sorted(eos_ids),
            pad_token_id=tok.pad_token_id,
        )
        # Tokenise every prompt whole, then keep its last max_prompt_length tokens: the end of the
        # prompt (the user turn and the generation cue) is what the reply must follow.
        encoded = []
        for req in requests:
            ids = tok(render_prompt(tok, req), add_special_tokens=False)["input_ids"]
            encoded.append((ids[-self.cfg.max_prompt_length:], len(ids) > self.cfg.max_prompt_length))
        # Longest first: less padding per batch, and the memory peak shows up in the first batch.
        order = sorted(range(len(requests)), key=lambda i: -len(encoded[i][0]))
        results: dict[int, Completion] = {}
        torch.manual_seed(seed)
        batches = [order[i:i + self.cfg.batch_size] for i in range(0, len(order), self.cfg.batch_size)]
        for batch in tqdm(batches, desc="generate", unit="batch"):
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
            with torch.no_grad():
                out = model.generate(input_ids=input_ids.to(device), attention_mask=mask.to(device),
                                     generation_config=gen_cfg)
            new = out[:, width:].cpu()
            for row, i in enumerate(batch):
                texts, finished = [], []
                for j in range(n):
                    seq = new[row * n + j].tolist()
                    text, ended = reply_text(tok.decode(seq, skip_special_tokens=True), requests[i].text is not None,
                                             any(t in eos_ids for t in seq))
                    finished.append(ended)
                    texts.append(text)
                results[i] = Completion(record_id=requests[i].record_id, slot=requests[i].slot, outputs=texts,
                                        prompt_tokens=len(encoded[i][0]), truncated_prompt=encoded[i][1],
                                        finished=finished)
        del model
        return [results[i] for i in range(len(requests))]
