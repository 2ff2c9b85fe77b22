"""Files the evaluation reads at run time from their official source (WildBench's judge template, the
leaderboard's per-task results and Arena Elo table), kept in a local cache, each with its sha256.

Nothing of them is shipped with the project. A URL is downloaded once into
`<cache>/<hash of the URL>/<file name>` (written to a temporary name, then renamed) and read from there
afterwards. Offline (HF_HUB_OFFLINE=1 or DRIFT_EXP_OFFLINE=1) or when the download fails, a file that is
not cached stops the run with a message naming the URL and the config key that takes a local copy.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from drift_exp.cachedir import cache_root
from drift_exp.errors import UserError

OFFLINE_ENV = ("HF_HUB_OFFLINE", "DRIFT_EXP_OFFLINE")


class FetchError(UserError):
    """An official file is neither cached nor downloadable; the message says how to provide it."""


@dataclass
class Fetched:
    text: str
    sha256: str  # of the file's bytes
    source: str  # the URL or local path it came from
    path: Path  # where it lies on disk (the cache entry, or the local file)


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def default_cache(cache_dir: str | None) -> Path:
    """eval.wildbench.elo.cache_dir, else <drift_exp cache root>/wildbench."""
    return Path(cache_dir).expanduser() if cache_dir else cache_root() / "wildbench"


def offline() -> bool:
    return any(os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on") for name in OFFLINE_ENV)


def is_url(source: str) -> bool:
    return source.startswith(("http://", "https://"))


def cache_path(url: str, cache_dir: Path) -> Path:
    name = url.split("?")[0].rstrip("/").split("/")[-1] or "index"
    return cache_dir / hashlib.sha256(url.encode()).hexdigest()[:16] / name


def fetch_text(source: str, cache_dir: Path, override: str, timeout_s: float = 120.0) -> Fetched:
    """The text of `source` (a URL, a file:// URL or a local path), from the cache when it is there.

    `override` names the config key that takes a local copy, for the error message.
    """
    if not is_url(source):
        path = Path(source.removeprefix("file://")).expanduser()
        if not path.is_file():
            raise FetchError(f"{override}: {path} is not a file")
        data = path.read_bytes()
        return Fetched(data.decode("utf-8"), hashlib.sha256(data).hexdigest(), str(path), path)
    path = cache_path(source, cache_dir)
    if path.is_file():
        data = path.read_bytes()
        return Fetched(data.decode("utf-8"), hashlib.sha256(data).hexdigest(), source, path)
    how = (f"download it where the network is reachable and set {override}=<local copy>, or place it at {path}")
    if offline():
        raise FetchError(f"{source} is needed but not cached ({path}) and this machine is offline "
                         f"({'/'.join(OFFLINE_ENV)} set): {how}")
    import httpx

    try:
        resp = httpx.get(source, timeout=timeout_s, follow_redirects=True,
                         headers={"User-Agent": "drift_exp", "Accept": "*/*"})
    except httpx.HTTPError as err:
        raise FetchError(f"{source} could not be downloaded ({type(err).__name__}: {err}): {how}") from None
    if resp.status_code != 200:
        raise FetchError(f"{source} answered HTTP {resp.status_code}: {resp.text[:200]!r}; {how}")
    data = resp.content
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    (path.parent / "source.json").write_text(json.dumps({"url": source, "sha256": hashlib.sha256(data).hexdigest()}))
    return Fetched(data.decode("utf-8"), hashlib.sha256(data).hexdigest(), source, path)


def fetch_json(source: str, cache_dir: Path, override: str) -> tuple[Any, Fetched]:
    """fetch_text, parsed as JSON; a file that is not JSON names its source and cache path."""
    got = fetch_text(source, cache_dir, override)
    try:
        return json.loads(got.text), got
    except json.JSONDecodeError as err:
        raise FetchError(f"{got.source} ({got.path}): not valid JSON ({err.msg} at line {err.lineno}); "
                         "delete the cached file to download it again") from None
