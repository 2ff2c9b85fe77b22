"""Load policies and tokenizers; build the tiny Qwen2 model that stands in for a real one on CPU;
turn a GGUF file into an ordinary checkpoint once, so every stage loads it like any other."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import asdict
from pathlib import Path

import torch

from drift_exp.cachedir import build_folder, cache_root, remove_dead_temps
from drift_exp.config import ModelConfig, TinyModelConfig
from drift_exp.packaged import gguf_file_of

log = logging.getLogger(__name__)

# ChatML, the format of Qwen2.5's template without its tool-calling branches.
CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>'"
    " + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def build_tiny(cfg: TinyModelConfig, root: Path | None = None, head: str = "lm") -> Path:
    """Save a randomly initialised Qwen2 model + byte-level Qwen2Tokenizer once; return its folder.

    head="lm": Qwen2ForCausalLM (the tiny policy); head="reward": Qwen2ForSequenceClassification
    with one output (the tiny reward model, a stand-in for the DeBERTa reward model on CPU).
    """
    from tokenizers import pre_tokenizers
    from transformers import Qwen2Config, Qwen2ForCausalLM, Qwen2ForSequenceClassification, Qwen2Tokenizer

    key = hashlib.sha256(json.dumps(asdict(cfg), sort_keys=True).encode()).hexdigest()[:12]
    folder = (root or cache_root()) / f"tiny-qwen2-{'' if head == 'lm' else head + '-'}{key}"
    remove_dead_temps(folder.parent)  # a build killed half way
    if (folder / "config.json").exists():
        return folder
    vocab = {"<|endoftext|>": 0, "<|im_start|>": 1, "<|im_end|>": 2}
    for ch in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab[ch] = len(vocab)
    tok = Qwen2Tokenizer(vocab=vocab, merges=[], eos_token="<|im_end|>", pad_token="<|endoftext|>",
                         unk_token=None, additional_special_tokens=["<|im_start|>"], padding_side="left")
    tok.chat_template = CHATML
    config = Qwen2Config(
        vocab_size=len(tok), hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_hidden_layers, num_attention_heads=cfg.num_attention_heads,
        num_key_value_heads=cfg.num_key_value_heads, max_position_embeddings=cfg.max_position_embeddings,
        tie_word_embeddings=head == "lm", eos_token_id=2, pad_token_id=0, bos_token_id=None,
        num_labels=1,
    )
    torch.manual_seed(cfg.init_seed)
    if head == "lm":
        model = Qwen2ForCausalLM(config)
        model.generation_config.eos_token_id = 2
        model.generation_config.pad_token_id = 0
    else:
        model = Qwen2ForSequenceClassification(config)
    return build_folder(folder, lambda tmp: save_checkpoint(model, tok, tmp))


def save_checkpoint(model, tok, folder: Path) -> None:
    model.save_pretrained(folder)
    tok.save_pretrained(folder)


def base_model_path(cfg: ModelConfig) -> str:
    """The experiment's starting model: a hub id, a local folder, the tiny model's cache folder, or the
    cache folder of a GGUF file's dequantised checkpoint (model.path a .gguf / pkg: file, or model.gguf_file)."""
    if cfg.path == "tiny":
        return str(build_tiny(cfg.tiny))
    gguf = gguf_file_of(cfg.path, cfg.gguf_file)
    return str(gguf_checkpoint(gguf)) if gguf is not None else cfg.path


# Bump when the conversion below changes what it writes: old cache entries are then not reused.
GGUF_CONVERSION = 2
_digests: dict[tuple[str, int, int], str] = {}


def file_digest(path: Path) -> str:
    """sha256 of the file's bytes (memoised per path, size and mtime within a process)."""
    st = path.stat()
    memo = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if memo not in _digests:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(1 << 22):
                h.update(chunk)
        _digests[memo] = h.hexdigest()
    return _digests[memo]


