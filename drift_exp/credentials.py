"""Credentials stay out of config.yaml, Hydra's records, the DONE markers, the logs and the W&B run config.

One rule for every string value of the config (and whatever is derived from it). A value carries a credential
when it is
- the value of a key named like one (key, api_key, token, secret, password, passwd, pwd, sig, signature, auth,
  authorization, credential, cookie...: the last part of the key's name, any case, with - or _), which covers
  header values such as `engine_kwargs.headers.Authorization` or `X-Api-Key`;
- a URL's user-info (`https://user:password@host`), or a query parameter or fragment parameter whose name looks
  like a credential (`?api_key=...`, `#access_token=...`), in a URL anywhere in the value;
- text that looks like a provider's key wherever it stands: sk-..., hf_..., ghp_..., xoxb-..., AKIA...,
  AIza..., glpat-..., a JSON web token, `Bearer <token>`;
- for a key that names an environment variable holding a secret (`eval.judge.api_key_env`), anything that is
  not a variable name (the key pasted in place of its variable's name).

Such a value must come from the environment: `key='${oc.env:VAR}'`, or the secret part of it
(`https://user:${oc.env:PW}@host/v1`). The saved config keeps that reference, not the value, and every process
resolves it when it reads the config (child jobs inherit the environment). A literal credential on the command
line (checked before Hydra composes, so not even Hydra's own errors print it) or in a YAML file is refused
before anything is written; the literal part counts even next to a reference (`https://user:pw@${oc.env:HOST}`).
Anything that still carries one once resolved (a reference's value in a DONE marker, an error message, a log
line) is masked: `scrub` for config dicts, `mask_text` for free text, `install_log_mask` for every log line.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import unquote, urlsplit

from omegaconf import DictConfig, OmegaConf

from drift_exp.errors import ConfigError

_NAMES = (r"api[-_]?key|apikey|key|token|access[-_]?token|refresh[-_]?token|id[-_]?token|auth[-_]?token|secret|"
          r"client[-_]?secret|password|passwd|pwd|passphrase|sig|signature|auth|authorization|credentials?|cookie|"
          r"session[-_]?id|private[-_]?key|security[-_]?token")
SECRET_NAME = re.compile(rf"(^|[_.-])({_NAMES})$", re.IGNORECASE)
ENV_NAME_KEY = re.compile(rf"(^|[_.-])({_NAMES})[-_]env$", re.IGNORECASE)  # holds a variable's name
ENV_VARIABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
ENV_REFERENCE = re.compile(r"\$\{oc\.env:[^{}]+\}")  # anywhere in a value: https://u:${oc.env:PW}@host too
_INTERPOLATION = re.compile(r"\$\{[^${}]*\}")  # innermost first; any interpolation is not a literal
_HOLE = "\ue000"  # stands for an interpolation while a value is checked (in no character class below)
MASK = "***"

PROVIDER_KEYS = (
    ("an OpenAI/Anthropic-style key (sk-...)", r"sk-[A-Za-z0-9_-]{20,}"),
    ("a Hugging Face token (hf_...)", r"hf_[A-Za-z0-9]{20,}"),
    ("a GitHub token", r"(?:gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,})"),
    ("a Slack token (xox.-...)", r"xox[abposr]-[A-Za-z0-9-]{10,}"),
    ("an AWS access key id (AKIA...)", r"(?:AKIA|ASIA)[0-9A-Z]{16}"),
    ("a Google API key (AIza...)", r"AIza[0-9A-Za-z_-]{35}"),
    ("a GitLab token (glpat-...)", r"glpat-[A-Za-z0-9_-]{20,}"),
    ("a JSON web token", r"eyJ[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]+"),
    ("a bearer token", r"Bearer\s+[A-Za-z0-9._~+/=-]{12,}"),
)
_PROVIDER = re.compile("|".join(f"(?<![A-Za-z0-9])(?P<p{i}>{p})(?![A-Za-z0-9])"
                                for i, (_, p) in enumerate(PROVIDER_KEYS)))
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>`]+")


def _hide(text: str) -> tuple[str, list[str]]:
    """`text` with every ${...} interpolation (innermost first, so nested ones too) replaced by a hole mark,
    and the interpolations in the order of their holes."""
    refs: list[str] = []
    while True:
        m = _INTERPOLATION.search(text)
        if m is None:
            return text, refs
        inner = m.group(0)
        for i, ref in enumerate(refs):  # a nested interpolation: put the inner ones back into its text
            inner = inner.replace(f"{_HOLE}{i}{_HOLE}", ref, 1)
        text = f"{text[:m.start()]}{_HOLE}{len(refs)}{_HOLE}{text[m.end():]}"
        refs.append(inner)


def _show(text: str, refs: list[str]) -> str:
    for i in range(len(refs) - 1, -1, -1):
        text = text.replace(f"{_HOLE}{i}{_HOLE}", refs[i])
    return text


def _spans(key: str, text: str) -> list[tuple[int, int, str]]:
    """(start, end, what) of each credential in `text` (a value of `key`; interpolations already holes),
    so that it can be refused (when it holds no hole) or masked."""
    name = key.rsplit(".", 1)[-1]
    if text and SECRET_NAME.search(name):
        return [(0, len(text), f"the value of {name!r}, named like a credential")]
    if text and ENV_NAME_KEY.search(name) and _HOLE not in text and not ENV_VARIABLE.fullmatch(text):
        return [(0, len(text), f"not a variable name: {name} takes the NAME of the environment variable that "
                 "holds the secret (e.g. OPENAI_API_KEY), not the secret")]
    out: list[tuple[int, int, str]] = []
    for m in _URL.finditer(text):
        out += [(m.start() + a, m.start() + b, what) for a, b, what in _url_spans(m.group(0))]
    for m in _PROVIDER.finditer(text):
        what = PROVIDER_KEYS[int(next(k for k, v in m.groupdict().items() if v is not None)[1:])][0]
        out.append((m.start(), m.end(), what))
    return sorted(set(out))


def _url_spans(url: str) -> list[tuple[int, int, str]]:
    try:
        parts = urlsplit(url)
    except ValueError:
        return []
    out = []
    start = len(parts.scheme) + 3  # after scheme://
    if "@" in parts.netloc:
        userinfo = parts.netloc.rpartition("@")[0]
        out.append((start, start + len(userinfo), "the URL's user-info (user:password@)"))
    for sep, part in (("?", parts.query), ("#", parts.fragment)):
        if not part:
            continue
        pos = url.find(sep + part, start) + 1
        for piece in re.finditer(r"[^&;]+", part):
            pname, eq, value = piece.group(0).partition("=")
            if eq and value and SECRET_NAME.search(unquote(pname)):
                at = pos + piece.start() + len(pname) + 1
                where = "query" if sep == "?" else "fragment"
                out.append((at, at + len(value), f"the URL's {where} parameter {unquote(pname)!r}"))
    return out


def literal_problems(key: str, value: str) -> list[str]:
    """What in `value` (of config key `key`) is a credential written out literally (not an interpolation)."""
    text, _ = _hide(value)
    return [what for a, b, what in _spans(key, text) if _HOLE not in text[a:b]]


def mask_value(key: str, value: str) -> str:
    """`value` with each credential in it replaced by *** (interpolations are kept as they are)."""
    text, refs = _hide(value)
    merged: list[list[int]] = []
    for a, b, _ in _spans(key, text):
        if _HOLE in text[a:b]:
            continue
        if merged and a <= merged[-1][1]:  # overlapping (a key inside a credential parameter): one mask
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    for a, b in reversed(merged):
        text = text[:a] + MASK + text[b:]
    return _show(text, refs)


_known: set[str] = set()  # credentials of the resolved config (remember_secrets): masked in any text


def mask_text(text: str) -> str:
    """Free text (an error message, a log line) with credentials masked: URLs' user-info and credential
    parameters, provider-style keys, and the credentials of this process's config (remember_secrets)."""
    for secret in sorted(_known, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, MASK)
    return mask_value("", text)


def redact_url(url: str) -> str:
    """The URL with its user-info and credential parameters replaced by *** (other strings unchanged)."""
    return mask_value("", url)


def scrub(obj: Any, key: str = "") -> Any:
    """A copy of a config dict with credentials masked (environment references are kept as they are)."""
    if isinstance(obj, dict):
        return {k: scrub(v, f"{key}.{k}" if key else str(k)) for k, v in obj.items()}
    if isinstance(obj, list):
        return [scrub(v, key) for v in obj]
    if isinstance(obj, str):
        return mask_value(key, obj)
    return obj


def _walk(node: Any, key: str) -> Iterable[tuple[str, str]]:
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _walk(v, f"{key}.{k}" if key else str(k))
    elif isinstance(node, list):
        for v in node:
            yield from _walk(v, key)
    elif isinstance(node, str):
        yield key, node


def literal_credentials(dcfg: DictConfig) -> list[tuple[str, str]]:
    """(key, what) for each credential written out literally in the config (not an ${oc.env:...} reference)."""
    raw = OmegaConf.to_container(dcfg, resolve=False)
    return [(key, what) for key, value in _walk(raw, "") for what in literal_problems(key, value)]


def _refusal(key: str, what: str) -> str:
    return (f"{key} holds a credential written out literally ({what}); it would be stored in config.yaml, Hydra's "
            f"records, the logs and W&B. Put it in an environment variable and pass {key}='${{oc.env:YOUR_VARIABLE}}'"
            " instead (or reference just the secret part, e.g. https://user:${oc.env:YOUR_VARIABLE}@host/v1)")


def check_credentials(dcfg: DictConfig) -> None:
    """Refuse literal credentials: they would be written to config.yaml, the logs and W&B."""
    found = literal_credentials(dcfg)
    if found:
        raise ConfigError(_refusal(*found[0]))
    remember_secrets(dcfg)


def check_overrides(overrides: list[str]) -> None:
    """The command line's key=value overrides checked before Hydra composes them (Hydra's own errors, a value
    of the wrong type for instance, print the value)."""
    for arg in overrides:
        if arg.startswith("-") or "=" not in arg:
            continue
        key, _, value = arg.partition("=")
        key = key.lstrip("+~")
        problems = literal_problems(key, value)
        if problems:
            raise ConfigError(_refusal(key, problems[0]))


def remember_secrets(dcfg: DictConfig) -> None:
    """Note the credentials the config resolves to (from the environment), so that mask_text hides them
    wherever they appear (a validation error echoing a value, a library's message quoting a URL)."""
    try:
        resolved = OmegaConf.to_container(dcfg, resolve=True)
    except Exception:  # an unset variable: nothing resolved, nothing to hide (the run fails on it later)
        return
    for key, value in _walk(resolved, ""):
        for a, b, _ in _spans(key, value):
            if b - a >= 4:
                _known.add(value[a:b])


class _MaskFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        try:
            text = record.getMessage()
        except Exception:  # a malformed record: leave it to the handler
            return True
        masked = mask_text(text)
        if masked != text:
            record.msg, record.args = masked, None
        return True


_FILTER = _MaskFilter()


def install_log_mask() -> None:
    """Mask credentials in every line the process's log handlers write (console, the run's log file, and
    W&B's copy of the console)."""
    for logger in (logging.getLogger(), logging.getLogger("hydra")):
        for handler in logger.handlers:
            if _FILTER not in handler.filters:
                handler.addFilter(_FILTER)


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
