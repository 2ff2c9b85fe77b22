"""What a run will fetch from the Hugging Face hub, checked before it starts when the hub is out of reach.

Offline (HF_HUB_OFFLINE=1, or huggingface.co not reachable) every hub id the run names must already
be in the local cache; otherwise the run would die hours in (iteration 0's evaluation loading the
reward model, say) with a bare hub traceback. The error lists each missing item with the override
that points it at a local copy.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from drift_exp.config import Config, scorer_path
from drift_exp.errors import ConfigError
from drift_exp.locations import is_hub_id  # noqa: F401  (one rule for hub ids; kept importable from here)
from drift_exp.methods import method_needs


@dataclass
class HubNeed:
    key: str  # the config key naming it
    repo_id: str
    repo_type: str  # model | dataset
    what: str  # what the run uses it for
    fix: str  # the override that avoids the hub


def scorer_uses(cfg: Config) -> list[str]:
    """What loads the reward model (scorer.path) in this run: the proxy evaluation, the method's ranking (as the
    method declares for the configured data); empty when nothing does."""
    uses = ["the proxy evaluation"] if "proxy" in cfg.eval.benchmarks else []
    if method_needs(cfg.method, cfg.data.format).reward_model:
        uses.append(f"{cfg.method.name}'s ranking")
    return uses


def needed(cfg: Config) -> list[HubNeed]:
    """Every hub repository this config makes the run load."""
    out = []
    if is_hub_id(cfg.model.path):
        out.append(HubNeed("model.path", cfg.model.path, "model", "the policy", "model.path=/path/to/local/model"))
    uses = scorer_uses(cfg)
    ranked = method_needs(cfg.method, cfg.data.format).reward_model
    scorer = scorer_path(cfg)
    if uses and is_hub_id(scorer):
        out.append(HubNeed("scorer.path", scorer, "model", f"the reward model of {' and '.join(uses)}",
                           f"scorer.path=/path/to/a/local/copy/of/{scorer.rsplit('/', 1)[-1]}"
                           + (" (or eval.benchmarks=[] to skip the evaluation)" if not ranked else "")))
    if is_hub_id(cfg.data.source):
        out.append(HubNeed("data.source", cfg.data.source, "dataset", "the training data",
                           "data.source=/path/to/local/file"))
    for bench, key, value in (("alpaca_eval", "eval.alpaca_eval_source", cfg.eval.alpaca_eval_source),
                              ("wildbench", "eval.wildbench_source", cfg.eval.wildbench_source)):
        if bench in cfg.eval.benchmarks and is_hub_id(value):
            out.append(HubNeed(key, value, "dataset", f"the {bench} prompts",
                               f"{key}=/path/to/local/file (or {key}=sample, or drop {bench} from eval.benchmarks)"))
    return out


def _hub_cache() -> Path:
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def is_cached(need: HubNeed) -> bool:
    """A snapshot of the repository is in the hub cache (or, for data sets, in the datasets cache)."""
    snapshots = _hub_cache() / f"{need.repo_type}s--{need.repo_id.replace('/', '--')}" / "snapshots"
    if snapshots.is_dir() and any(snapshots.iterdir()):
        return True
    if need.repo_type == "dataset":
        datasets_cache = Path(os.environ.get("HF_DATASETS_CACHE", Path(os.environ.get(
            "HF_HOME", Path.home() / ".cache" / "huggingface")) / "datasets"))
        return (datasets_cache / need.repo_id.replace("/", "___")).is_dir()
    return False


def offline_reason() -> str | None:
    """Why the hub cannot be reached (None: it can)."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return "HF_HUB_OFFLINE is set"
    host = urlsplit(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=5).close()
    except OSError as err:
        return f"{host} is not reachable ({err})"
    return None


def check_hub(cfg: Config) -> None:
    """Offline, every hub item the run needs must be cached; otherwise a ConfigError listing each with its fix."""
    missing = [n for n in needed(cfg) if not is_cached(n)]
    if not missing:
        return
    why = offline_reason()
    if why is None:
        return
    lines = [f"  {n.key}={n.repo_id} ({n.what}): pass {n.fix}" for n in missing]
    raise ConfigError(f"the hub is out of reach ({why}), and this run needs from it what the local cache lacks:\n"
                      + "\n".join(lines))
