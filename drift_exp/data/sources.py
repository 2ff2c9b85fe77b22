"""Where a data set lives: the bundled sample, a local path, or (only when named) a hub id."""

from __future__ import annotations

import logging
from pathlib import Path

from drift_exp.errors import DataError
from drift_exp.locations import Kind, locate

log = logging.getLogger(__name__)

SAMPLE_DIR = Path(__file__).parent / "sample"


def local_or_hub(source: str) -> Path | str:
    """A Path when `source` names an existing local file or folder, the hub id when it is one (the one rule of
    drift_exp.locations), else DataError."""
    from drift_exp.provenance import require_kind

    where = locate(source, ("sample",))  # 'sample' is the callers' to handle: here it names no file
    if where.kind == Kind.hub:
        return source
    if where.kind == Kind.local and where.exists and where.path is not None:
        require_kind("data.source", where.path)  # a FIFO or a device would hang the reader
        return where.path
    raise DataError(f"data.source={source!r}: no such file or folder")


def hub_file(repo_id: str, filename: str, revision: str | None) -> Path:
    """Download one file of a hub data set (only ever called when the user named the hub id)."""
    from huggingface_hub import hf_hub_download

    log.info("downloading %s from the hub dataset %s", filename, repo_id)
    try:
        return Path(hf_hub_download(repo_id, filename, repo_type="dataset", revision=revision))
    except Exception as err:  # offline, missing repo, gated: say which and how to fix it
        raise DataError(f"data.source={repo_id!r}: could not download {filename} from the hub "
                        f"({type(err).__name__}: {err}); pass a local path instead") from None
