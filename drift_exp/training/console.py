"""The console during a DPO stage: progress bars plus one concise line per logging step.

transformers' ProgressCallback writes every logged key at every log (with the §5 diagnostics, 25
``signal/*`` keys), which buries the loss. ``ConciseProgress`` keeps its progress bars and writes only
step, epoch, loss, reward margin, reward accuracy and learning rate; every key still reaches W&B (TRL's
WandbCallback) and state.log_history (metrics.json), which do not go through this callback.
"""

from __future__ import annotations

from typing import Any

from transformers import PrinterCallback, ProgressCallback


def _num(logs: dict[str, Any], key: str, fmt: str) -> str:
    value = logs.get(key)
    return format(value, fmt) if isinstance(value, (int, float)) else "-"


def concise_line(logs: dict[str, Any], step: int, max_steps: int) -> str | None:
    """One line for a logging step (training or evaluation), a short one for the end of training, else None."""
    for prefix, label in (("", "step"), ("eval_", "eval at step")):
        if f"{prefix}loss" in logs:
            epoch = _num(logs, "epoch", ".2f")
            return (f"{label} {step}/{max_steps} epoch {epoch} | loss {_num(logs, prefix + 'loss', '.4f')} | "
                    f"margin {_num(logs, prefix + 'rewards/margins', '.4f')} | "
                    f"acc {_num(logs, prefix + 'rewards/accuracies', '.2f')} | lr {_num(logs, 'learning_rate', '.2e')}")
    if "train_runtime" in logs:
        return (f"trained {step} steps in {_num(logs, 'train_runtime', '.1f')} s, mean loss "
                f"{_num(logs, 'train_loss', '.4f')}")
    return None


class ConciseProgress(ProgressCallback):
    """ProgressCallback's bars (main process only, as there) with `concise_line` instead of the whole logs."""

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kw: Any) -> None:
        if state.is_world_process_zero and self.training_bar is not None and logs:
            line = concise_line(logs, state.global_step, state.max_steps)
            if line is not None:
                self.training_bar.write(line)


def use_concise_console(trainer: Any) -> None:
    """Replace the trainer's printing callbacks (ProgressCallback, or PrinterCallback with disable_tqdm)."""
    printers = [cb for cb in trainer.callback_handler.callbacks if isinstance(cb, (PrinterCallback, ProgressCallback))
                or type(cb).__name__ == "NotebookProgressCallback"]
    for cb in printers:
        trainer.remove_callback(cb)
    trainer.add_callback(ConciseProgress())
