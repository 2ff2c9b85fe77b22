"""Field metadata of the config schemas: which settings change results (and so enter resume keys).

A field is result-affecting unless its dataclass field carries `metadata=NEUTRAL`; an unmarked
field is compared on resume (the safe side), so a field someone adds without thinking about it
can only cause a refusal, never a silent reuse. A field added after runs exist may declare, with
`metadata=since(legacy=v)`, the value that reproduces what runs recorded before it did; without
that, its schema default is taken to do so. Rules for the resume check live in drift_exp/stages.py.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from typing import Any

NEUTRAL = {"result": False}  # changes how a stage runs (memory, time, logging), not its results


class _NoLegacy:
    def __repr__(self) -> str:
        return "NO_LEGACY"


NO_LEGACY: Any = _NoLegacy()  # no value to accept in place of an unrecorded setting


def since(legacy: Any) -> dict[str, Any]:
    """Metadata of a result-affecting field added later: `legacy` reproduces the runs recorded before it."""
    return {"legacy": legacy}


def resume_rule_in(defaults: Any, path: str) -> tuple[bool, Any]:
    """(neutral, legacy value) of the setting at dotted `path` in `defaults` (a schema instance).

    Paths that are not schema fields (e.g. `iteration`, `data_file.size`) are result-affecting with no
    legacy value; a key inside a dict field (engine_kwargs.x) follows the dict field's marking."""
    node = defaults
    neutral = False
    for part in path.split(".") if path else []:
        if dataclasses.is_dataclass(node):
            f = next((f for f in dataclasses.fields(node) if f.name == part), None)
            if f is None:
                return neutral, NO_LEGACY
            neutral = neutral or f.metadata.get("result") is False
            node = f.metadata["legacy"] if "legacy" in f.metadata else getattr(node, part)
        elif isinstance(node, dict) and part in node:
            node = node[part]
        else:
            return neutral, NO_LEGACY
    if dataclasses.is_dataclass(node):
        return neutral, NO_LEGACY  # a whole section, not one setting
    return neutral, node


def result_fields(obj: Any) -> Any:
    """A dataclass as a dict of its result-affecting fields only (nested dataclasses likewise)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: result_fields(getattr(obj, f.name)) for f in dataclasses.fields(obj)
                if f.metadata.get("result") is not False}
    if isinstance(obj, dict):
        return {k: result_fields(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [result_fields(v) for v in obj]
    return obj


def leaves(obj: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted key, value) of every setting in a config object, dict keys included."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        for f in dataclasses.fields(obj):
            yield from leaves(getattr(obj, f.name), f"{prefix}.{f.name}" if prefix else f.name)
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from leaves(v, f"{prefix}.{k}")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from leaves(v, f"{prefix}[{i}]")
    else:
        yield prefix, obj


def non_finite(obj: Any) -> list[str]:
    """The keys whose value is a float inf or nan."""
    return [k for k, v in leaves(obj) if isinstance(v, float) and not math.isfinite(v)]
