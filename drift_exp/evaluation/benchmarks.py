"""Load the benchmarks' examples: the bundled samples, a local file, or (only when named) the hub.

Every row is checked against the benchmark's schema; a bad row raises DataError naming the file,
the row and the field. Rows keep the benchmark's own field names and order.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from drift_exp.errors import DataError
from drift_exp.locations import is_hub_id
from drift_exp.records import iter_jsonl

SAMPLES = Path(__file__).parent / "samples"
SAMPLE_FILES = {"alpaca_eval": "alpaca_eval.json", "wildbench": "wildbench_v2.json", "proxy": "proxy_prompts.json"}
ALPACA_EVAL_HUB_FILE = "alpaca_eval.json"  # tatsu-lab/alpaca_eval: 805 rows, instruction/output/generator/dataset
WILDBENCH_TAGS = (
    "Information seeking", "Creative Writing", "Coding & Debugging", "Reasoning", "Editing", "Math", "Planning",
    "Brainstorming", "Role playing", "Advice seeking", "Data Analysis", "Others",
)
_ROLES = ("user", "assistant", "system")


def sample_path(benchmark: str) -> Path:
    return SAMPLES / SAMPLE_FILES[benchmark]


def _is_hub_id(source: str) -> bool:
    """A hub dataset id by the one rule of drift_exp.locations (an existing file, or a name ending in .json,
    .jsonl or .parquet, is a file)."""
    return is_hub_id(source, ("sample",))


def read_rows(path: Path) -> list[dict[str, Any]]:
    """A JSON list, JSONL, or parquet file as a list of dicts."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    if path.suffix == ".parquet":
        import pandas as pd

        return json.loads(pd.read_parquet(path).to_json(orient="records"))
    if path.suffix == ".jsonl":
        return [row for _, row in iter_jsonl(path)]
    text = path.read_text(encoding="utf-8")
    try:
        rows = json.loads(text)
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: not valid JSON ({err.msg} at line {err.lineno})") from None
    if not isinstance(rows, list):
        raise DataError(f"{path}: expected a JSON list of rows, got {type(rows).__name__}")
    return rows


def _check(where: str, row: Any, fields: dict[str, type | tuple[type, ...]]) -> None:
    if not isinstance(row, dict):
        raise DataError(f"{where}: expected an object, got {type(row).__name__}")
    for name, typ in fields.items():
        if name not in row:
            raise DataError(f"{where}: missing field {name!r}")
        if not isinstance(row[name], typ):
            raise DataError(f"{where}: field {name!r} must be {typ}, got {type(row[name]).__name__}")


def _limit(rows: list, limit: int | None) -> list:
    return rows if limit is None else rows[:limit]


def load_alpaca_eval(source: str, limit: int | None = None) -> list[dict[str, Any]]:
    """AlpacaEval 2's eval set: rows with instruction, output (reference), generator, dataset."""
    if source == "sample":
        path = sample_path("alpaca_eval")
    elif _is_hub_id(source):
        from huggingface_hub import hf_hub_download

        path = Path(hf_hub_download(source, ALPACA_EVAL_HUB_FILE, repo_type="dataset"))
    else:
        path = Path(source)
    rows = read_rows(path)
    for i, row in enumerate(rows):
        _check(f"{path}: row {i}", row, {"instruction": str})
        if not row["instruction"].strip():
            raise DataError(f"{path}: row {i}: field 'instruction' is empty")
    return _limit(rows, limit)


def load_wildbench(source: str, config: str = "v2", split: str = "test", limit: int | None = None
                   ) -> list[dict[str, Any]]:
    """WildBench v2 tasks: id, session_id, conversation_input (last turn = user query), checklist, tags."""
    if source == "sample":
        where, rows = str(sample_path("wildbench")), read_rows(sample_path("wildbench"))
    elif _is_hub_id(source):
        import datasets

        where = f"{source}[{config}/{split}]"
        try:  # the tasks and their checklists, from the hub (cached by `datasets` after the first read)
            rows = list(datasets.load_dataset(source, config, split=split))
        except (ConnectionError, OSError, ValueError) as err:
            raise DataError(f"{where}: could not be read from the hub or its cache ({type(err).__name__}: "
                            f"{str(err)[:300]}); download it where the hub is reachable, or set "
                            "eval.wildbench_source=<local .json/.jsonl/.parquet copy>") from None
    else:
        where, rows = source, read_rows(Path(source))
    seen: set[str] = set()
    for i, row in enumerate(rows):
        at = f"{where}: row {i}"
        _check(at, row, {"session_id": str, "conversation_input": list, "checklist": list, "primary_tag": str,
                         "secondary_tags": list})
        if row["session_id"] in seen:
            raise DataError(f"{at}: session_id {row['session_id']!r} appears twice")
        seen.add(row["session_id"])
        conv = row["conversation_input"]
        if not conv:
            raise DataError(f"{at}: field 'conversation_input' is empty")
        for j, turn in enumerate(conv):
            _check(f"{at}: conversation_input[{j}]", turn, {"role": str, "content": str})
            if turn["role"] not in _ROLES:
                raise DataError(f"{at}: conversation_input[{j}]: role must be one of {_ROLES}, got {turn['role']!r}")
        if conv[-1]["role"] != "user":
            raise DataError(f"{at}: conversation_input must end with the user query, ends with {conv[-1]['role']!r}")
        for tag in [row["primary_tag"], *row["secondary_tags"]]:
            if tag not in WILDBENCH_TAGS:
                raise DataError(f"{at}: unknown tag {tag!r} in primary_tag/secondary_tags; known: {WILDBENCH_TAGS}")
        if not all(isinstance(c, str) for c in row["checklist"]):
            raise DataError(f"{at}: field 'checklist' must be a list of strings")
    return _limit(rows, limit)


def load_proxy_prompts(source: str, limit: int | None = None) -> list[dict[str, Any]]:
    """Held-out prompts for the reward-model proxy: {id, messages} (or {id, prompt} for one user turn)."""
    path = sample_path("proxy") if source == "sample" else Path(source)
    rows = read_rows(path)
    out = []
    for i, row in enumerate(rows):
        at = f"{path}: row {i}"
        if isinstance(row, dict) and isinstance(row.get("prompt"), str) and "messages" not in row:
            row = {"id": row.get("id", str(i)), "messages": [{"role": "user", "content": row["prompt"]}]}
        _check(at, row, {"messages": list})
        if not row["messages"] or row["messages"][-1].get("role") != "user":
            raise DataError(f"{at}: field 'messages' must end with a user turn")
        for j, m in enumerate(row["messages"]):
            _check(f"{at}: messages[{j}]", m, {"role": str, "content": str})
        out.append({"id": str(row.get("id", i)), "messages": row["messages"]})
    return _limit(out, limit)
