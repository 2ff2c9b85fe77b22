"""Shared test setup: offline W&B, a private model cache, the repository's config folder."""

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "drift_exp" / "conf"

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


@pytest.fixture(autouse=True)
def _own_wandb_service():
    """A test that runs W&B in this process starts a wandb-core service and exports WANDB_SERVICE, which every
    later `python -m drift_exp` child would inherit and share. A child killed on purpose (the kill-and-resume
    tests) then leaves its run registered in that shared service, and the resumed child is refused ("run ID
    ... is in use"). So a test's service ends with the test, and children start their own, as a user's do."""
    before = os.environ.get("WANDB_SERVICE")
    yield
    if before is None and "WANDB_SERVICE" in os.environ:
        import wandb

        wandb.teardown()
        os.environ.pop("WANDB_SERVICE", None)
