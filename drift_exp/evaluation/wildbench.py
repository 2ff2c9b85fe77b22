"""WildBench v2: generation requests, the outputs file in WildBench's format, and WB-Score judging.

Outputs (`src/unified_utils.py::save_outputs`): a JSON list in benchmark order, one item per task:
{session_id, chat_history, model_input, output: [text], generator, configs, dataset, primary_tag}.

Judging follows `src/eval.py` (score mode): the history is the turns before the last as
"USER: ...\\n\\n" / "ASSISTANT: ...\\n\\n", the checklist is "- item\\n" bullets, an empty output gets
score 1 without a call, and the parsed records keep WildBench's fields {session_id, parsed_result,
meta_data, model_test, score, model_output}.

The judge prompt is WildBench v2's own score template (eval.wildbench.template=official, the default),
read at run time from allenai/WildBench (evaluation/eval_template.score.v2.md) or a local copy, and
filled at its placeholders {$history}, {$user_query}, {$model_output}, {$checklist}. SCORE_TEMPLATE
below is this project's own wording of that template's structure (same blocks and delimiters, same
1-10 bands, same JSON answer), used only when eval.wildbench.template=project: its scores are a proxy.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from drift_exp.errors import DataError
from drift_exp.evaluation.config import JudgeConfig, WildBenchConfig
from drift_exp.evaluation.fetch import Fetched, fetch_text, sha256_text
from drift_exp.evaluation.judge import JudgeClient, JudgeRequest, cache_key
from drift_exp.evaluation.wb_metrics import TRUNCATED
from drift_exp.records import Completion, GenRequest

DATASET = "wild_bench"
TEMPLATE_VERSION = "wb-score-v2/drift_exp-1"  # bump when SCORE_TEMPLATE changes: the judge cache keys on it
PLACEHOLDERS = ("{$history}", "{$user_query}", "{$model_output}", "{$checklist}")
EMPTY_RESULT = {"strengths": "N/A", "weaknesses": "The model output is empty.", "score": "1"}

SCORE_TEMPLATE = """# Task

You are an expert judge of AI assistants. Read a conversation between a user and an AI assistant and \
rate the quality of the assistant's latest response. Study the user's current query and the earlier \
turns first, so that you understand what the user needs, then assess the response with the checklist \
and the rules below.

# The conversation

## Earlier turns
<|begin_of_history|>

{$history}

<|end_of_history|>

## The user's current query
<|begin_of_query|>

{$user_query}

<|end_of_query|>

## The AI response to evaluate
<|begin_of_response|>

{$model_output}

<|end_of_response|>

# How to evaluate

## Checklist

<|begin_of_checklist|>

{$checklist}

<|end_of_checklist|>

Let the checklist guide you, but also judge anything it does not cover.

## Rules

Judge the response against the user's query and the earlier turns. Analyse it first, with the \
checklist in mind, and only then decide on a score from 1 to 10, where 1 is a very poor response and \
10 a perfect one:

- 1~2: very poor; the response makes no sense or ignores the request.
- 3~4: poor; it does not help the user solve the problem in a meaningful way.
- 5~6: fair, with real issues (e.g. factual errors, hallucinations, missing key information).
- 7~8: good, though it could still be improved in some ways.
- 9~10: excellent; it fully and correctly helps the user.

## Output format

Answer with one JSON object and nothing else, filling in the placeholders in []:
```
{
    "strengths": "[the strengths of the response]",
    "weaknesses": "[the weaknesses of the response]",
    "score": "[1~10]"
}
```"""


def requests(tasks: list[dict[str, Any]]) -> list[GenRequest]:
    """Every task's conversation (history + final user query) through the model's chat template."""
    return [GenRequest(record_id=f"wildbench/{t['session_id']}", slot="eval",
                       messages=[{"role": m["role"], "content": m["content"]} for m in t["conversation_input"]])
            for t in tasks]


def output_rows(tasks: list[dict[str, Any]], completions: list[Completion], model_inputs: list[str],
                generator: str, configs: dict[str, Any]) -> list[dict[str, Any]]:
    """WildBench's model-output file content, in benchmark order."""
    rows = []
    for t, c, prompt in zip(tasks, completions, model_inputs, strict=True):
        assert c.record_id == f"wildbench/{t['session_id']}", (c.record_id, t["session_id"])
        rows.append({"session_id": t["session_id"], "chat_history": [m["content"] for m in t["conversation_input"]],
                     "model_input": prompt, "output": [c.outputs[0]], "generator": generator,
                     "configs": dict(configs), "dataset": DATASET, "primary_tag": t["primary_tag"]})
    return rows


def shorten(text: str, max_words: int = -1) -> str:
    """WildBench's --max_words_to_eval cut (split on single spaces)."""
    if max_words > 0 and len(text.split(" ")) > max_words:
        return " ".join(text.split(" ")[:max_words]) + TRUNCATED
    return text


def history_text(conversation: list[dict[str, Any]]) -> str:
    parts = []
    for m in conversation[:-1]:
        if m["role"] in ("user", "assistant"):
            parts.append(f"{m['role'].upper()}: {m['content']}\n\n")
    return "".join(parts)


def checklist_markdown(checklist: list[str]) -> str:
    return "".join(f"- {item}\n" for item in checklist)


