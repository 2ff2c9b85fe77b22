"""A look at the pairs an iteration built: a few of them as a Markdown file and a W&B table.

`iter_k/pairs_preview.md` and the table `pairs/preview` hold the same rows: the end of the prompt
(its last turn), the chosen and the rejected reply, their lengths and, where the method ranked the
pair with the reward model (IterDPO), both rewards. The rows are the first pairs of pairs.jsonl in
file order, so a rerun shows the same ones.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from drift_exp.records import PreferencePair

COLUMNS = ["pair", "prompt_tail", "chosen", "rejected", "chosen_chars", "rejected_chars", "reward_chosen",
           "reward_rejected"]


def prompt_tail(pair: PreferencePair, chars: int = 300) -> str:
    """The prompt's last turn, with its role, cut to its last `chars` characters."""
    if not pair.prompt:
        return ""
    last = pair.prompt[-1]
    text = last["content"]
    if len(text) > chars:
        text = "…" + text[-chars:]
    return f"{last['role']}: {text}"


def preview_rows(pairs: list[PreferencePair], n: int = 5) -> list[dict[str, Any]]:
    rows = []
    for p in pairs[:n]:
        rows.append({"pair": p.id, "prompt_tail": prompt_tail(p), "chosen": p.chosen, "rejected": p.rejected,
                     "chosen_chars": len(p.chosen), "rejected_chars": len(p.rejected),
                     "reward_chosen": p.meta.get("score_chosen"), "reward_rejected": p.meta.get("score_rejected")})
    return rows


def _quote(text: str) -> str:
    """A block quote, so a reply's own Markdown (headings, fences) stays inside its row."""
    return "\n".join("> " + line if line else ">" for line in (text or "(empty)").splitlines()) or "> (empty)"


def render_markdown(rows: list[dict[str, Any]], k: int, total: int, method: str) -> str:
    out = [f"# Iteration {k}: {len(rows)} of {total} pairs ({method})", ""]
    for r in rows:
        reward = ""
        if r["reward_chosen"] is not None:
            reward = f", reward {r['reward_chosen']:.3f} vs {r['reward_rejected']:.3f}"
        out += [f"## {r['pair']}", "", "**Prompt (last turn)**", "", _quote(r["prompt_tail"]), "",
                f"**Chosen** ({r['chosen_chars']} chars{reward})", "", _quote(r["chosen"]), "",
                f"**Rejected** ({r['rejected_chars']} chars)", "", _quote(r["rejected"]), ""]
    return "\n".join(out)


def write_preview(folder: Path, pairs: list[PreferencePair], k: int, method: str, run=None, n: int = 5) -> Path:
    """Write iter_k/pairs_preview.md and, when a W&B run is open, log the same rows as a table."""
    rows = preview_rows(pairs, n)
    path = Path(folder) / "pairs_preview.md"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(render_markdown(rows, k, len(pairs), method), encoding="utf-8")
    tmp.replace(path)
    if run is not None:
        import wandb

        table = wandb.Table(columns=COLUMNS, data=[[r[c] for c in COLUMNS] for r in rows])
        run.log({"pairs/preview": table})
    return path
