"""What a run records about its inputs: the data file's identity (part of the prepare stage's resume
record) and Hydra's own record of the command (.hydra/), written only once the config was checked."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from drift_exp.credentials import scrub
from drift_exp.data.sources import kind_of, require_kind
from drift_exp.errors import DataError
from drift_exp.records import write_text

HASHED_BELOW = 64 * 2**20  # data files smaller than this are identified by their content hash
# Inside a folder: when the files the reader reads add up to more than this, each is identified by its size,
# mtime and inode instead (hashing them on every resume would cost seconds on a folder of gigabytes).
FOLDER_HASHED_BELOW = HASHED_BELOW
# The files a reader takes from a data folder (the released files; the annotation file). A folder with none
# of them is read by the `datasets` library (UltraFeedback): its data files at the top and in data/.
DATA_SUFFIXES = (".json", ".jsonl", ".parquet", ".csv", ".arrow")
def files_read(source: str) -> list[Path]:
    """The local files the data readers read for data.source (none for a hub id), each checked to be a
    regular file: a file source itself; in a folder, the reader's files (not a walk of everything below)."""
    from drift_exp.data.released import FILES
    from drift_exp.data.sources import SAMPLE_DIR
    from drift_exp.data.wildfeedback import ANNOTATION_FILE

    if source == "sample":
        return sorted(SAMPLE_DIR.glob("*.json*"))
    path = Path(source).expanduser()
    kind = kind_of(path)
    if kind == "missing":
        return []
    require_kind("data.source", path)
    if kind == "file":
        return [path]
    named = [path / name for name in (*FILES.values(), ANNOTATION_FILE)]
    if not any(os.path.lexists(p) for p in named):
        named = [p for sub in (path, path / "data") if sub.is_dir() for p in sorted(sub.iterdir())
                 if p.suffix in DATA_SUFFIXES and not p.name.startswith(".")]
    out = []
    for p in named:
        if os.path.lexists(p):
            require_kind(f"data.source file {p.relative_to(path)}", p, ("file",))
            out.append(p)
    return out


def data_identity(source: str) -> dict[str, Any]:
    """What identifies the data behind data.source: each local file's path and size, plus its sha256 when
    it is small (else its mtime and inode); the bundled sample by content only (it moves with the package);
    a hub id by name (data.revision is in the data section). A folder: the files its reader reads that are
    present now (one added or removed is a change), hashed unless together over FOLDER_HASHED_BELOW."""
    files = files_read(source)
    if source == "sample":
        return {"sample": {p.name: _file_identity(p, with_path=False) for p in files}}
    path = Path(source).expanduser()
    if not files and not path.exists():
        return {"hub": source}
    if path.is_dir():
        big = sum(p.stat().st_size for p in files) >= FOLDER_HASHED_BELOW
        return {"folder": str(path.resolve()),
                "files": {str(p.relative_to(path)): _file_identity(p, with_path=False, hashed=not big)
                          for p in files}}
    return _file_identity(path, with_path=True)


def _file_identity(path: Path, with_path: bool, hashed: bool = True) -> dict[str, Any]:
    st = path.stat()
    out: dict[str, Any] = {"path": str(path.resolve())} if with_path else {}
    out["size"] = st.st_size
    if hashed and st.st_size < HASHED_BELOW:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        out["sha256"] = digest.hexdigest()
        if _stamp(path) != _stamp_of(st):
            raise DataError(f"{path} changed while its identity was read; rerun when nothing writes to it")
    else:  # hashing gigabytes on every resume would cost minutes; size + mtime + inode catch a replaced file
        out["mtime_ns"] = st.st_mtime_ns
        out["inode"] = st.st_ino
    return out


def _stamp_of(st: os.stat_result) -> tuple[int, ...]:
    # ctime moves on every write and cannot be set back (unlike mtime, which `touch -d` can)
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev)


def _stamp(path: Path) -> tuple[int, ...] | None:
    try:
        return _stamp_of(os.stat(path))
    except OSError:
        return None


def snapshot(source: str) -> dict[str, tuple[int, ...] | None]:
    """Size, times and inode of each file the readers read for data.source (compared after reading)."""
    return {str(p): _stamp(p) for p in files_read(source)}


def check_unchanged(source: str, before: dict[str, tuple[int, ...] | None]) -> None:
    """DataError when a file of data.source changed (or appeared, or went) since `before` was taken: the
    records read from it would be from neither version, and must not be marked done."""
    now = snapshot(source)
    changed = sorted(p for p in before.keys() | now.keys() if before.get(p) != now.get(p))
    if changed:
        raise DataError(f"{changed[0]} changed while it was read (data.source={source!r}); nothing was recorded. "
                        "Rerun when nothing writes to it any more.")


def unrecorded_ok(key: str, recorded: Iterable[str]) -> bool:
    """Whether a data_file.* setting the finished stage's record lacks may go unchecked: only when the record
    holds no data identity at all (an older drift_exp), or for an inode beside a recorded size (added later).
    A file of the folder the record does not name is a file added since: a change."""
    recorded = set(recorded)
    if not any(k.startswith("data_file.") for k in recorded):
        return True
    return key.endswith(".inode") and key.removesuffix(".inode") + ".size" in recorded


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


def check_input_paths(cfg: Any) -> None:
    """Every local path setting checked for its kind before anything reads it (a FIFO, a device or a socket
    would hang or never end; a wrong kind gives a library's traceback later), and the model folders checked
    for a config transformers resolves and their weights (drift_exp.models.check_model_folder)."""
    from drift_exp.config import scorer_path
    from drift_exp.errors import ConfigError

    ev = cfg.eval
    file, either = ("file",), ("file", "folder")
    files = [("eval.wildbench.template_file", ev.wildbench.template_file, file),
             ("eval.proxy_source", ev.proxy_source, file), ("eval.alpaca_eval_source", ev.alpaca_eval_source, either),
             ("eval.wildbench_source", ev.wildbench_source, either)]
    if not ev.wildbench.template_url.startswith(("http://", "https://")):
        files.append(("eval.wildbench.template_url", ev.wildbench.template_url.removeprefix("file://"), file))
    try:
        source = Path(cfg.data.source).expanduser()
        if not files_read(cfg.data.source) and cfg.data.source != "sample" and kind_of(source) == "folder":
            raise DataError(f"data.source={cfg.data.source!r} is a folder without a file any reader takes (the "
                            "released dsat_data.jsonl, sat_dsat_annotation.json, or UltraFeedback's data files)")
        for key, value, kinds in files:
            if value and value != "sample":
                require_kind(key, Path(value).expanduser(), kinds)
        elo = ev.wildbench.elo.results_url
        if not elo.startswith(("http://", "https://")):
            require_kind("eval.wildbench.elo.results_url", Path(elo).expanduser(), ("folder",))
    except DataError as err:
        raise ConfigError(str(err)) from None
    models = [("model.path", cfg.model.path, cfg.model.gguf_file)]
    if "proxy" in ev.benchmarks or cfg.method.kind == "iterdpo":
        models.append(("scorer.path", scorer_path(cfg), None))
    for key, value, gguf in models:
        if value not in ("tiny", "auto") and not value.startswith("pkg:") and os.path.lexists(Path(value).expanduser()):
            from drift_exp.models import check_model_folder  # torch and transformers: only for a local model

            check_model_folder(key, value, cfg.model.trust_remote_code, gguf)