def load_template(cfg: WildBenchConfig, cache_dir: Path) -> tuple[str, dict[str, Any]]:
    """(template text, what it is: {template, source, sha256, version, proxy}) for eval.wildbench.

    official: eval.wildbench.template_file if set, else template_url (downloaded once, cached); every
    placeholder must be in it and, when template_sha256 is set, its checksum must match.
    """
    if cfg.template == "project":
        text, source = SCORE_TEMPLATE, "drift_exp (project paraphrase)"
        digest = sha256_text(text)
        return text, {"template": "project", "source": source, "sha256": digest, "version": TEMPLATE_VERSION,
                      "proxy": True}
    key = "eval.wildbench.template_file"
    got: Fetched = fetch_text(cfg.template_file or cfg.template_url, cache_dir, key)
    missing = [p for p in PLACEHOLDERS if p not in got.text]
    if missing:
        raise DataError(f"{got.source} ({got.path}): not a WildBench score template, placeholders {missing} "
                        f"are missing (expected {list(PLACEHOLDERS)})")
    if cfg.template_sha256 and cfg.template_sha256.lower() != got.sha256:
        raise DataError(f"{got.source} ({got.path}): sha256 {got.sha256} differs from eval.wildbench."
                        f"template_sha256={cfg.template_sha256}")
    return got.text, {"template": "official", "source": got.source, "sha256": got.sha256,
                      "version": f"wb-score-v2/official-{got.sha256[:16]}", "proxy": False}


def checklist_digest(tasks: list[dict[str, Any]]) -> str:
    """sha256 of every task's checklist in benchmark order (session_id + items), for the metrics."""
    blob = json.dumps([[t["session_id"], t["checklist"]] for t in tasks], ensure_ascii=False)
    return sha256_text(blob)


def render_score_prompt(task: dict[str, Any], output: str, max_words: int = -1,
                        template: str = SCORE_TEMPLATE) -> str:
    conv = task["conversation_input"]
    fields = {  # filled one after the other, as WildBench's str.replace chain does
        "{$history}": shorten(history_text(conv), max_words),
        "{$user_query}": shorten(conv[-1]["content"], max_words),
        "{$model_output}": shorten(output, max_words),
        "{$checklist}": checklist_markdown(task["checklist"]),
    }
    prompt = template
    for placeholder, value in fields.items():
        prompt = prompt.replace(placeholder, value)
    return prompt


def parse_judgement(text: str) -> dict[str, Any] | None:
    """The judge's JSON object: the whole reply, a fenced ```json block, or the first {...} holding a score."""
    text = (text or "").strip()
    candidates = [text, text.replace("\n", " ")] + re.findall(r"```(?:json|JSON)?\s*(.*?)```", text, re.S)
    for cand in candidates:
        try:
            obj = json.loads(cand.strip())
        except (json.JSONDecodeError, ValueError):
            continue
        if isinstance(obj, dict):
            return obj
    decoder = json.JSONDecoder()
    for m in re.finditer(r"\{", text):
        try:
            obj, _ = decoder.raw_decode(text, m.start())
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict) and "score" in obj:
            return obj
    return None


def score_value(value: Any) -> float | None:
    """A score in [1, 10] from 8, 7.5, "8", "8/10", "[8]", ["8"]; None for anything else (e.g. "[1~10]")."""
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        x = float(value)
    elif isinstance(value, str):
        if "~" in value:  # the template's placeholder echoed back
            return None
        m = re.search(r"\d+(?:\.\d+)?", value)
        if m is None:
            return None
        x = float(m.group())
    else:
        return None
    return x if 1 <= x <= 10 else None


_SCORE_RE = re.compile(r"""["']?\bscore\b["']?\s*[:=]\s*["'\[]?\s*(\d+(?:\.\d+)?)\s*(?:/\s*10)?""", re.I)


def parse_score(text: str) -> tuple[float | None, dict[str, Any]]:
    """(score or None, parsed_result); parsed_result is {"N/A": "N/A"} when no JSON was found, as in WildBench."""
    parsed = parse_judgement(text)
    if parsed is not None and "score" in parsed:
        s = score_value(parsed["score"])
        if s is not None:
            return s, parsed
    m = _SCORE_RE.search(text or "")
    if m:
        s = score_value(m.group(1))
        if s is not None:
            return s, parsed if parsed is not None else {"score": m.group(1), "parsed_by": "regex"}
    return None, parsed if parsed is not None else {"N/A": "N/A"}


def judge(tasks: list[dict[str, Any]], rows: list[dict[str, Any]], client: JudgeClient, cfg: JudgeConfig,
          template: str = SCORE_TEMPLATE, version: str = TEMPLATE_VERSION) -> list[dict[str, Any]]:
    """One WildBench score record per task (benchmark order); score None when the judge failed or was unparsable.
    `version` identifies the template in the judge cache's key and in each record's meta_data."""
    records: list[dict[str, Any]] = []
    calls: list[tuple[int, JudgeRequest]] = []
    for t, row in zip(tasks, rows, strict=True):
        out = row["output"][0]
        rec = {"session_id": t["session_id"], "parsed_result": None, "model_test": row["generator"],
               "score": None, "model_output": shorten(out, cfg.max_words),
               "meta_data": {"judge": cfg.model, "template": version}}
        if out.strip() == "":
            rec.update(parsed_result=dict(EMPTY_RESULT), score=1.0)
            rec["meta_data"]["empty_output"] = True
        else:
            prompt = render_score_prompt(t, out, cfg.max_words, template)
            task_prompt = json.dumps([t["conversation_input"], t["checklist"]], ensure_ascii=False, default=str)
            calls.append((len(records), JudgeRequest(cache_key(version, cfg, task_prompt, out), prompt)))
        records.append(rec)
    replies = client.run([req for _, req in calls], desc="WildBench judge")
    for (i, _), reply in zip(calls, replies, strict=True):
        rec = records[i]
        rec["meta_data"].update(cached=reply.cached, usage=reply.usage)
        if reply.error is not None:
            rec["meta_data"]["error"] = reply.error
            continue
        rec["meta_data"]["raw"] = reply.content
        rec["score"], rec["parsed_result"] = parse_score(reply.content)
    return records
