"""data.holdout: the authors' held-out split, evaluated at the end of every training stage.

The authors' gen-drift.py writes the pairs of the first 100 DSAT records (in file order) to a test split and
trains on the rest; their training YAMLs evaluate that split every epoch. Here:

- Held-out records: the first data.holdout of the records the method iterates on (DSAT for DRIFT and IterDPO,
  SAT for SPIN, prompts on UltraFeedback), in file order, among those the setting keeps (controlled: after the
  seeded sample, which keeps the file order). Every method holds out the same number of its own records, so the
  methods stay comparable.
- They are still sampled every iteration and their pairs built (iter_k/pairs.jsonl holds them, as before), but
  the training stage splits them off: they go to TRL's evaluation (eval_dataset + trainer.evaluate() after
  training), not to training. With SPIN's accumulation, held-out pairs of earlier iterations stay out too.
- The warm start (iteration 0) trains on DSAT->SAT seed pairs, which are not the records above: a seed pair is
  held out when its context (the prompt messages) is a held-out record's context. For DRIFT and IterDPO that is
  exactly the seed pair of a held-out DSAT reply; for SPIN (held-out SAT records) it is the seed pairs that share
  a held-out record's context, usually none.
- stats["heldout"] of the training stage (train_stats.json, metrics.json, W&B heldout/): TRL's evaluation loss,
  reward accuracy (rewards/accuracies), mean margin, mean chosen and rejected rewards, and the number of pairs;
  stats["pairs"] / stats["heldout_pairs"] count the pairs trained on and held out. data/stats.json's "used"
  counts the held-out records.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from drift_exp.config import Config
from drift_exp.errors import UserError
from drift_exp.names import DATA_FOLDER
from drift_exp.records import FeedbackRecord, PreferencePair, read_jsonl


def heldout_records(cfg: Config, records: list[FeedbackRecord]) -> list[FeedbackRecord]:
    """The data.holdout first records the method iterates on (file order, after the setting's selection)."""
    from drift_exp.data.load import select_records
    from drift_exp.methods import build_method

    if cfg.data.holdout <= 0:
        return []
    kind = build_method(cfg.method).record_kind(records)
    return select_records(records, kind, cfg.setting, cfg.seed)[:cfg.data.holdout]


def _context(messages: list[dict[str, Any]]) -> str:
    return json.dumps(messages, sort_keys=True, ensure_ascii=False)


def split_pairs(pairs: list[PreferencePair], held: list[FeedbackRecord],
                warm_start: bool) -> tuple[list[PreferencePair], list[PreferencePair]]:
    """(pairs to train on, held-out pairs): a pair is held out when it comes from a held-out record (its
    meta record_id), or, for the warm start's seed pairs, when its context is a held-out record's."""
    if not held:
        return list(pairs), []
    ids = {r.id for r in held}
    contexts = {_context(r.prompt) for r in held}

    def is_held(p: PreferencePair) -> bool:
        if warm_start:
            return _context(p.prompt) in contexts
        return p.meta.get("record_id", p.id) in ids

    return [p for p in pairs if not is_held(p)], [p for p in pairs if is_held(p)]


def split_for_training(cfg: Config, run_dir: Path, k: int,
                       pairs: list[PreferencePair]) -> tuple[list[PreferencePair], list[PreferencePair]]:
    """The training stage of iteration k: its pairs split into (train, held out) by data.holdout."""
    if cfg.data.holdout <= 0:
        return list(pairs), []
    records = read_jsonl(Path(run_dir) / DATA_FOLDER / "records.jsonl", FeedbackRecord)
    train, held = split_pairs(pairs, heldout_records(cfg, records), warm_start=k == 0)
    if not train:
        raise UserError(f"iteration {k}: all {len(pairs)} pairs come from held-out records (data.holdout="
                        f"{cfg.data.holdout}); lower data.holdout so that some records are left to train on")
    return train, held


def heldout_metrics(trainer: Any, given: int) -> dict[str, Any] | None:
    """TRL's evaluation of the trainer's eval_dataset (the held-out pairs) after training; None without any."""
    if not given:
        return None
    metrics = trainer.evaluate()
    return {"loss": metrics.get("eval_loss"), "reward_accuracy": metrics.get("eval_rewards/accuracies"),
            "margin_mean": metrics.get("eval_rewards/margins"), "chosen_reward": metrics.get("eval_rewards/chosen"),
            "rejected_reward": metrics.get("eval_rewards/rejected"), "pairs": len(trainer.eval_dataset)}


def used_counts(cfg: Config, records: list[FeedbackRecord]) -> dict[str, int]:
    """For data/stats.json "used": how many of the records the method iterates on are held out / trained on."""
    held = len(heldout_records(cfg, records))
    return {"heldout": held, "holdout": cfg.data.holdout}
