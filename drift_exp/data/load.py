"""The configured data source read into FeedbackRecords (`load_records`), and the records a run iterates on
(`select_records`)."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

from drift_exp.config import DataConfig, SettingConfig
from drift_exp.data import released, wildfeedback
from drift_exp.data.sources import local_or_hub
from drift_exp.errors import DataError
from drift_exp.records import FeedbackRecord


def detect_format(cfg: DataConfig) -> str:
    """data.format, with 'auto' resolved from what the source looks like (WildFeedback only)."""
    if cfg.format != "auto":
        return cfg.format
    if cfg.source == "sample":
        return "annotation"
    where = local_or_hub(cfg.source)
    if isinstance(where, Path) and where.is_dir() and (where / released.FILES["dsat"]).exists():
        return "released"
    return "annotation"


def _ultrafeedback(cfg: DataConfig, fmt: str, seed: int) -> tuple[list[FeedbackRecord], dict[str, Any]]:
    from drift_exp.data import ultrafeedback  # pandas/datasets only when UltraFeedback is read

    return ultrafeedback.load(cfg, fmt, seed)


Reader = Callable[[DataConfig, int], tuple[list[FeedbackRecord], dict[str, Any]]]

# One reader per data.format of drift_exp.names.DATA_FORMATS ('auto' is resolved by detect_format first);
# tests/test_names.py checks that they match.
READERS: dict[str, Reader] = {
    "annotation": lambda cfg, seed: wildfeedback.load(cfg),
    "released": lambda cfg, seed: released.load(cfg),
    "ultrafeedback_binarized": lambda cfg, seed: _ultrafeedback(cfg, "ultrafeedback_binarized", seed),
    "ultrafeedback_raw": lambda cfg, seed: _ultrafeedback(cfg, "ultrafeedback_raw", seed),
}


def load_records(cfg: DataConfig, seed: int = 42) -> tuple[list[FeedbackRecord], dict[str, Any]]:
    """Read the configured source into records and its counts (data/stats.json)."""
    from drift_exp.provenance import check_unchanged, snapshot

    before = snapshot(cfg.source)  # of the files read; a file rewritten while it is read is an error
    fmt = detect_format(cfg)
    if fmt not in READERS:
        raise DataError(f"data.format={fmt!r} has no reader")
    records, stats = READERS[fmt](cfg, seed)
    check_unchanged(cfg.source, before)
    return records, stats


def select_records(records: list[FeedbackRecord], kind: str, setting: SettingConfig,
                   seed: int) -> list[FeedbackRecord]:
    """The records of `kind` a run iterates on: all of them (full) or a seeded sample (controlled)."""
    pool = [r for r in records if r.kind == kind]
    if setting.max_records is None or len(pool) <= setting.max_records:
        return pool
    keep = set(random.Random(seed).sample(range(len(pool)), setting.max_records))
    return [r for i, r in enumerate(pool) if i in keep]  # keep the file order
