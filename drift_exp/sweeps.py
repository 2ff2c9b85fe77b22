"""The paper's sweeps (`drift_exp/conf/sweep/*.yaml`) as the Hydra config group `sweep`, plus the `cell` group.

`python -m drift_exp -m +sweep=table3` composes conf/sweep/table3.yaml into the root config (package
`_global_`): its defaults list pins data, generation and launcher, its body sets `iterations`,
`seed` and `run.sweep_name`, and `hydra.sweeper.params` lists what the multirun sweeps over.

A table's rows are not a Cartesian product (Table 3 has SPIN only in the controlled setting), so the
sweeps sweep over cells: `+cell=<method>-<setting>` (e.g. `+cell=spin-controlled`) selects
`method=<method>` and `setting=<setting>` through `override` lines, one option per pair of
conf/method/*.yaml and conf/setting/*.yaml. A command-line `model=`, `data=`, `method=` or `setting=`
still wins: Hydra applies command-line overrides after every defaults list, and its BasicSweeper
replaces a swept key of `hydra.sweeper.params` by the same key given on the command line.

The config tree, `sweep/` included, is package data (`drift_exp/conf/`), so the groups resolve from any working
directory and from an installed wheel; `drift_exp.config_groups` registers the `cell` options from it.
`python -m drift_exp.sweeps [NAME [OVERRIDES...]]` lists the sweeps, or one sweep's jobs, without running anything.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from omegaconf import DictConfig

from drift_exp.config_groups import CONF_DIR, SWEEPS_DIR, register_sweeps, sweep_files

__all__ = ["CONF_DIR", "SWEEPS_DIR", "compose_jobs", "register_sweeps", "sweep_files", "sweep_jobs"]


def _loader(name: str, overrides: Sequence[str]):
    """Hydra's config loader over conf/ and the master config of `-m +sweep=<name> OVERRIDES` (MULTIRUN mode)."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.types import RunMode

    from drift_exp.config import register_configs

    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        master = loader.load_configuration("config", [f"+sweep={name}", *overrides], run_mode=RunMode.MULTIRUN)
    return loader, master


def _expand(master: DictConfig, name: str, overrides: Sequence[str]) -> list[list[str]]:
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    task = [f"+sweep={name}", *(o for o in overrides if not o.startswith("hydra."))]
    params = [f"{k}={v}" for k, v in (master.hydra.sweeper.params or {}).items()]
    parsed = OverridesParser.create().parse_overrides([*params, *task])
    return BasicSweeper.split_arguments(parsed, max_batch_size=None)[0]


def sweep_jobs(name: str, overrides: Sequence[str] = ()) -> list[list[str]]:
    """The jobs `python -m drift_exp -m +sweep=<name> OVERRIDES` launches: one override list per job.

    Mirrors Hydra's BasicSweeper: `hydra.sweeper.params` (after `hydra.sweeper.params.*` overrides)
    followed by the task overrides, a later key replacing an earlier one, then the Cartesian product.
    """
    return _expand(_loader(name, overrides)[1], name, overrides)


def compose_jobs(name: str, overrides: Sequence[str] = ()) -> list[tuple[list[str], DictConfig]]:
    """Each job of `sweep_jobs` with its config (`hydra` node included), composed as the sweeper composes it."""
    loader, master = _loader(name, overrides)
    return [(job, loader.load_sweep_config(master, job)) for job in _expand(master, name, overrides)]


def main(argv: Sequence[str]) -> None:
    if not argv:
        for name, path in sweep_files().items():
            print(f"{name:10s} {path.read_text().splitlines()[1].lstrip('# ')}")
        return
    for job, cfg in compose_jobs(argv[0], argv[1:]):  # the subdir: drift_exp.names.experiment_name, via conf/
        print(f"{cfg.hydra.sweep.dir}/{cfg.hydra.sweep.subdir}: {' '.join(job)}")


if __name__ == "__main__":
    main(sys.argv[1:])
