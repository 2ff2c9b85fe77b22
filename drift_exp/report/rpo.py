"""Which reading of the NLL weight each row trained with: trainer.rpo_alpha from the run's config.yaml.

The paper's Eq. 2 is plain DPO (rpo_alpha 0); the authors' YAMLs add 0.001 x NLL on the chosen reply (the
schema's default). `+rpo=dpo,rpo` runs both (drift_exp/config_groups.py). Every record gets
metrics['rpo_alpha'] (the results.csv column `rpo_alpha`); the method label of a trained row whose value is
not the default gets a suffix, "+dpo" for 0 and "+rpo<alpha>" for any other, so the two readings of one
cell are two rows. The paper's numbers sit beside both (paper_key drops the suffix): the paper does not
say which reading its headline rows used.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from drift_exp.report.collect import Record

KEY = "rpo_alpha"  # where a record's value goes in its metrics


def default_alpha() -> float:
    from drift_exp.config import TrainerConfig

    return TrainerConfig().rpo_alpha


def suffix(alpha: Any) -> str:
    """'' for the default (or unknown) rpo_alpha, '+dpo' for 0, '+rpo<alpha>' otherwise."""
    if not isinstance(alpha, int | float) or isinstance(alpha, bool) or alpha == default_alpha():
        return ""
    return "+dpo" if alpha == 0 else f"+rpo{alpha:g}"


def unlabelled(method: str) -> str:
    """The method label without the suffix `suffix` adds."""
    head, sep, tail = method.rpartition("+")
    return head if sep and (tail == "dpo" or tail.startswith("rpo")) else method


def run_alpha(source: str) -> Any:
    path = Path(source) / "config.yaml"
    if not path.is_file():
        return None
    return OmegaConf.select(OmegaConf.load(path), "trainer.rpo_alpha")


def label_rpo(records: list[Record]) -> None:
    """Record each record's rpo_alpha and suffix the method label of trained rows of a non-default value."""
    cache: dict[str, Any] = {}
    for r in records:
        if r.source not in cache:
            cache[r.source] = run_alpha(r.source)
        alpha = cache[r.source]
        if alpha is None:
            continue
        r.metrics[KEY] = alpha
        if r.method != "base":
            r.method += suffix(alpha)


def rpo_markdown(records: list[Record]) -> str:
    values = sorted({r.metrics[KEY] for r in records if r.method != "base" and KEY in r.metrics})
    if not values:
        return ""
    labelled = [v for v in values if suffix(v)]
    text = (f"Trained with trainer.rpo_alpha {', '.join(f'{v:g}' for v in values)} (0: plain DPO, the paper's Eq. 2; "
            f"{default_alpha():g}: the authors' YAMLs, unlabelled).")
    if labelled:
        text += (" Rows of other values carry it in their method: "
                 + ", ".join(f"+{'dpo' if v == 0 else f'rpo{v:g}'} = {v:g}" for v in labelled) + ".")
    return text + "\n"
