"""A look at the pairs an iteration built, enough to judge them: a few as a Markdown file and a W&B table.

`iter_k/pairs_preview.md` and the table `pairs/preview` (names.WANDB_PAIRS_TABLE) hold the same rows, one per
pair: the iteration and method, the prompt's last turn, the user's complaint about the DSAT reply (the feedback
turn, for a pair built on a DSAT record), the instruction the policy was guided with where the chosen was
sampled with one, the chosen and the rejected with their lengths and whether each was cut at the token limit
(a policy sample that did not end with EOS; empty for a reply taken from the data), and both rewards where the
method ranked the pair with the reward model (IterDPO). The header says how many policy samples came back empty
and were skipped. The rows are the first pairs of pairs.jsonl in file order, so a rerun shows the same ones.

Where a sample was cut and what it was guided with are read from the iteration's own files: completions.jsonl
(each sample's `finished`) and requests.jsonl (the guided prompt), matched to a pair by its record id and the
sample slot and index the method put in its meta (methods/*.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from drift_exp.names import WANDB_ITERATION, WANDB_PAIRS_TABLE
from drift_exp.records import Completion, FeedbackRecord, GenRequest, PreferencePair, read_jsonl

COLUMNS = ["pair", "iteration", "method", "prompt_tail", "complaint", "instruction", "chosen", "chosen_chars",
           "chosen_cut", "rejected", "rejected_chars", "rejected_cut", "reward_chosen", "reward_rejected"]
EMPTY_SKIPS = "skipped_empty_sample"  # the pair builders' count of empty samples (methods/protocol.py)


def prompt_tail(pair: PreferencePair, chars: int = 300) -> str:
    """The prompt's last turn, with its role, cut to its last `chars` characters."""
    if not pair.prompt:
        return ""
    last = pair.prompt[-1]
    text = last["content"]
    if len(text) > chars:
        text = "…" + text[-chars:]
    return f"{last['role']}: {text}"


def guidance(request: GenRequest | None, record: FeedbackRecord | None) -> str | None:
    """The instruction a guided request added after the user's complaint (methods/prompts.py writes it as the
    plain text's last `System:` turn, or in the chat format after the feedback in the last user turn); None
    for a request on the context alone."""
    if request is None or record is None or not record.feedback:
        return None
    if request.text is not None:
        head, sep, tail = request.text.rpartition("\nSystem: ")
        return tail.removesuffix("\nAssistant: ") if sep and head.endswith(record.feedback) else None
    if len(request.messages) > len(record.prompt):
        last = request.messages[-1].get("content", "")
        prefix = record.feedback + "\n\n"
        return last[len(prefix):] if last.startswith(prefix) else None
    return None


def _sample(meta: Mapping[str, Any], side: str) -> tuple[str, int] | None:
    """(slot, index) of the completion a pair's chosen or rejected was sampled as; None for a reply from the data."""
    if f"{side}_index" in meta:  # two samples of one prompt, ranked (IterDPO)
        return "candidate", int(meta[f"{side}_index"])
    if meta.get("sampled") in (side, "both") and "sample_index" in meta:
        return side, int(meta["sample_index"])
    return None


def _cut(completions: Mapping[tuple[str, str], Completion], rid: str, sample: tuple[str, int] | None) -> bool | None:
    comp = completions.get((rid, sample[0])) if sample else None
    if comp is None or sample[1] >= len(comp.finished):
        return None
    return not comp.finished[sample[1]]


