"""What a run records about its inputs: the data file's identity (part of the prepare stage's resume
record) and Hydra's own record of the command (.hydra/), written only once the config was checked."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from drift_exp.credentials import scrub
from drift_exp.records import write_text

HASHED_BELOW = 64 * 2**20  # data files smaller than this are identified by their content hash


def data_identity(source: str) -> dict[str, Any]:
    """What identifies the data behind data.source: each local file's path and size, plus its sha256 when
    it is small (else its mtime); the bundled sample by content only (it moves with the package); a hub
    id by name (data.revision is in the data section)."""
    from drift_exp.data.sources import SAMPLE_DIR

    if source == "sample":
        return {"sample": {p.name: _file_identity(p, with_path=False) for p in sorted(SAMPLE_DIR.glob("*.json*"))}}
    path = Path(source).expanduser()
    if not path.exists():
        return {"hub": source}
    if path.is_dir():
        return {"folder": str(path.resolve()),
                "files": {str(p.relative_to(path)): _file_identity(p, with_path=False)
                          for p in sorted(path.rglob("*")) if p.is_file() and not p.name.startswith(".")}}
    return _file_identity(path, with_path=True)


def _file_identity(path: Path, with_path: bool) -> dict[str, Any]:
    st = path.stat()
    out: dict[str, Any] = {"path": str(path.resolve())} if with_path else {}
    out["size"] = st.st_size
    if st.st_size < HASHED_BELOW:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        out["sha256"] = digest.hexdigest()
    else:  # hashing gigabytes on every resume would cost minutes; size + mtime catch a replaced file
        out["mtime_ns"] = st.st_mtime_ns
    return out


def save_hydra_record(root: Path, dcfg: DictConfig) -> None:
    """Write Hydra's .hydra/{config,hydra,overrides}.yaml. conf/config.yaml turns Hydra's own write (before
    the job starts) off with hydra.output_subdir=null, so a refused run cannot overwrite the record of the
    run whose stages are on disk; the pipeline calls this once every stage was checked."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return
    hydra_cfg = HydraConfig.get()
    out = root / ".hydra"
    write_text(out / "config.yaml", OmegaConf.to_yaml(scrub(OmegaConf.to_container(dcfg, resolve=False))))
    task = list(hydra_cfg.overrides.task)
    write_text(out / "overrides.yaml", OmegaConf.to_yaml(OmegaConf.create(scrub_overrides(task))))
    write_text(out / "hydra.yaml", OmegaConf.to_yaml(OmegaConf.create({"hydra": OmegaConf.to_container(
        hydra_cfg, resolve=False)})))


def scrub_overrides(overrides: list[str]) -> list[str]:
    """Command-line overrides with credentials masked (key=value each)."""
    out = []
    for o in overrides:
        key, sep, value = o.partition("=")
        out.append(f"{key}{sep}{scrub({key: value})[key]}" if sep else o)
    return out
