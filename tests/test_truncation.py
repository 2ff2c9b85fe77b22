"""trainer.truncation=authors: the prompt keeps its last max_prompt_length tokens, completions are cut to fit
max_length, no pair is dropped; trl keeps TRL 1.16's behaviour (drops pairs whose prompt fills max_length).
Runs TRL's real DPOTrainer on the tiny model (byte-level tokenizer: one token per byte)."""

from __future__ import annotations

import functools
import math

import pytest

from drift_exp.config import TrainerConfig, Truncation
from drift_exp.errors import ConfigError
from drift_exp.records import PreferencePair
from drift_exp.training.truncation import prompt_limit, truncate_pair

MAX_LENGTH = 96


def test_truncate_pair_rule():
    p, c, r = list(range(10)), [100, 101, 102, 103], [200, 201]
    assert truncate_pair(p, c, r, max_length=20, max_prompt_length=12) == (p, c, r, (False, False, False))
    # the prompt keeps its LAST 6 tokens; the completions get the 8 - 6 = 2 tokens left
    assert truncate_pair(p, c, r, max_length=8, max_prompt_length=6) == (
        [4, 5, 6, 7, 8, 9], [100, 101], [200, 201], (True, True, False))
    # a short prompt leaves the completions more room than max_length - max_prompt_length
    assert truncate_pair([1, 2], c, r, max_length=5, max_prompt_length=4) == ([1, 2], [100, 101, 102], r,
                                                                              (False, True, False))


def test_prompt_limit():
    assert prompt_limit(TrainerConfig()) == 1024  # the authors' value at the paper's max_length 2048
    assert prompt_limit(TrainerConfig(max_length=256)) == 128
    assert prompt_limit(TrainerConfig(max_length=256, max_prompt_length=200)) == 200
    for bad in (0, 256, 300):
        with pytest.raises(ConfigError, match="trainer.max_prompt_length"):
            prompt_limit(TrainerConfig(max_length=256, max_prompt_length=bad))


def test_config_check_names_the_key():
    from hydra import compose, initialize_config_dir

    from drift_exp.config import register_configs
    from drift_exp.plan import validate
    from tests.conftest import CONF

    register_configs()
    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        cfg = compose("config", overrides=["model=tiny", "trainer.max_length=256", "trainer.max_prompt_length=256"])
    from omegaconf import OmegaConf

    with pytest.raises(ConfigError, match=r"trainer.max_prompt_length must be null .* got 256"):
        validate(OmegaConf.to_object(cfg))


def _pairs() -> list[PreferencePair]:
    """Prompts of 30, 80 and 150 characters (tokens, plus the template's); completions of 10 and 60."""
    out = []
    for i, (n_prompt, n_chosen, n_rejected) in enumerate([(30, 10, 60), (80, 10, 10), (150, 60, 10), (20, 5, 5)]):
        prompt = [{"role": "user", "content": "".join(chr(97 + (i + j) % 26) for j in range(n_prompt))}]
        out.append(PreferencePair(id=str(i), prompt=prompt, chosen="C" * n_chosen, rejected="R" * n_rejected))
    return out


def _template_ids(tok, messages, generation_prompt: bool) -> list[int]:
    text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)
    return tok(text, add_special_tokens=False)["input_ids"]


@pytest.fixture(scope="module")
def tiny(model_cache):
    from drift_exp.config import TinyModelConfig
    from drift_exp.models import build_tiny

    return str(build_tiny(TinyModelConfig(), root=model_cache))


