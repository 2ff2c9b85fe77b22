"""What both backends share: the `Generator` protocol, the exact prompt a request becomes (`render_prompt`,
`prompt_ids`), the reply cut out of a sample (`reply_text`) and the per-request seeds (`request_seed`). The
backends import from here, never from the package's __init__ (which imports them: that would be a cycle)."""

from __future__ import annotations

import hashlib
import re
from typing import Protocol

from drift_exp.methods.prompts import with_bos
from drift_exp.records import Completion, GenRequest


class Generator(Protocol):
    output_tokens: int  # generated tokens of the last call

    def generate(self, model_path: str, requests: list[GenRequest], seed: int) -> list[Completion]: ...

    def generate_share(self, model_path: str, requests: list[GenRequest], seed: int, replica: int,
                       replicas: int) -> dict[int, Completion]:
        """Replica `replica` of `replicas`: its share of the requests' completions, by request index."""
        ...


def render_prompt(tokenizer, request: GenRequest) -> str:
    """The exact prompt text: the request's raw text (with BOS where the chat template opens with one), or its
    messages through the chat template."""
    if request.text is not None:
        return with_bos(tokenizer, request.text)
    return tokenizer.apply_chat_template(request.messages, tokenize=False, add_generation_prompt=True)


def prompt_ids(tokenizer, request: GenRequest, max_prompt_length: int) -> tuple[list[int], bool]:
    """The rendered prompt's token ids cut to its last max_prompt_length, and whether it was cut.

    Tokenised without added special tokens (the template or `render_prompt` already holds them). The end
    of the prompt (the user turn and the generation cue) is what the reply must follow, so the start is
    dropped; a leading BOS is kept in front of the kept tokens, since models such as Gemma degrade without it.
    """
    ids = list(tokenizer(render_prompt(tokenizer, request), add_special_tokens=False)["input_ids"])
    if len(ids) <= max_prompt_length:
        return ids, False
    bos = tokenizer.bos_token_id
    if bos is not None and ids[0] == bos and max_prompt_length > 1:
        return [bos] + ids[len(ids) - max_prompt_length + 1:], True
    return ids[-max_prompt_length:], True


# The speaker labels of the plain prompt format (methods/prompts.py). A small model prompted with
# "...User: ...\nAssistant: " often writes the next "User:" turn itself instead of stopping: the reply
# ends where a line starts with a label. A sample cut at max_new_tokens may end on part of one ("\nAss").
_LABELS = ("User:", "Assistant:", "System:")
_TURN = re.compile(r"(?:^|\n)(?:User|Assistant|System):")
_PARTIAL = re.compile(r"\n(?:" + "|".join(re.escape(lab[:i]) for lab in _LABELS for i in range(1, len(lab)))
                      + r")$")


def reply_text(text: str, plain: bool, finished: bool) -> tuple[str, bool]:
    """A decoded sample -> (the reply, whether it ended). Plain-format samples end at a new turn's label;
    an unfinished sample loses a trailing U+FFFD (a multi-byte character cut by max_new_tokens)."""
    if plain:
        m = _TURN.search(text)
        if m is not None:
            text, finished = text[:m.start()], True
        elif not finished:
            text = _PARTIAL.sub("", text)
    if not finished:
        text = text.rstrip("\ufffd")
    return text.strip(), finished


def request_seed(seed: int, index: int) -> int:
    """A per-request seed: reproducible, distinct across requests and across run seeds (not seed+index)."""
    digest = hashlib.sha256(f"{seed}:{index}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF
