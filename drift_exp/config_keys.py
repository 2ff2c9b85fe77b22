"""Keys the schema does not have, refused whichever way they came in.

A plain `trainer.learnig_rate=1` is refused by OmegaConf while Hydra composes (the schema is struct), but Hydra
adds a `+trainer.learnig_rate=1` (the form its own error message suggests) with the struct flag lifted, so the
bogus key would sit in config.yaml and W&B as if it had been applied. `check_known_keys` walks the composed config
against the dataclasses of drift_exp/config.py and refuses any key they do not declare, with the closest
declared key; fields typed as a dict (generation.engine_kwargs, and any other dict-typed field) stay open.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from typing import Any

from omegaconf import DictConfig, OmegaConf

from drift_exp.errors import ConfigError


def _fields(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints.get(f.name, Any) for f in dataclasses.fields(cls)}


def _open(tp: Any) -> bool:
    """A field whose keys are free: a dict (or Any)."""
    if tp is Any or tp is dict:
        return True
    origin = typing.get_origin(tp)
    if origin is dict:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_open(a) for a in typing.get_args(tp) if a is not type(None))
    return False


def _dataclass_of(tp: Any) -> type | None:
    if dataclasses.is_dataclass(tp):
        return tp
    for arg in typing.get_args(tp):
        if dataclasses.is_dataclass(arg):
            return arg
    return None


def unknown_keys(node: Any, cls: type, prefix: str = "") -> list[tuple[str, list[str]]]:
    """(dotted key, the closest declared keys) for each key of `node` (a plain dict) that `cls` does not declare."""
    declared = _fields(cls)
    out: list[tuple[str, list[str]]] = []
    for key, value in node.items():
        full = f"{prefix}{key}"
        if key not in declared:
            close = difflib.get_close_matches(str(key), list(declared), n=1, cutoff=0.6)
            out.append((full, [f"{prefix}{c}" for c in close]))
            continue
        tp = declared[key]
        sub = _dataclass_of(tp)
        if sub is not None and isinstance(value, dict) and not _open(tp):
            out += unknown_keys(value, sub, f"{full}.")
    return out


def check_known_keys(dcfg: DictConfig, schema: type | None = None) -> None:
    """Refuse a key the schema does not declare (added with +key=value), naming the closest one."""
    if schema is None:
        from drift_exp.config import Config

        schema = Config
    raw = OmegaConf.to_container(dcfg, resolve=False)
    raw.pop("hydra", None)
    bad = unknown_keys(raw, schema)
    if bad:
        key, close = bad[0]
        hint = f"; did you mean {close[0]}?" if close else ""
        raise ConfigError(f"{key}: no such setting{hint} (+{key}=... adds a key, but drift_exp reads only the keys "
                          "its schema declares, drift_exp/config.py; `python -m drift_exp --cfg job` lists them)")


def check_stop_after(stop_after: str | None) -> None:
    """run.stop_after naming iteration 0's stages (iter_0/train): iteration 0 is the warm start, named as such."""
    from drift_exp.names import parse_stop_after

    stop = parse_stop_after(stop_after) if stop_after else None
    if stop is not None and stop.iteration == 0:
        raise ConfigError(f"run.stop_after={stop_after}: iteration 0 is the warm start (its training and "
                          "evaluation); pass run.stop_after=warm_start to stop after it, or iter_<k>/<stage> with "
                          "k >= 1 for a later iteration")
