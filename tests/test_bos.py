"""Plain-text guided prompts get Gemma's <bos> (its chat template opens with it), once, in both backends.
A tiny random Gemma3ForCausalLM with a byte-level tokenizer that, like Gemma's, adds <bos> by default."""

from __future__ import annotations

from pathlib import Path

import pytest

from drift_exp.config import GenerationConfig, PromptFormat, TinyModelConfig
from drift_exp.generation import render_prompt
from drift_exp.generation.vllm import build_inputs
from drift_exp.methods.prompts import bos_prefix, guided_request, with_bos
from drift_exp.models import build_tiny, load_tokenizer
from drift_exp.records import FeedbackRecord, GenRequest

from .helpers import run_hf

GEMMA_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{% set role = 'model' if message['role'] == 'assistant' "
    "else message['role'] %}{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}"
)
SPECIAL = ["<pad>", "<eos>", "<bos>", "<start_of_turn>", "<end_of_turn>"]  # ids 0-4, Gemma's order for 0-2


def build_tiny_gemma(folder: Path) -> Path:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig, PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(SPECIAL)}
    for ch in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab[ch] = len(vocab)
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    core.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 2)])
    tok = PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>",
                                  additional_special_tokens=["<start_of_turn>", "<end_of_turn>"])
    tok.chat_template = GEMMA_TEMPLATE
    config = Gemma3TextConfig(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                              num_attention_heads=2, num_key_value_heads=1, head_dim=16, max_position_embeddings=512,
                              sliding_window=64, pad_token_id=0, eos_token_id=1, bos_token_id=2)
    torch.manual_seed(0)
    Gemma3ForCausalLM(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def gemma(tmp_path_factory) -> Path:
    return build_tiny_gemma(tmp_path_factory.mktemp("gemma") / "model")


def request() -> GenRequest:
    rec = FeedbackRecord(id="r0", prompt=[{"role": "user", "content": "Name a prime."}], rejected="9",
                         feedback="9 is not prime.", meta={"kind": "dsat"})
    return guided_request(rec, "chosen", PromptFormat.plain, "Please improve.", n=1)


def test_tokenizer_is_gemma_like(gemma):
    tok = load_tokenizer(str(gemma))
    assert tok.bos_token == "<bos>" and tok.bos_token_id == 2
    assert tok("hi")["input_ids"][0] == 2  # adds <bos> by default, as Gemma's does
    assert tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False).startswith("<bos><start")


def test_bos_only_where_the_template_opens_with_it(gemma, model_cache):
    gemma_tok = load_tokenizer(str(gemma))
    qwen_tok = load_tokenizer(str(build_tiny(TinyModelConfig(), root=model_cache)))
    assert bos_prefix(gemma_tok) == "<bos>" and bos_prefix(qwen_tok) == ""
    text = request().text
    assert text.startswith("User: Name a prime.\n")  # the stored request stays tokenizer-neutral
    assert render_prompt(gemma_tok, request()) == "<bos>" + text
    assert render_prompt(qwen_tok, request()) == text
    assert with_bos(gemma_tok, "<bos>" + text) == "<bos>" + text  # never doubled
    gemma_tok.chat_template = GEMMA_TEMPLATE.removeprefix("{{ bos_token }}")
    assert bos_prefix(gemma_tok) == ""  # a template without BOS: none added


def test_both_backends_feed_one_bos(gemma, monkeypatch):
    tok = load_tokenizer(str(gemma))
    cfg = GenerationConfig(max_prompt_length=256, max_new_tokens=2, batch_size=2)
    chat = GenRequest("r1", "rejected", [{"role": "user", "content": "Name a prime."}], n=1)
    reqs = [request(), chat]
    vllm_ids, _ = build_inputs(tok, reqs, cfg)
    completions, calls = run_hf(gemma, cfg, reqs, monkeypatch)  # HFGenerator.generate on the Gemma3 model
    hf_rows = sorted(tuple(row) for call in calls for row in call["rows"])
    assert hf_rows == sorted(tuple(i) for i in vllm_ids)
    expected_plain = [2] + tok(request().text, add_special_tokens=False)["input_ids"]
    assert vllm_ids[0] == expected_plain  # one <bos>, then the authors' text
    assert vllm_ids[0] == tok(request().text)["input_ids"]  # = what gen-drift.py's tokenizer call gave
    for ids in vllm_ids:  # the chat prompt: the template's own <bos>, not doubled either
        assert ids[0] == 2 and ids.count(2) == 1
    assert len(completions) == 2


def test_a_cut_prompt_keeps_its_bos_in_both_backends(gemma, monkeypatch):
    tok = load_tokenizer(str(gemma))
    cfg = GenerationConfig(max_prompt_length=24, max_new_tokens=2, batch_size=2)
    chat = GenRequest("r1", "rejected", [{"role": "user", "content": "Name a prime. " * 10}], n=1)
    reqs = [request(), chat]
    vllm_ids, cut = build_inputs(tok, reqs, cfg)
    assert cut == [True, True]
    for req, ids in zip(reqs, vllm_ids, strict=True):
        whole = tok(render_prompt(tok, req), add_special_tokens=False)["input_ids"]
        assert len(ids) == 24 and ids[0] == 2 and ids.count(2) == 1  # <bos>, then the prompt's last 23 ids
        assert ids[1:] == whole[-23:]
    _, calls = run_hf(gemma, cfg, reqs, monkeypatch)
    assert sorted(tuple(row) for call in calls for row in call["rows"]) == sorted(tuple(i) for i in vllm_ids)
