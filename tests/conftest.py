"""Shared test setup: offline W&B, a private model cache, the repository's config folder."""

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"

os.environ.setdefault("WANDB_MODE", "offline")  # never wait on the network
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory) -> Path:
    """A cache folder private to this test session, so the tiny model is built here, not in ~/.cache."""
    path = tmp_path_factory.mktemp("cache")
    os.environ["DRIFT_EXP_CACHE"] = str(path)
    return path
