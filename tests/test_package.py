"""The package as a user installs it: the config tree and the sweeps ship inside it, and the `drift-exp` console
script runs from any directory (help, composed config, the plan of a sweep, Hydra's shell completion).

The e2e test builds a wheel from this checkout, installs it with --no-deps into a fresh virtual environment that
borrows the test environment's installed packages, and runs it from a folder outside the repository.
"""

import os
import shutil
import site
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from .conftest import CONF, ROOT

PKG = ROOT / "drift_exp"


def package_data_globs() -> list[str]:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return pyproject["tool"]["setuptools"]["package-data"]["drift_exp"]


def packaged(package: Path, globs: list[str]) -> set[str]:
    """The files under `package` the package-data globs take (glob rules: `*` stays within one folder)."""
    return {p.relative_to(package).as_posix() for g in globs for p in package.glob(g) if p.is_file()}


def conf_files(package: Path) -> set[str]:
    return {p.relative_to(package).as_posix() for p in (package / "conf").rglob("*")
            if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".py"}


def test_package_data_covers_the_config_tree():
    """Every file of drift_exp/conf/ (sweeps and their README included) is package data, so a wheel carries it;
    a new nested folder or file kind fails here rather than in a user's install."""
    files = conf_files(PKG)
    assert {"conf/config.yaml", "conf/sweep/table3.yaml", "conf/sweep/README.md"} <= files
    assert files - packaged(PKG, package_data_globs()) == set()
    assert (CONF / "__init__.py").is_file()  # Hydra finds an installed program's tree as the module drift_exp.conf


def test_package_data_check_can_fail(tmp_path):
    for rel in ("conf/config.yaml", "conf/launcher/extra/x.yaml", "conf/sweep/notes.txt"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x")
    missing = conf_files(tmp_path) - packaged(tmp_path, package_data_globs())
    assert missing == {"conf/launcher/extra/x.yaml", "conf/sweep/notes.txt"}


def _run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: int = 300) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(cmd)}: {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.mark.e2e
def test_built_wheel_runs_from_another_directory(tmp_path):
    # Build from a copy of the sources, so the checkout gets no build/ folder and no stale file reaches the wheel.
    src = tmp_path / "src"
    shutil.copytree(PKG, src / "drift_exp", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    dist = tmp_path / "dist"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist), str(src)],
         tmp_path, dict(os.environ))
    (wheel,) = dist.glob("drift_exp-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"drift_exp/conf/__init__.py", "drift_exp/conf/config.yaml", "drift_exp/conf/sweep/table3.yaml",
            "drift_exp/conf/sweep/README.md", "drift_exp/data/sample/sat_dsat_annotation.json"} <= names
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "drift-exp = drift_exp.__main__:cli" in zipfile.ZipFile(wheel).read(entry_points).decode()

    # A fresh environment whose own site-packages holds only the wheel; the dependencies are this environment's,
    # reached through a .pth line (`venv --system-site-packages` would give the base interpreter's, not these).
    # No PYTHONPATH or VIRTUAL_ENV of the test run reaches that environment: it must find the wheel's copy alone.
    venv = tmp_path / "venv"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], tmp_path, env)
    py = venv / "bin" / "python"
    venv_site = Path(_run([str(py), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], tmp_path,
                          env).stdout.strip())
    _run([sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "--no-index", "--force-reinstall",
          "-q", str(wheel)], tmp_path, env)
    (venv_site / "_test_env.pth").write_text("\n".join(site.getsitepackages()) + "\n")

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = _run([str(py), "-c", "import drift_exp; print(drift_exp.__file__)"], elsewhere, env).stdout
    assert where.startswith(str(venv_site)), where  # the wheel's copy, not this checkout

    # What the installed program prints is what the checkout prints.
    in_repo = dict(os.environ, PYTHONPATH=str(ROOT))
    for args in (["--help"], ["--cfg", "job"], ["--cfg", "job", "+sweep=table3", "+cell=spin-controlled"]):
        expected = _run([sys.executable, "-m", "drift_exp", *args], ROOT, in_repo).stdout
        assert _run(["drift-exp", *args], elsewhere, env).stdout == expected, args
    help_text = _run(["drift-exp", "--help"], elsewhere, env).stdout
    assert "sweep: figure2, table3, table4, table6, table7" in help_text
    assert "cell: drift-controlled, drift-full" in help_text
    assert _run([str(py), "-m", "drift_exp", "--help"], elsewhere, env).stdout == help_text

    plan = subprocess.run([str(py), "-m", "drift_exp.plan", "+sweep=table3", "launcher.num_processes=8",
                           "launcher.gpu_memory_gb=80"], cwd=elsewhere, env=env, capture_output=True, text=True,
                          timeout=600)
    rows = [line for line in plan.stdout.splitlines() if line.startswith("wildfeedback-")]
    assert len(rows) == 10, plan.stdout + plan.stderr[-3000:]  # every job of the sweep planned
    if plan.returncode != 0:  # the one thing this machine may lack: disk for the 14B checkpoints, as a run would
        problems = plan.stdout.split("problem(s):", 1)[1].strip().splitlines()
        assert problems and all("GB free" in p for p in problems), plan.stdout
    else:
        assert "all 10 job(s) pass." in plan.stdout, plan.stdout

    # Hydra's bash completion: the script `-sc install=bash` prints, evaluated, completes groups and options by
    # calling the program back with COMP_LINE set.
    script = (
        'eval "$(drift-exp -sc install=bash)"\n'
        'complete -p drift-exp\n'
        'for line in "drift-exp method=dr" "drift-exp +sweep=t"; do\n'
        '  COMP_LINE="$line"; COMP_POINT=${#COMP_LINE}; read -ra COMP_WORDS <<< "$line"; COMP_CWORD=1\n'
        '  hydra_bash_completion; echo "$line -> ${COMPREPLY[*]}"\n'
        'done\n')
    out = _run(["bash", "-c", script], elsewhere, env).stdout
    assert "-F hydra_bash_completion drift-exp" in out
    assert "drift-exp method=dr -> method=drift method=drift_unguided" in out
    assert "drift-exp +sweep=t -> +sweep=table3 +sweep=table4 +sweep=table6 +sweep=table7" in out
    assert not (elsewhere / "outputs").exists()  # nothing ran
