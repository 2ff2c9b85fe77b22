"""The import graph of drift_exp: no cycles, and each module imports only from its own layer or below.

Every import counts, at the top of a module or inside a function (a lazy import still ties the two
modules together; it only hides the cycle until the function runs). Imports under `if TYPE_CHECKING:`
never run and are left out. `python -m tests.test_imports` prints the layers and any cycle or violation.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest

PACKAGE = "drift_exp"
SRC = Path(__file__).resolve().parents[1] / PACKAGE

# Bottom to top. A module belongs to the layer of the longest name listed that is it or a package above it;
# "pkg.*" stands for pkg's submodules only, so a package's __init__ can sit lower than its submodules: the
# data package's __init__ and its JSON readers (records reads run files with them) are at the bottom, the
# evaluation package's __init__ re-exports the config schema that drift_exp.config imports.
LAYERS: list[tuple[str, list[str]]] = [
    ("base: errors, records and the JSON readers, names, folders", [
        "conf",  # the config tree's empty __init__ (Hydra imports it to find the YAML files)
        "errors", "records", "config_fields", "cachedir", "locks", "packaged", "names", "credentials", "locations",
        "devices", "run_dir_check",
        "data", "data.guard", "data.stream", "data.lines", "data.sources"]),
    ("config and models", [
        "config", "config_groups", "config_keys", "decoding", "sweeps", "evaluation", "evaluation.config", "models",
        "model_shapes", "trainer_extra"]),
    ("building blocks", [
        "data.*", "methods", "generation", "scoring", "evaluation.*", "training", "tracking", "hub", "preview",
        "provenance", "heldout"]),
    ("orchestration: run directory, stage jobs, preflight, analyses", [
        "stages", "launch", "worker", "runner", "plan", "analysis", "report", "dashboards",
        "evaluation.base"]),  # the Base row: a stage of the run directory, run through the launcher
    ("entry points", ["pipeline", "__main__", "multirun"]),
]
# What must never load the trainer or the pipeline, directly or through other modules (docs/DESIGN.md: generation,
# scoring and evaluation run without them). evaluation.base runs its stage through the launcher, which can train.
NO_TRAINING = ["generation", "scoring", "evaluation", "analysis", "data", "methods", "models", "records", "config"]
NO_TRAINING_EXCEPT = ["evaluation.base"]
FORBIDDEN = ["training", "pipeline"]


def module_files(src: Path = SRC) -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package (a package is its __init__)."""
    mods = {}
    for path in sorted(src.rglob("*.py")):
        parts = list(path.relative_to(src.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = path
    return mods


def _is_dynamic_import(node: ast.AST) -> bool:
    """A call of importlib.import_module or __import__."""
    if not isinstance(node, ast.Call):
        return False
    func = node.func
    return (isinstance(func, ast.Name) and func.id in ("import_module", "__import__")) or (
        isinstance(func, ast.Attribute) and func.attr == "import_module")


def _runtime_imports(tree: ast.Module):
    """Every import statement or import_module/__import__ call that can run: anywhere in the file except under
    `if TYPE_CHECKING:`."""
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            stack.extend(node.orelse)
            continue
        if isinstance(node, ast.Import | ast.ImportFrom) or _is_dynamic_import(node):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def _owner(name: str, mods: dict[str, Path]) -> str | None:
    """The module a dotted name lives in: the longest prefix of it that is a module of ours."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        if ".".join(parts[:end]) in mods:
            return ".".join(parts[:end])
    return None


def _ancestors(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:end]) for end in range(1, len(parts))]


def import_graph(mods: dict[str, Path] | None = None) -> dict[str, set[str]]:
    """Module -> the modules of ours that importing or running it executes.

    `from pkg import sub` is an edge to the submodule pkg.sub, `from pkg import name` to pkg itself.
    Importing a.b.c from outside package a.b also runs a.b's __init__, so that is an edge too; from inside
    a.b it is not (the package is already being initialised).
    """
    mods = module_files() if mods is None else mods
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for mod, path in mods.items():
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        for node in _runtime_imports(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Call):
                targets = _dynamic_targets(node, mod, package, mods, path)
            elif isinstance(node, ast.Import):
                targets = [_owner(alias.name, mods) for alias in node.names]
            else:
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(up + ([node.module] if node.module else []))
                targets = [_owner(f"{base}.{alias.name}" if f"{base}.{alias.name}" in mods else base, mods)
                           for alias in node.names]
            for target in filter(None, targets):
                inits = [a for a in _ancestors(target) if a in mods and a != PACKAGE
                         and a != mod and a not in _ancestors(mod)]
                graph[mod].update(t for t in (target, *inits) if t != mod)
    return graph


def _dynamic_targets(call: ast.Call, mod: str, package: str, mods: dict[str, Path], path: Path) -> list[str]:
    """The modules of ours an import_module call can import: its constant name, or for a name built as
    f"{__name__}.{kind}" (a registry) every module under that prefix. A name the graph cannot read is an error:
    the checks here would miss what it imports."""
    arg = call.args[0] if call.args else None
    parts = arg.values if isinstance(arg, ast.JoinedStr) else [arg]
    prefix, whole = "", True
    for part in parts:
        if isinstance(part, ast.Constant) and isinstance(part.value, str):
            prefix += part.value
        elif isinstance(part, ast.FormattedValue) and isinstance(part.value, ast.Name) \
                and part.value.id in ("__name__", "__package__"):
            prefix += mod if part.value.id == "__name__" else package
        else:
            whole = False
            break
    if whole and prefix:
        return [t for t in [_owner(prefix, mods)] if t]
    if prefix.startswith(PACKAGE + "."):
        return [m for m in mods if m.startswith(prefix)]
    if prefix and not prefix.startswith(PACKAGE):
        return []  # a third-party module
    raise ValueError(f"{path}:{call.lineno}: {ast.unparse(call)} imports a module whose name the import graph "
                     "cannot read; import it by name (or build the name as f'{__name__}.<x>')")


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Cycles (a -> b -> ... -> a): a shortest one through each module of each strongly connected group of
    modules (Tarjan's algorithm), each cycle once, so a report names every module caught in one."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.add(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(group)

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 10 * len(graph)))
    try:
        for v in sorted(graph):
            if v not in index:
                visit(v)
    finally:
        sys.setrecursionlimit(limit)
    cycles: dict[tuple[str, ...], list[str]] = {}
    for group in groups:
        for start in sorted(group):
            cycle = _cycle_through(start, group, graph)
            cycles.setdefault(tuple(sorted(cycle[:-1])), cycle)
    return list(cycles.values())


def _cycle_through(start: str, group: set[str], graph: dict[str, set[str]]) -> list[str]:
    """A shortest cycle from start back to it inside its strongly connected group."""
    path = _shortest_path(graph, start, lambda w: w == start, within=group)
    assert path, f"no cycle through {start}"  # a strongly connected group always has one
    return path


def _shortest_path(graph: dict[str, set[str]], start: str, is_goal, within: set[str] | None = None):
    """The shortest path start -> ... -> a module for which is_goal holds (breadth-first), or None."""
    paths, frontier = {start: [start]}, [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v] if within is None else graph[v] & within):
                if is_goal(w):
                    return paths[v] + [w]
                if w not in paths:
                    paths[w] = paths[v] + [w]
                    nxt.append(w)
        frontier = nxt
    return None


def layer_of(mod: str) -> int | None:
    """The index in LAYERS of a module, from the longest listed name matching it (None: not listed)."""
    best, best_len = None, -1
    for i, (_, names) in enumerate(LAYERS):
        for name in names:
            full = f"{PACKAGE}.{name.removesuffix('.*')}"
            if name.endswith(".*"):
                hit, length = mod.startswith(full + "."), len(full) + 1
            else:
                hit, length = mod == full or mod.startswith(full + "."), len(full)
            if hit and length > best_len:
                best, best_len = i, length
    return best


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    return [f"{m} (layer {layer_of(m)}) imports {t} (layer {layer_of(t)})"
            for m in sorted(graph) for t in sorted(graph[m])
            if layer_of(m) is not None and layer_of(t) is not None and layer_of(t) > layer_of(m)]


def _under(mod: str, names: list[str]) -> bool:
    return any(mod == f"{PACKAGE}.{n}" or mod.startswith(f"{PACKAGE}.{n}.") for n in names)


def training_imports(graph: dict[str, set[str]]) -> list[str]:
    """Each module of NO_TRAINING that reaches training or pipeline through the graph, with the path."""
    starts = sorted(m for m in graph if _under(m, NO_TRAINING) and not _under(m, NO_TRAINING_EXCEPT))
    paths = (_shortest_path(graph, m, lambda w: _under(w, FORBIDDEN)) for m in starts)
    return [" -> ".join(path) for path in paths if path]


def describe_layers(graph: dict[str, set[str]] | None = None) -> str:
    """The layers, bottom first, with the modules each holds (README and docs/DESIGN.md describe them)."""
    graph = import_graph() if graph is None else graph
    lines = []
    for i, (title, _) in enumerate(LAYERS):
        members = sorted(m.removeprefix(PACKAGE + ".") for m in graph if layer_of(m) == i)
        lines.append(f"{i} {title}: {', '.join(members)}")
    return "\n".join(lines)


def test_every_module_has_a_layer():
    graph = import_graph()
    missing = sorted(m for m in graph if m != PACKAGE and layer_of(m) is None)
    assert not missing, f"add these modules to LAYERS in tests/test_imports.py: {missing}"


def test_no_import_cycles():
    cycles = find_cycles(import_graph())
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_layers_import_only_downwards():
    bad = layer_violations(import_graph())
    assert not bad, "imports from a higher layer:\n" + "\n".join(bad) + "\nlayers:\n" + describe_layers()


def test_generation_scoring_evaluation_never_import_training():
    bad = training_imports(import_graph())
    assert not bad, "drift_exp.training / drift_exp.pipeline loaded from below them:\n" + "\n".join(bad)


def test_graph_sees_lazy_relative_submodule_and_registry_imports(tmp_path):
    """The checks above can fail: a lazy import closing a cycle, `from pkg import sub`, a relative import, a
    package __init__ run by importing its submodule and a registry's import_module(f"{__name__}.{kind}") are all
    edges; a type-only import is not; an import_module whose name cannot be read is refused."""
    pkg = tmp_path / PACKAGE
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "low.py").write_text("def f():\n    from drift_exp.sub import deep\n")
    (pkg / "sub" / "__init__.py").write_text("from importlib import import_module\n\n"
                                             "def build(kind):\n    return import_module(f'{__name__}.{kind}')\n")
    (pkg / "sub" / "deep.py").write_text("from ..low import f\nfrom drift_exp import errors\n")
    (pkg / "errors.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import drift_exp.low\n")
    low, sub, deep, errors = (f"{PACKAGE}.{m}" for m in ("low", "sub", "sub.deep", "errors"))
    graph = import_graph(module_files(pkg))
    assert graph == {PACKAGE: set(), low: {sub, deep}, sub: {deep}, deep: {low, errors}, errors: set()}
    assert find_cycles(graph) == [[low, deep, low], [sub, deep, low, sub]]
    assert layer_violations({errors: {f"{PACKAGE}.config"}, f"{PACKAGE}.config": set()})
    hf, plan, dpo = (f"{PACKAGE}.{m}" for m in ("generation.hf", "plan", "training.dpo"))
    assert training_imports({hf: {plan}, plan: {dpo}, dpo: set()}) == [f"{hf} -> {plan} -> {dpo}"]
    (pkg / "low.py").write_text("import importlib\n\ndef f(name):\n    return importlib.import_module(name)\n")
    with pytest.raises(ValueError, match="low.py:4: .*cannot read"):
        import_graph(module_files(pkg))


def test_test_modules_share_helpers_only_through_tests_helpers():
    """A test module imports shared code from tests/helpers.py (or conftest), never from another test module."""
    tests = Path(__file__).resolve().parent
    pattern = re.compile(r"\s*(from\s+(\.|tests\.)test_\w+\s+import|import\s+tests\.test_)")
    offenders = [f"{p.name}:{n}" for p in sorted(tests.glob("*.py"))
                 for n, line in enumerate(p.read_text().splitlines(), 1) if pattern.match(line)]
    assert offenders == []


if __name__ == "__main__":
    g = import_graph()
    print(describe_layers(g))
    print(f"\n{len(g)} modules, {sum(map(len, g.values()))} import edges")
    for cycle in find_cycles(g):
        print("cycle:", " -> ".join(cycle))
    for line in layer_violations(g) + training_imports(g):
        print("violation:", line)
