"""A sequence-classification reward model scoring (question, answer) text pairs: one logit each.

Default: OpenAssistant/reward-model-deberta-v3-large-v2, whose card feeds the pair as
`tokenizer(question, answer)` and reads `logits[0]`. On CPU, `scorer.path=tiny` builds a randomly
initialised Qwen2 classifier the same way the tiny policy is built (no download).
"""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from drift_exp.config import ScorerConfig
from drift_exp.models import build_tiny, trust_remote_code
from drift_exp.records import Message


def question_text(prompt: list[Message]) -> str:
    """The reward model's question: a lone user turn as is; a longer history flattened with speakers."""
    if len(prompt) == 1 and prompt[0]["role"] == "user":
        return prompt[0]["content"]
    names = {"user": "User", "assistant": "Assistant", "system": "System"}
    return "\n".join(f"{names.get(m['role'], m['role'])}: {m['content']}" for m in prompt)


class RewardScorer:
    def __init__(self, cfg: ScorerConfig):
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.cfg = cfg
        self.path = str(build_tiny(cfg.tiny, head="reward")) if cfg.path == "tiny" else cfg.path
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        trust = trust_remote_code()  # model.trust_remote_code covers the reward model too
        self.tokenizer = AutoTokenizer.from_pretrained(self.path, trust_remote_code=trust)
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.tokenizer.padding_side = "right"
        model = AutoModelForSequenceClassification.from_pretrained(self.path, trust_remote_code=trust)
        self.model = model.to(self.device).eval()
        if self.model.config.pad_token_id is None:
            self.model.config.pad_token_id = self.tokenizer.pad_token_id

    @torch.no_grad()
    def score(self, questions: list[str], answers: list[str]) -> list[float]:
        """One unnormalised score per (question, answer); higher is better."""
        if len(questions) != len(answers):
            raise ValueError(f"{len(questions)} questions but {len(answers)} answers")
        order = sorted(range(len(answers)), key=lambda i: -(len(questions[i]) + len(answers[i])))
        scores = [0.0] * len(answers)
        bs = self.cfg.batch_size
        for start in tqdm(range(0, len(order), bs), desc="reward model", unit="batch"):
            idx = order[start:start + bs]
            enc = self.tokenizer([questions[i] for i in idx], [answers[i] for i in idx], padding=True,
                                 truncation=True, max_length=self.cfg.max_length, return_tensors="pt")
            logits = self.model(**enc.to(self.device)).logits[:, 0].float().cpu().tolist()
            for i, s in zip(idx, logits, strict=True):
                scores[i] = s
        return scores
