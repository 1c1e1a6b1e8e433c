"""darkcfg's floors: every import (module level, inside functions, or for type checking
only) goes to the same floor or a lower one, and no modules import each other in a cycle.

    base       errors, fileio, memory, cfg (syntax), options, netcfg, activations (names),
               geometry (boxes)
    kernels    darkcfg/kernels: Numba only
    layers     darkcfg/layers: one file per section, helpers in layers/_*.py
    model      graph, weights, schedule, sgd, network, summary, docs
    data       darkcfg/data
    detection  darkcfg/detection, predict, embed, distributed (Dask)
    export     darkcfg/export: ONNX (imports onnx only when used)
    train      darkcfg/train
    cli        cli, __main__, the package's __init__

A new module gets a floor here; the README's Development section says the same in words.
"""
from __future__ import annotations

import ast
from pathlib import Path

from .conftest import ROOT

FLOORS = [
    ("base", ["errors", "fileio", "memory", "cfg", "options", "netcfg", "activations",
              "geometry"]),
    ("kernels", ["kernels"]),
    ("layers", ["layers"]),
    ("model", ["graph", "weights", "schedule", "sgd", "network", "summary", "docs"]),
    ("data", ["data"]),
    ("detection", ["detection", "predict", "embed", "distributed"]),
    ("export", ["export"]),
    ("train", ["train"]),
    ("cli", ["cli", "__main__", "__init__"]),
]
PACKAGE = ROOT / "darkcfg"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def floor_of(module: str) -> int:
    parts = module.split(".")
    head = parts[1] if len(parts) > 1 else "__init__"
    for level, (_, names) in enumerate(FLOORS):
        if head in names:
            return level
    raise AssertionError(f"{module} has no floor in tests/test_architecture.py")


def imports_of(module: str) -> set[str]:
    """darkcfg modules that `module` imports anywhere in its body."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                stem = ".".join(base + ([node.module] if node.module else []))
            else:
                stem = node.module or ""
            # `from . import config` names a module; `from .x import y` names x
            targets = [f"{stem}.{a.name}" if f"{stem}.{a.name}" in MODULES else stem
                       for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in MODULES:
                t = t.rpartition(".")[0]
            if t.startswith("darkcfg") and t != module:
                found.add(t)
    return found


GRAPH = {m: imports_of(m) for m in MODULES}


def test_every_module_has_a_floor():
    for m in MODULES:
        floor_of(m)


def test_imports_go_downhill():
    climbs = [f"{m} ({FLOORS[floor_of(m)][0]}) imports {t} ({FLOORS[floor_of(t)][0]})"
              for m, targets in sorted(GRAPH.items()) for t in sorted(targets)
              if floor_of(t) > floor_of(m)]
    assert not climbs, "imports that climb a floor:\n" + "\n".join(climbs)


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycle():
    # darkcfg/__init__.py names the public API (lazily): it sits on the top floor
    graph = {m: ts if m != "darkcfg" else set() for m, ts in GRAPH.items()}
    found = cycles(graph)
    assert not found, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in found)


def test_the_cycle_finder_finds_cycles():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


# [Gaussian_yolo] is a [yolo] with 9 values per anchor: it subclasses Yolo (its docstring
# says so). Every other section file builds on layers/base.py and layers/_*.py only.
SIBLING_EXCEPTIONS = {("darkcfg.layers.gaussian_yolo", "darkcfg.layers.yolo")}


def test_section_files_import_no_sibling_section():
    sections = {m for m in MODULES if m.startswith("darkcfg.layers.")
                and not m.rpartition(".")[2].startswith("_") and m != "darkcfg.layers.base"}
    found = {(m, t) for m in sections for t in GRAPH[m] if t in sections}
    assert found == SIBLING_EXCEPTIONS
