"""trainer.prompt_style=handbook: the token ids the authors' pipeline fed to DPO.

The authors trained with the alignment-handbook of the time whose setup.py pins trl>=0.9.6,<0.13.0, i.e. with
TRL 0.12's DPOTrainer. Between a conversational pair and the ids DPO sees, that pipeline did, in order:

1. The handbook's data step (its apply_chat_template, task "dpo"), for a pair with a prompt in message form:
   a. an empty system turn ({"role": "system", "content": ""}) is put in front of the prompt when the prompt
      does not start with a system turn and the tokenizer's chat template mentions "system" or "<|im_start|>";
   b. the prompt messages are rendered to text with the chat template WITHOUT the generation prompt (so the
      assistant header is not part of the prompt);
   c. chosen and rejected (the assistant message alone) are each rendered with the chat template on their own.
      A template with a default system prompt (Qwen2.5's, SmolLM2's) therefore writes its default system turn
      in front of each reply, and the assistant header opens the reply.
2. TRL 0.12's DPOTrainer (its tokenize_row, for a decoder-only model) tokenises the three texts separately with
   add_special_tokens=False (no BOS is added; one that the template writes as text is kept), and appends the
   tokenizer's EOS id to chosen and to rejected. The training sequence is prompt ids + answer ids.
3. Its truncation: the prompt keeps its last max_prompt_length ids, and prompt + answer is cut at max_length
   (so the answer keeps its first max_length - len(prompt) ids). That is trainer.truncation=authors
   (training/truncation.py), which the sweeps set; with trainer.truncation=trl, TRL 1.16's rule applies to the
   handbook ids instead.

The sequence differs from TRL 1.16's conversational rendering (trainer.prompt_style=trl): there the prompt
carries the generation prompt and the template's default system turn, and each reply is the continuation of
prompt + reply rendered as one conversation (no second system turn, the template's own end of turn).
"""

from __future__ import annotations

from typing import Any

PROMPT_STYLES = ("trl", "handbook")


def _template(tokenizer: Any) -> str:
    template = tokenizer.chat_template
    if template is None:
        template = tokenizer.get_chat_template()
    return template if isinstance(template, str) else str(template)


def with_empty_system_turn(messages: list[dict[str, Any]], tokenizer: Any) -> list[dict[str, Any]]:
    """Step 1a: the prompt with an empty system turn in front, where the handbook put one."""
    if messages and messages[0]["role"] == "system":
        return list(messages)
    template = _template(tokenizer)
    if "system" in template or "<|im_start|>" in template:
        return [{"role": "system", "content": ""}, *messages]
    return list(messages)


def handbook_texts(prompt: list[dict[str, Any]], chosen: list[dict[str, Any]], rejected: list[dict[str, Any]],
                   tokenizer: Any) -> tuple[str, str, str]:
    """Steps 1a-c: (prompt text, chosen text, rejected text) as the handbook's data step rendered them."""
    def render(messages: list[dict[str, Any]]) -> str:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)

    return render(with_empty_system_turn(prompt, tokenizer)), render(chosen), render(rejected)


def handbook_ids(prompt: list[dict[str, Any]], chosen: list[dict[str, Any]], rejected: list[dict[str, Any]],
                 tokenizer: Any) -> dict[str, list[int]]:
    """Steps 1-2: {"prompt_ids", "chosen_ids", "rejected_ids"} of one pair (not truncated)."""
    texts = handbook_texts(prompt, chosen, rejected, tokenizer)
    prompt_ids, chosen_ids, rejected_ids = (tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts)
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ValueError("trainer.prompt_style=handbook: the tokenizer has no EOS token to end the replies with")
    return {"prompt_ids": prompt_ids, "chosen_ids": chosen_ids + [eos], "rejected_ids": rejected_ids + [eos]}


def tokenize_handbook(dataset: Any, tokenizer: Any, dataset_name: str = "train") -> Any:
    """A conversational preference dataset (prompt, chosen, rejected as message lists) with the handbook's
    prompt_ids, chosen_ids and rejected_ids added (TRL's collator reads those)."""
    first = next(iter(dataset))
    if not all(isinstance(first.get(key), list) for key in ("prompt", "chosen", "rejected")):
        raise ValueError("trainer.prompt_style=handbook needs conversational pairs (prompt, chosen and rejected as "
                         f"lists of messages); got the columns {sorted(first)}")
    return dataset.map(lambda ex: handbook_ids(ex["prompt"], ex["chosen"], ex["rejected"], tokenizer),
                       desc=f"Tokenizing {dataset_name} dataset (alignment-handbook + TRL 0.12)")
