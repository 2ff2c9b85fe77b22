"""The authors' truncation of over-long DPO pairs (trainer.truncation=authors).

The authors trained with an alignment-handbook TRL that had `max_prompt_length` (1024) beside `max_length`
(2048): the prompt kept its LAST max_prompt_length tokens (the turns next to the reply) and the completions
were cut so that prompt + completion fit max_length; no pair was dropped. TRL 1.16 has no max_prompt_length:
its collator keeps the START of prompt + completion and `_prepare_dataset` drops every pair whose prompt alone
fills max_length (trainer.truncation=trl keeps that behaviour). Long WildChat contexts are common, so the two
train on different pairs.

How it is done here (training/trainer.py, DriftDPOTrainer's max_prompt_length option): TRL tokenizes the pairs
itself (its chat template, EOS and prompt/completion split are kept exactly), with the length limit lifted for
that step (or training/handbook.py does, with trainer.prompt_style=handbook); then each pair's token ids are cut
by `truncate_pair`. Every sequence then fits max_length, so TRL's collator has nothing left to cut. Cutting the
start of the prompt can remove the template's opening (system turn, BOS), as the authors' TRL did too.
"""

from __future__ import annotations

from typing import Any

from drift_exp.config import TrainerConfig
from drift_exp.errors import ConfigError


def prompt_limit(cfg: TrainerConfig) -> int:
    """trainer.max_prompt_length, with null = half of max_length (1024 at the paper's 2048, the authors' value)."""
    limit = cfg.max_length // 2 if cfg.max_prompt_length is None else cfg.max_prompt_length
    if not 1 <= limit < cfg.max_length:
        raise ConfigError(f"trainer.max_prompt_length must be in [1, trainer.max_length={cfg.max_length}) so that "
                          f"a completion token fits after the prompt, got {cfg.max_prompt_length}")
    return limit


def truncate_pair(prompt: list[int], chosen: list[int], rejected: list[int], max_length: int,
                  max_prompt_length: int) -> tuple[list[int], list[int], list[int], tuple[bool, bool, bool]]:
    """(prompt, chosen, rejected, (prompt cut, chosen cut, rejected cut)): the prompt's last max_prompt_length
    tokens, and each completion's first max_length - len(prompt) tokens (its end, EOS included, may be cut)."""
    prompt_cut = len(prompt) > max_prompt_length
    if prompt_cut:
        prompt = prompt[-max_prompt_length:]
    room = max_length - len(prompt)
    chosen_cut, rejected_cut = len(chosen) > room, len(rejected) > room
    return prompt, chosen[:room], rejected[:room], (prompt_cut, chosen_cut, rejected_cut)


class LengthLimitLifted:
    """A view of TRL's DPOConfig with max_length=None, for TRL's tokenization step only (so that it drops no
    pair); every other attribute is the real config's."""

    def __init__(self, args: Any):
        self._args = args

    max_length = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._args, name)


def truncate_dataset(dataset: Any, max_length: int, max_prompt_length: int) -> tuple[Any, dict[str, int]]:
    """Apply `truncate_pair` to a dataset TRL has tokenized (prompt_ids, chosen_ids, rejected_ids); returns it
    with the counts for metrics.json: truncated_prompts, truncated_chosen, truncated_rejected and
    truncated_completions (chosen + rejected)."""

    def cut(example: dict[str, Any]) -> dict[str, Any]:
        p, c, r, flags = truncate_pair(example["prompt_ids"], example["chosen_ids"], example["rejected_ids"],
                                       max_length, max_prompt_length)
        return {"prompt_ids": p, "chosen_ids": c, "rejected_ids": r, "_cut_prompt": flags[0],
                "_cut_chosen": flags[1], "_cut_rejected": flags[2]}

    dataset = dataset.map(cut, desc="Truncating pairs (the authors' rule)")
    counts = {key: int(sum(dataset[f"_cut_{side}"]))
              for key, side in (("truncated_prompts", "prompt"), ("truncated_chosen", "chosen"),
                                ("truncated_rejected", "rejected"))}
    counts["truncated_completions"] = counts["truncated_chosen"] + counts["truncated_rejected"]
    return dataset.remove_columns(["_cut_prompt", "_cut_chosen", "_cut_rejected"]), counts
