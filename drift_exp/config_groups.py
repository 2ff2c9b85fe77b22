"""The config tree shipped inside the package, and the Hydra config group made from its files.

`drift_exp/conf/` is the tree `@hydra.main` composes from (it is package data, so a wheel carries it and
`drift-exp` runs from any directory). Its `sweep/` folder is the config group `sweep` (each file starts with
`# @package _global_`), which Hydra reads from the tree like any other group. The `cell` group has no files: one
option per pair of conf/method/*.yaml and conf/setting/*.yaml, stored in Hydra's ConfigStore.
The `rpo` group (RPO_OPTIONS below) is stored the same way.
`drift_exp.config.register_configs` registers them beside the schema; `drift_exp.sweeps` expands and lists a
sweep's jobs (it needs the config, so it sits above it).
"""

from __future__ import annotations

from pathlib import Path

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

CONF_DIR = Path(__file__).resolve().parent / "conf"
SWEEPS_DIR = CONF_DIR / "sweep"


def sweep_files() -> dict[str, Path]:
    """Sweep name -> YAML file, sorted by name."""
    return {p.stem: p for p in sorted(SWEEPS_DIR.glob("*.yaml"))}


def register_sweeps() -> None:
    """Store every method x setting pair as `cell/<method>-<setting>`. The `sweep` group needs no registration:
    Hydra finds conf/sweep/*.yaml in the config tree."""
    cs = ConfigStore.instance()
    options = {g: sorted(p.stem for p in (CONF_DIR / g).glob("*.yaml")) for g in ("method", "setting")}
    for method in options["method"]:
        for setting in options["setting"]:
            node = OmegaConf.create({"defaults": [{"override /method": method}, {"override /setting": setting}]})
            cs.store(group="cell", name=f"{method}-{setting}", node=node, package="_global_")
    register_rpo(cs)


# `+rpo=dpo|rpo`: the two readings of the NLL weight (drift_exp/conf/sweep/README.md, "The NLL weight"), a dimension any
# run or sweep can add: `python -m drift_exp -m +sweep=table3 +rpo=dpo,rpo`. dpo is Eq. 2 (plain DPO); its
# runs get "+dpo" after the experiment name (names.ABLATION_GROUPS: a variant like an ablating override), so they
# never share a run directory or W&B group with the default runs. rpo is the authors' YAMLs (0.001, the schema's
# default): the default runs and directories. The report
# labels the rows of other values (drift_exp/report/rpo.py).
RPO_OPTIONS = {
    "dpo": {"trainer": {"rpo_alpha": 0.0}},
    "rpo": {"trainer": {"rpo_alpha": 0.001}},
}


def register_rpo(cs: ConfigStore) -> None:
    for name, values in RPO_OPTIONS.items():
        cs.store(group="rpo", name=name, node=OmegaConf.create(values), package="_global_")
