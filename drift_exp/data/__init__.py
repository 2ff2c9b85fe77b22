"""Data sources -> FeedbackRecords. One module per source; `load_records` picks one from the config."""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path
from typing import Any

from drift_exp.config import DataConfig, OnInvalid, SettingConfig
from drift_exp.data import released, wildfeedback
from drift_exp.errors import DataError
from drift_exp.records import FeedbackRecord

log = logging.getLogger(__name__)

SAMPLE_DIR = Path(__file__).parent / "sample"
ANNOTATION_FILE = "sat_dsat_annotation.json"


def resolve_source(cfg: DataConfig) -> tuple[Path, str]:
    """Where the data is on disk and which format it has: (path, 'annotation' | 'released')."""
    if cfg.source == "sample":
        path = SAMPLE_DIR / ANNOTATION_FILE
    else:
        path = Path(cfg.source).expanduser()
        if not path.exists():
            looks_local = path.is_absolute() or cfg.source.startswith((".", "~")) or path.suffix != ""
            if looks_local or cfg.source.count("/") != 1:
                raise DataError(f"data.source={cfg.source!r}: no such file or folder")
            path = _download(cfg.source, cfg.revision)  # 'org/name' that is not a local path: a hub id
    fmt = cfg.format
    if fmt == "auto":
        if path.is_dir():
            fmt = "released" if (path / released.FILES["dsat"]).exists() else "annotation"
        else:
            fmt = "annotation"
    if fmt == "annotation" and path.is_dir():
        path = path / ANNOTATION_FILE
        if not path.exists():
            raise DataError(f"data.source={cfg.source!r}: folder has neither {ANNOTATION_FILE} "
                            f"nor the authors' {released.FILES['dsat']}")
    return path, fmt


def _download(repo_id: str, revision: str | None) -> Path:
    """Fetch the annotation file of a hub data set (only when the user names one)."""
    from huggingface_hub import hf_hub_download

    log.info("downloading %s from the hub dataset %s", ANNOTATION_FILE, repo_id)
    try:
        return Path(hf_hub_download(repo_id, ANNOTATION_FILE, repo_type="dataset", revision=revision))
    except Exception as err:  # offline, missing repo, gated: say which and how to fix it
        raise DataError(f"data.source={repo_id!r}: could not download {ANNOTATION_FILE} from the hub "
                        f"({type(err).__name__}: {err}); pass a local path instead") from None


def load_records(cfg: DataConfig) -> tuple[list[FeedbackRecord], dict[str, Any]]:
    """Read the configured source into records and its counts (data/stats.json)."""
    path, fmt = resolve_source(cfg)
    source = cfg.name
    if fmt == "released":
        return released.read_released(path, source)
    try:
        with open(path, encoding="utf-8") as f:
            rows = json.load(f)
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: not valid JSON at line {err.lineno}, column {err.colno} ({err.msg})") from None
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not UTF-8 at byte {err.start} ({err.reason})") from None
    if not isinstance(rows, list):
        raise DataError(f"{path}: expected one JSON array of utterances, got a {type(rows).__name__}")
    return wildfeedback.extract(rows, path, source, skip_invalid=cfg.on_invalid == OnInvalid.skip)


def select_dsat(records: list[FeedbackRecord], setting: SettingConfig, seed: int) -> list[FeedbackRecord]:
    """The DSAT records a run iterates on: all of them (full) or a seeded sample (controlled)."""
    dsat = [r for r in records if r.kind == "dsat"]
    if setting.max_dsat is None or len(dsat) <= setting.max_dsat:
        return dsat
    keep = set(random.Random(seed).sample(range(len(dsat)), setting.max_dsat))
    return [r for i, r in enumerate(dsat) if i in keep]  # keep the file order
