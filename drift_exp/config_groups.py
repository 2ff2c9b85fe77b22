"""The Hydra config groups made from files of the checkout: `sweep` (sweeps/*.yaml) and `cell` (one option per
pair of conf/method/*.yaml and conf/setting/*.yaml). `drift_exp.config.register_configs` registers them beside
the schema; `drift_exp.sweeps` expands and lists a sweep's jobs (it needs the config, so it sits above it).
"""

from __future__ import annotations

from pathlib import Path

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]
SWEEPS_DIR = ROOT / "sweeps"
CONF_DIR = ROOT / "conf"


def sweep_files() -> dict[str, Path]:
    """Sweep name -> YAML file, sorted by name."""
    return {p.stem: p for p in sorted(SWEEPS_DIR.glob("*.yaml"))}


def register_sweeps() -> None:
    """Store every sweeps/*.yaml as `sweep/<stem>` and every method x setting pair as `cell/<method>-<setting>`."""
    cs = ConfigStore.instance()
    for name, path in sweep_files().items():
        cs.store(group="sweep", name=name, node=OmegaConf.load(path), package="_global_")
    options = {g: sorted(p.stem for p in (CONF_DIR / g).glob("*.yaml")) for g in ("method", "setting")}
    for method in options["method"]:
        for setting in options["setting"]:
            node = OmegaConf.create({"defaults": [{"override /method": method}, {"override /setting": setting}]})
            cs.store(group="cell", name=f"{method}-{setting}", node=node, package="_global_")
