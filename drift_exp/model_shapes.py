"""The shape of a model (heads, layers, sizes) without loading its weights.

Used by the preflight (`python -m drift_exp.plan`) and by the generation layout (which tensor-parallel
sizes are legal). A model's shape comes from, in this order: the shipped numbers of the paper's models
(`SHIPPED`, so the plan works offline), the header of a GGUF file (`pkg:` or `.gguf`), the `config.json` of
a local folder, `TinyModelConfig` for
model.path=tiny, or the hub's config.json when the hub is reachable.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from drift_exp.config import TinyModelConfig


@dataclass(frozen=True)
class ModelShape:
    """What the memory estimate needs of a decoder-only model (values from the model's config.json)."""

    params: float
    hidden: int
    intermediate: int
    layers: int
    kv_dim: int  # num_key_value_heads x head_dim
    vocab: int


@dataclass(frozen=True)
class Shape:
    params: float  # parameters of the checkpoint as loaded (embeddings included)
    hidden: int
    intermediate: int
    layers: int
    heads: int  # attention (query) heads
    kv_heads: int
    head_dim: int
    vocab: int
    source: str = "shipped"

    def kv_bytes_per_token(self, dtype_bytes: int = 2) -> int:
        """KV-cache bytes of one token: K and V of every layer (sliding-window layers counted in full)."""
        return 2 * self.layers * self.kv_heads * self.head_dim * dtype_bytes

    def weight_bytes(self, dtype_bytes: int = 2) -> float:
        return self.params * dtype_bytes

    def training(self) -> ModelShape:
        """The subset `drift_exp.training.deepspeed.estimate_gpu_memory` reads."""
        return ModelShape(params=self.params, hidden=self.hidden, intermediate=self.intermediate, layers=self.layers,
                          kv_dim=self.kv_heads * self.head_dim, vocab=self.vocab)


# From the models' public config.json files (hub ids as conf/model/*.yaml name them).
SHIPPED: dict[str, Shape] = {
    # Qwen/Qwen2.5-7B-Instruct: 28 heads, 4 KV heads, head_dim 3584/28 = 128, untied embeddings.
    "Qwen/Qwen2.5-7B-Instruct": Shape(params=7.62e9, hidden=3584, intermediate=18944, layers=28, heads=28,
                                      kv_heads=4, head_dim=128, vocab=152064),
    # Qwen/Qwen2.5-14B-Instruct: 40 heads, 8 KV heads, head_dim 128, untied embeddings.
    "Qwen/Qwen2.5-14B-Instruct": Shape(params=14.77e9, hidden=5120, intermediate=13824, layers=48, heads=40,
                                       kv_heads=8, head_dim=128, vocab=152064),
    # google/gemma-3-12b-it, text_config (gemma3_text): 16 heads, 8 KV heads, head_dim 256 (not hidden/heads),
    # tied embeddings. Parameters: ~11.77 B of the language model plus ~0.42 B of the SigLIP vision tower,
    # which the checkpoint carries (Gemma3ForConditionalGeneration).
    "google/gemma-3-12b-it": Shape(params=12.19e9, hidden=3840, intermediate=15360, layers=48, heads=16,
                                   kv_heads=8, head_dim=256, vocab=262208),
}

# models.build_tiny's tokenizer: 3 special tokens + 256 byte symbols.
TINY_VOCAB = 259


def tiny_shape(t: TinyModelConfig) -> Shape:
    return _with_params(hidden=t.hidden_size, intermediate=t.intermediate_size, layers=t.num_hidden_layers,
                        heads=t.num_attention_heads, kv_heads=t.num_key_value_heads,
                        head_dim=t.hidden_size // t.num_attention_heads, vocab=TINY_VOCAB, tied=True, source="tiny")


def _with_params(*, hidden: int, intermediate: int, layers: int, heads: int, kv_heads: int, head_dim: int,
                 vocab: int, tied: bool, source: str) -> Shape:
    # Decoder-only, gated MLP: q/o (heads x head_dim), k/v (kv_heads x head_dim), 3 MLP matrices; norms ignored.
    per_layer = 2 * hidden * heads * head_dim + 2 * hidden * kv_heads * head_dim + 3 * hidden * intermediate
    params = layers * per_layer + vocab * hidden * (1 if tied else 2)
    return Shape(params=float(params), hidden=hidden, intermediate=intermediate, layers=layers, heads=heads,
                 kv_heads=kv_heads, head_dim=head_dim, vocab=vocab, source=source)


def shape_from_config(config: dict[str, Any], source: str) -> Shape:
    """A Shape from a config.json dict (multimodal configs: their text_config)."""
    c = config.get("text_config") or config
    hidden, heads = int(c["hidden_size"]), int(c["num_attention_heads"])
    # The key is often left out where it equals the model class's default: tied for Gemma, untied for Qwen2.
    tied_default = "gemma" in str(config.get("model_type", c.get("model_type", "")))
    return _with_params(hidden=hidden, intermediate=int(c["intermediate_size"]), layers=int(c["num_hidden_layers"]),
                        heads=heads, kv_heads=int(c.get("num_key_value_heads") or heads),
                        head_dim=int(c.get("head_dim") or hidden // heads), vocab=int(c["vocab_size"]),
                        tied=bool(config.get("tie_word_embeddings", c.get("tie_word_embeddings", tied_default))),
                        source=source)


class ShapeUnknown(Exception):
    pass


def shape_from_gguf(file: Path) -> Shape:
    """A Shape from a GGUF file's header (`<arch>.block_count`, `.attention.head_count`, ...); no weights read."""
    from gguf import GGUFReader

    reader = GGUFReader(str(file))

    def value(name: str) -> Any:
        field = reader.fields.get(name)
        if field is None:
            raise ShapeUnknown(f"{file}: GGUF header has no {name}")
        part = field.parts[field.data[0]]
        return bytes(part).decode() if name == "general.architecture" else int(part[0])

    arch = value("general.architecture")
    hidden, heads = value(f"{arch}.embedding_length"), value(f"{arch}.attention.head_count")
    tokens = reader.fields.get("tokenizer.ggml.tokens")
    vocab = (value(f"{arch}.vocab_size") if f"{arch}.vocab_size" in reader.fields
             else len(tokens.data) if tokens is not None else 0)
    kv = f"{arch}.attention.head_count_kv"
    return _with_params(hidden=hidden, intermediate=value(f"{arch}.feed_forward_length"),
                        layers=value(f"{arch}.block_count"), heads=heads,
                        kv_heads=value(kv) if kv in reader.fields else heads, head_dim=hidden // heads, vocab=vocab,
                        tied=not any(t.name == "output.weight" for t in reader.tensors), source=str(file))


def model_shape(path: str, tiny: TinyModelConfig | None = None) -> Shape:
    """The shape of model.path (see the module docstring for the order); ShapeUnknown if none applies."""
    if path == "tiny":
        return tiny_shape(tiny or TinyModelConfig())
    if path in SHIPPED:
        return SHIPPED[path]
    from drift_exp.errors import ConfigError
    from drift_exp.packaged import gguf_file_of

    try:
        gguf = gguf_file_of(path)
    except ConfigError as err:
        raise ShapeUnknown(str(err)) from None
    if gguf is not None:
        return shape_from_gguf(gguf)
    from drift_exp.locations import Kind, locate

    where = locate(path, ("tiny",))
    if where.kind == Kind.local:  # never asked of the hub (drift_exp.locations: a path, existing or not)
        local = Path(path).expanduser() / "config.json"
        if not local.is_file():
            raise ShapeUnknown(f"no config.json in the local folder {path!r}")
        try:
            return shape_from_config(json.loads(local.read_text()), str(local))
        except (ValueError, KeyError, TypeError) as err:
            raise ShapeUnknown(f"{local}: not a decoder config.json ({type(err).__name__}: {err})") from None
    try:
        from huggingface_hub import hf_hub_download

        file = hf_hub_download(path, "config.json")
        return shape_from_config(json.loads(Path(file).read_text()), f"hub:{path}")
    except Exception as err:  # offline, unknown id, gated
        raise ShapeUnknown(f"no config.json for {path!r} (local folder or hub: {type(err).__name__})") from None
