"""Credentials stay out of config.yaml, the DONE markers, the logs and the W&B run config.

A setting that carries a credential (a URL with user:password@, or the value of a key named
*_KEY, *_TOKEN, *_SECRET, *PASSWORD) must come from the environment: `key='${oc.env:VAR}'`. The
saved config keeps that reference, not the value, and every process resolves it when it reads the
config (child jobs inherit the environment). A literal credential on the command line or in a YAML
file is refused before anything is written; anything else that looks like one is masked.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from omegaconf import DictConfig, OmegaConf

from drift_exp.errors import ConfigError

SECRET_NAME = re.compile(r"(^|[_.-])(api_?key|key|token|secret|password|passwd)$", re.IGNORECASE)
ENV_REFERENCE = re.compile(r"\$\{oc\.env:[^{}]+\}")  # anywhere in a value: https://u:${oc.env:PW}@host too
MASK = "***"


def redact_url(url: str) -> str:
    """The URL with any user:password@ replaced by ***@ (other strings unchanged)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if not parts.scheme or "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=f"{MASK}@{parts.netloc.rsplit('@', 1)[1]}"))


def _carries_credential(key: str, value: Any) -> bool:
    if not isinstance(value, str) or not value:
        return False
    return bool(SECRET_NAME.search(key)) or redact_url(value) != value


def scrub(obj: Any, key: str = "") -> Any:
    """A copy of a config dict with credentials masked (environment references are kept as they are)."""
    if isinstance(obj, dict):
        return {k: scrub(v, f"{key}.{k}" if key else str(k)) for k, v in obj.items()}
    if isinstance(obj, list):
        return [scrub(v, key) for v in obj]
    if isinstance(obj, str) and not ENV_REFERENCE.search(obj) and _carries_credential(key, obj):
        return MASK if SECRET_NAME.search(key) else redact_url(obj)
    return obj


def literal_credentials(dcfg: DictConfig) -> list[str]:
    """Keys whose value carries a credential written out literally (not an ${oc.env:...} reference)."""
    raw = OmegaConf.to_container(dcfg, resolve=False)
    found: list[str] = []

    def walk(node: Any, key: str) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, f"{key}.{k}" if key else str(k))
        elif isinstance(node, list):
            for v in node:
                walk(v, key)
        elif isinstance(node, str) and "${" not in node and _carries_credential(key, node):
            found.append(key)

    walk(raw, "")
    return found


def check_credentials(dcfg: DictConfig) -> None:
    """Refuse literal credentials: they would be written to config.yaml, the logs and W&B."""
    found = literal_credentials(dcfg)
    if found:
        key = found[0]
        raise ConfigError(f"{key} holds a credential written out literally (a URL with user:password@ or a "
                          f"secret's value); it would be stored in config.yaml and sent to W&B. Put it in an "
                          f"environment variable and pass {key}='${{oc.env:YOUR_VARIABLE}}' instead.")


def saved_config(dcfg: DictConfig) -> dict[str, Any]:
    """The config as stored in config.yaml and sent to W&B: resolved, except ${oc.env:...} references
    (resolved again by whoever reads it), with anything that still looks like a credential masked."""
    raw = OmegaConf.to_container(dcfg, resolve=False)
    resolved = OmegaConf.to_container(dcfg, resolve=True)

    def merge(r: Any, v: Any) -> Any:
        if isinstance(r, dict) and isinstance(v, dict):
            return {k: merge(r.get(k), v[k]) for k in v}
        if isinstance(r, str) and ENV_REFERENCE.search(r):
            return r
        return v

    return scrub(merge(raw, resolved))
