"""How a guided request is rendered: the authors' plain text, or the model's chat template.

Plain text and BOS. gen-drift.py tokenised its text with the tokenizer's defaults, which put Gemma's <bos>
in front (Qwen has none); Gemma degrades badly without it (paper Table 7). Both backends tokenise the rendered
prompt without added special tokens (a chat template writes its own), so `with_bos` puts the BOS token in front
of a plain-text prompt exactly when the model's chat template opens with it, once.
"""

from __future__ import annotations

from drift_exp.config import PromptFormat
from drift_exp.records import FeedbackRecord, GenRequest, Message


def plain_guided_text(prompt: list[Message], rejected: str, feedback: str, instruction: str) -> str:
    """The prompt string of the authors' gen-drift.py, character for character (no chat template)."""
    parts = []
    if prompt and prompt[0]["role"] == "system":
        parts.append(prompt[0]["content"] + "\n\n")
    for m in prompt:
        if m["role"] == "system":
            continue
        speaker = "User" if m["role"] == "user" else "Assistant"
        parts.append(f"{speaker}: {m['content']}\n")
    parts.append(f"Assistant: {rejected}\n")
    parts.append(f"User: {feedback}\n")
    parts.append(f"System: {instruction}\n")
    parts.append("Assistant: ")
    return "".join(parts)


def guided_request(record: FeedbackRecord, slot: str, fmt: PromptFormat, instruction: str, n: int) -> GenRequest:
    """Ask for a reply that addresses the user's complaint about `record.rejected`."""
    if record.rejected is None or record.feedback is None:
        raise ValueError(f"record {record.id}: guided sampling needs the rejected reply and the feedback")
    if fmt == PromptFormat.plain:
        text = plain_guided_text(record.prompt, record.rejected, record.feedback, instruction)
        return GenRequest(record_id=record.id, slot=slot, messages=[], n=n, text=text)
    # Chat format: the instruction joins the feedback turn, so templates that insist on strict
    # user/assistant alternation (Gemma 3) accept it too.
    messages = [dict(m) for m in record.prompt] + [
        {"role": "assistant", "content": record.rejected},
        {"role": "user", "content": f"{record.feedback}\n\n{instruction}"},
    ]
    return GenRequest(record_id=record.id, slot=slot, messages=messages, n=n)


def plain_request(record: FeedbackRecord, slot: str, n: int) -> GenRequest:
    """Ask for a reply to the conversation context alone (what the user saw the model answer)."""
    return GenRequest(record_id=record.id, slot=slot, messages=[dict(m) for m in record.prompt], n=n)


_OPENS_WITH_BOS: dict[tuple[str, str], bool] = {}  # (bos, chat template) -> answer; one render per model


def bos_prefix(tokenizer) -> str:
    """The tokenizer's BOS token if its chat template starts with it (Gemma), else ''."""
    bos, template = getattr(tokenizer, "bos_token", None), getattr(tokenizer, "chat_template", None)
    if not bos or not isinstance(template, str):
        return ""
    key = (bos, template)
    if key not in _OPENS_WITH_BOS:
        text = tokenizer.apply_chat_template([{"role": "user", "content": "x"}], tokenize=False,
                                             add_generation_prompt=True)
        _OPENS_WITH_BOS[key] = text.startswith(bos)
    return bos if _OPENS_WITH_BOS[key] else ""


def with_bos(tokenizer, text: str) -> str:
    """A plain-text prompt as the model must see it: BOS in front where the chat template puts one, never twice."""
    prefix = bos_prefix(tokenizer)
    return text if not prefix or text.startswith(prefix) else prefix + text