def preview_rows(pairs: list[PreferencePair], n: int = 5, k: int | None = None, method: str | None = None,
                 records: list[FeedbackRecord] = (), completions: list[Completion] = (),
                 requests: list[GenRequest] = ()) -> list[dict[str, Any]]:
    by_id = {r.id: r for r in records}
    comps = {(c.record_id, c.slot): c for c in completions}
    reqs = {(r.record_id, r.slot): r for r in requests}
    rows = []
    for p in pairs[:n]:
        rid = p.meta.get("record_id", "")
        rec = by_id.get(rid)
        chosen_sample, rejected_sample = _sample(p.meta, "chosen"), _sample(p.meta, "rejected")
        guided = guidance(reqs.get((rid, chosen_sample[0])), rec) if chosen_sample else None
        complaint = rec.feedback if rec is not None and rec.meta.get("kind") == "dsat" and rec.feedback else None
        rows.append({"pair": p.id, "iteration": p.meta.get("iteration", k), "method": method,
                     "prompt_tail": prompt_tail(p), "complaint": complaint, "instruction": guided,
                     "chosen": p.chosen, "chosen_chars": len(p.chosen), "chosen_cut": _cut(comps, rid, chosen_sample),
                     "rejected": p.rejected, "rejected_chars": len(p.rejected),
                     "rejected_cut": _cut(comps, rid, rejected_sample),
                     "reward_chosen": p.meta.get("score_chosen"), "reward_rejected": p.meta.get("score_rejected")})
    return rows


def _quote(text: str) -> str:
    """A block quote, so a reply's own Markdown (headings, fences) stays inside its row."""
    return "\n".join("> " + line if line else ">" for line in (text or "(empty)").splitlines()) or "> (empty)"


def _how(chars: int, cut: bool | None) -> str:
    end = {True: ", cut at the token limit", False: ", ended with EOS", None: ""}[cut]
    return f"{chars} chars{end}"


def render_markdown(rows: list[dict[str, Any]], k: int, total: int, method: str,
                    empty_skipped: int | None = None) -> str:
    out = [f"# Iteration {k}: {len(rows)} of {total} pairs ({method})", ""]
    if empty_skipped is not None:
        out += [f"{empty_skipped} policy sample{'s' if empty_skipped != 1 else ''} came back empty and "
                f"{'were' if empty_skipped != 1 else 'was'} skipped (no pair; the pairs stage's {EMPTY_SKIPS}).", ""]
    for r in rows:
        reward = ""
        if r["reward_chosen"] is not None:
            reward = f", reward {r['reward_chosen']:.3f} vs {r['reward_rejected']:.3f}"
        out += [f"## {r['pair']}", "", "**Prompt (last turn)**", "", _quote(r["prompt_tail"]), ""]
        if r["complaint"]:
            out += ["**The user's complaint about the rejected reply**", "", _quote(r["complaint"]), ""]
        if r["instruction"]:
            out += ["**Instruction the chosen was sampled with**", "", _quote(r["instruction"]), ""]
        out += [f"**Chosen** ({_how(r['chosen_chars'], r['chosen_cut'])}{reward})", "", _quote(r["chosen"]), "",
                f"**Rejected** ({_how(r['rejected_chars'], r['rejected_cut'])})", "", _quote(r["rejected"]), ""]
    return "\n".join(out)


def _read_if_there(path: Path, cls: type) -> list:
    return read_jsonl(path, cls) if path.is_file() else []


def write_preview(folder: Path, pairs: list[PreferencePair], k: int, method: str, run=None, n: int = 5,
                  records: list[FeedbackRecord] = (), stats: Mapping[str, Any] | None = None) -> Path:
    """Write iter_k/pairs_preview.md and, when a W&B run is open, log the same rows as a table.
    `records` (the ones the pairs were built on) give the complaint; `stats` (the pair builder's counts) the
    number of empty samples skipped; the folder's completions.jsonl and requests.jsonl the rest."""
    folder = Path(folder)
    rows = preview_rows(pairs, n, k, method, records, _read_if_there(folder / "completions.jsonl", Completion),
                        _read_if_there(folder / "requests.jsonl", GenRequest))
    empty = None if stats is None else int(stats.get(EMPTY_SKIPS, 0))
    path = folder / "pairs_preview.md"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(render_markdown(rows, k, len(pairs), method, empty), encoding="utf-8")
    tmp.replace(path)
    if run is not None:
        import wandb

        table = wandb.Table(columns=COLUMNS, data=[[r[c] for c in COLUMNS] for r in rows])
        run.log({WANDB_PAIRS_TABLE: table, WANDB_ITERATION: k})  # a table per iteration, on the iteration axis
    return path