def test_trainer_dataset_is_cut_the_authors_way(tiny, tmp_path):
    """The token ids TRL trains on: the chat-templated prompt's last tokens, each templated completion's
    first tokens (its <|im_end|> EOS cut when it does not fit), every pair kept."""
    from datasets import Dataset
    from trl import DPOConfig

    from drift_exp.models import load_policy, load_tokenizer
    from drift_exp.training.trainer import DriftDPOTrainer

    pairs, limit = _pairs(), 48
    args = DPOConfig(output_dir=str(tmp_path / "t"), report_to="none", max_length=MAX_LENGTH, use_cpu=True,
                     bf16=False, per_device_train_batch_size=2, disable_tqdm=True)
    tok = load_tokenizer(tiny, padding_side="right")
    cls = functools.partial(DriftDPOTrainer, max_prompt_length=limit)  # the trainer's authors' truncation option
    trainer = cls(model=load_policy(tiny, __import__("torch").float32), args=args, processing_class=tok,
                  train_dataset=Dataset.from_list([p.to_trl() for p in pairs]))
    rows = list(trainer.train_dataset)
    assert len(rows) == len(pairs)
    want = {"truncated_prompts": 0, "truncated_chosen": 0, "truncated_rejected": 0}
    for pair, row in zip(pairs, rows, strict=True):
        trl = pair.to_trl()
        prompt = _template_ids(tok, trl["prompt"], True)
        full = {side: _template_ids(tok, trl["prompt"] + trl[side], False) for side in ("chosen", "rejected")}
        assert all(f[:len(prompt)] == prompt for f in full.values())  # ChatML: the prompt is a prefix
        kept = prompt[-limit:]
        assert row["prompt_ids"] == kept
        want["truncated_prompts"] += len(prompt) > limit
        for side in ("chosen", "rejected"):
            completion = full[side][len(prompt):]
            assert completion[-2:] == tok.convert_tokens_to_ids(["<|im_end|>", "Ċ"])  # EOS + newline of ChatML
            assert row[f"{side}_ids"] == completion[:MAX_LENGTH - len(kept)]
            assert len(kept) + len(row[f"{side}_ids"]) <= MAX_LENGTH
            want[f"truncated_{side}"] += len(completion) > MAX_LENGTH - len(kept)
    # by hand: ChatML adds 19 tokens to a prompt, 2 to a completion: prompts 49, 99, 169, 39 > 48 for pairs 0-2;
    # room 48 (57 for pair 3): pair 0's rejected (62) and pair 2's chosen (62) are cut
    assert want == {"truncated_prompts": 3, "truncated_chosen": 1, "truncated_rejected": 1}
    assert trainer.truncation_counts == {**want, "truncated_completions": 2}


@pytest.mark.e2e
def test_train_dpo_authors_keeps_what_trl_drops(tiny, tmp_path):
    """The same pairs through train_dpo: trl drops the pairs whose prompt alone fills max_length (pairs 1 and 2:
    99 and 169 tokens), authors keeps them all and counts the cuts in the stats (metrics.json's train section);
    the first step's loss is still ln 2 (the policy is its own reference)."""
    from drift_exp.training.dpo import train_dpo

    pairs = _pairs()
    stats = {}
    for mode in Truncation:
        cfg = TrainerConfig(global_batch_size=4, micro_batch_size=4, max_length=MAX_LENGTH, rpo_alpha=0.0,
                            ref_mode="live", gradient_checkpointing=False, truncation=mode)
        stats[mode] = train_dpo(tiny, None, pairs, tmp_path / mode / "checkpoint", cfg, epochs=1, seed=0,
                                report_to="none", run_name=mode, stage=f"{mode}/train")
    trl, authors = stats[Truncation.trl], stats[Truncation.authors]
    assert trl["examples"] == 2 and trl["dropped_too_long"] == 2 and "truncated_prompts" not in trl
    assert trl["truncation"] == "trl" and trl["max_prompt_length"] is None
    assert authors["examples"] == 4 and authors["dropped_too_long"] == 0
    assert authors["truncation"] == "authors" and authors["max_prompt_length"] == MAX_LENGTH // 2
    # as in test_trainer_dataset_is_cut_the_authors_way (max_prompt_length null = 96 // 2 = 48)
    assert (authors["truncated_prompts"], authors["truncated_chosen"], authors["truncated_rejected"]) == (3, 1, 1)
    assert authors["truncated_completions"] == 2
    assert abs(authors["history"][0]["loss"] - math.log(2)) < 1e-4