def gguf_checkpoint(file: Path, root: Path | None = None) -> Path:
    """Dequantise a GGUF file once into an HF checkpoint folder keyed by the file's content; return it.

    transformers reads GGUF (the `gguf` package) into float32 weights; the loaded model still carries
    the GGUF quantizer marker, which makes save_pretrained refuse, so it is cleared: the weights in
    memory are plain float32 by then. Built in a temporary folder and renamed into place.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    key = hashlib.sha256(f"{file_digest(file)}-v{GGUF_CONVERSION}".encode()).hexdigest()[:12]
    folder = (root or cache_root()) / f"gguf-{file.stem}-{key}"
    remove_dead_temps(folder.parent)  # a conversion killed half way
    if (folder / "config.json").exists():
        return folder
    t0 = time.time()
    log.info("dequantising %s into %s (once)", file, folder)
    tok = AutoTokenizer.from_pretrained(file.parent, gguf_file=file.name)
    model = AutoModelForCausalLM.from_pretrained(file.parent, gguf_file=file.name, dtype=torch.float32)
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    fix_special_tokens(tok, model)
    build_folder(folder, lambda tmp: save_checkpoint(model, tok, tmp))
    log.info("GGUF checkpoint ready in %.1f s: %s", time.time() - t0, folder)
    return folder


def fix_special_tokens(tok, model) -> None:
    """Settings the GGUF metadata leaves out, fixed before the checkpoint is saved.

    model_max_length: GGUF carries none (transformers leaves 1e30), so truncation=True would never cut;
    the model's context length is the real limit. pad: the GGUF tokenizer pads with EOS, as the hub
    checkpoint does; kept when set, EOS when missing, and written into the model's configs so
    generation and TRL pad with the same id.
    """
    limit = getattr(model.config, "max_position_embeddings", None)
    if limit and (tok.model_max_length is None or tok.model_max_length > limit):
        tok.model_max_length = int(limit)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model.config.pad_token_id = tok.pad_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    if model.generation_config.eos_token_id is None:
        model.generation_config.eos_token_id = tok.eos_token_id


def torch_dtype(name: str) -> torch.dtype:
    if name == "auto":
        if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    return getattr(torch, name)


_trust_remote_code = False  # model.trust_remote_code of this process's config (set_trust_remote_code)


def set_trust_remote_code(flag: bool) -> None:
    """Apply model.trust_remote_code to every later load in this process (the pipeline and each worker
    set it from their config, so loads deep inside generation, scoring and evaluation honour it)."""
    global _trust_remote_code
    _trust_remote_code = bool(flag)


def trust_remote_code(override: bool | None = None) -> bool:
    """The flag a load passes to transformers / vLLM: `override`, else the configured one (off by default)."""
    return _trust_remote_code if override is None else override


def load_tokenizer(path: str, padding_side: str = "left", trust: bool | None = None):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path, padding_side=padding_side, trust_remote_code=trust_remote_code(trust))
    if tok.pad_token is None:  # as gen-drift.py does
        tok.pad_token = tok.eos_token
    return tok


def load_policy(path: str, dtype: torch.dtype, trust: bool | None = None):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, dtype=dtype, trust_remote_code=trust_remote_code(trust))


WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")


def check_model_folder(key: str, value: str, trust: bool = False, gguf_file: str | None = None) -> None:
    """A local model.path / scorer.path checked before anything is written: a folder with a config.json that
    transformers resolves (AutoConfig, no weights loaded) and its weights (safetensors, .bin, or the GGUF file
    model.gguf_file names), or a .gguf file. Hub ids, 'tiny', 'auto' and pkg: paths are left to their loaders.
    ConfigError naming the key otherwise."""
    from drift_exp.data.sources import kind_of
    from drift_exp.errors import ConfigError
    from drift_exp.locations import Kind, locate

    if value in ("tiny", "auto") or value.startswith("pkg:"):
        return
    path = Path(value).expanduser()
    kind = kind_of(path)
    if kind == "missing":
        if locate(value, ("tiny", "auto")).kind == Kind.local:
            raise ConfigError(f"{key}={value!r}: no such file or folder (expected a model folder or a hub id)")
        return  # a hub id
    if kind == "file":
        if path.suffix != ".gguf":
            raise ConfigError(f"{key}={value!r} is a file, expected a model folder (config.json and weights) "
                              "or a .gguf file")
        return  # its reading is checked by packaged.gguf_file_of
    if kind != "folder":
        raise ConfigError(f"{key}={value!r} is {kind}, expected a model folder (config.json and weights)")
    if gguf_file:
        if kind_of(path / gguf_file) != "file":
            raise ConfigError(f"{key}={value!r}: model.gguf_file={gguf_file!r} is not a file in this folder")
        return
    config = path / "config.json"
    if kind_of(config) != "file":
        ggufs = sorted(p.name for p in path.glob("*.gguf"))
        hint = f" (it holds {ggufs[0]}: set model.gguf_file={ggufs[0]})" if ggufs else ""
        raise ConfigError(f"{key}={value!r}: no config.json in this folder, so it is not a model folder{hint}; "
                          "expected a saved transformers model (config.json and its weights)")
    weights = [f for f in WEIGHT_FILES if kind_of(path / f) == "file"] or sorted(
        p.name for pattern in ("*.safetensors", "pytorch_model*.bin") for p in path.glob(pattern))
    if not weights:
        raise ConfigError(f"{key}={value!r}: config.json but no weights in this folder (expected "
                          "model.safetensors, sharded *.safetensors with their index, or pytorch_model.bin)")
    from transformers import AutoConfig

    try:
        AutoConfig.from_pretrained(path, trust_remote_code=trust)
    except Exception as err:  # unknown model_type, damaged JSON, remote code not trusted: say which
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise ConfigError(f"{key}={value!r}: transformers cannot read its config.json ({first[:300]})") from None
