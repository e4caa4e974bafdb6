"""The import graph of pixlab, read statically: no cycle between modules, no Jupyter package in the core.

Every ``import`` statement counts, at module level or inside a function: a function-level import
that closes a cycle still couples the two modules (each needs the other to work) and only moves
the failure from import time to call time.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "pixlab"

# Jupyter-side packages: only the widgets live with them.
JUPYTER = ("ipywidgets", "ipycanvas", "bokeh", "jupyter_bokeh", "IPython", "ipyannotations")
# Modules allowed to import them: the widgets package (the notebook views).
JUPYTER_SIDE = ("pixlab.widgets",)


def module_name(path: Path) -> str:
    """Dotted name of a file under ``ROOT`` (``pixlab/a/__init__.py`` -> ``pixlab.a``)."""
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def imports_of(name: str, path: Path) -> list[tuple[str, int]]:
    """Absolute names imported anywhere in one module, with their line numbers.

    ``from a import b`` yields ``a.b`` as well as ``a`` (``b`` may be a submodule); names that are
    not modules are dropped later by :func:`graph`. Relative imports are resolved against the
    module's package.
    """
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: list[tuple[str, int]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")
                base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            out.append((base, node.lineno))
            out += [(f"{base}.{a.name}", node.lineno) for a in node.names if a.name != "*"]
    return out


def graph() -> dict[str, dict[str, int]]:
    """``{module: {imported pixlab module: first line}}``.

    Importing ``pixlab.a.b`` also runs ``pixlab/a/__init__.py``, so it depends on ``pixlab.a`` too,
    except from inside ``pixlab.a`` (a package importing its own modules is how packages work) and
    for the top ``pixlab`` package, which every module is inside.
    """
    mods = modules()
    g: dict[str, dict[str, int]] = {m: {} for m in mods}
    for name, path in mods.items():
        for target, line in imports_of(name, path):
            if target not in mods or target == name:
                continue
            g[name].setdefault(target, line)
            parts = target.split(".")
            for k in range(2, len(parts)):
                package = ".".join(parts[:k])
                if package in mods and not (name == package or name.startswith(package + ".")):
                    g[name].setdefault(package, line)
    return g


def cycles(g: dict[str, dict[str, int]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each as one cycle path."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    comps: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:  # recursion depth is bounded by the module count (~200)
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in g[v]:
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
                comps.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return [cycle_path(g, set(c)) for c in comps]


def cycle_path(g: dict[str, dict[str, int]], comp: set[str]) -> list[str]:
    """One concrete cycle inside a strongly connected component, shortest from its first module."""
    start = min(comp)
    prev: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(g[v]):
                if w not in comp:
                    continue
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(prev[path[-1]])
                    return [start] + path[::-1][1:] + [start] if len(path) > 1 else [start, v, start]
                if w not in prev:
                    prev[w] = v
                    nxt.append(w)
        frontier = nxt
    return sorted(comp)


def describe(g: dict[str, dict[str, int]], path: list[str]) -> str:
    return " -> ".join(f"{a} (line {g[a][b]})" for a, b in zip(path, path[1:])) + f" -> {path[-1]}"


def test_graph_sees_relative_and_function_level_imports(tmp_path, monkeypatch):
    pkg = tmp_path / "pixlab"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "a.py").write_text("from . import b\n")
    (pkg / "sub" / "b.py").write_text("def f():\n    from ..c import x\n")
    (pkg / "c.py").write_text("import pixlab.sub.a\nx = 1\n")
    monkeypatch.setattr(__import__(__name__), "ROOT", pkg)
    g = graph()
    assert g["pixlab.sub.a"] == {"pixlab.sub": 1, "pixlab.sub.b": 1}
    assert g["pixlab.sub.b"] == {"pixlab.c": 2}
    found = cycles(g)
    assert found == [["pixlab.c", "pixlab.sub.a", "pixlab.sub.b", "pixlab.c"]]


def test_no_import_cycle():
    g = graph()
    found = cycles(g)
    assert not found, "import cycles (break them by moving the shared code down a layer):\n" + "\n".join(
        describe(g, c) for c in found)


def test_core_imports_no_jupyter_package():
    bad = []
    for name, path in modules().items():
        if name.startswith(JUPYTER_SIDE):
            continue
        for target, line in imports_of(name, path):
            if target.split(".")[0] in JUPYTER:
                bad.append(f"{path.relative_to(ROOT.parent)}:{line} imports {target.split('.')[0]}")
    assert not bad, "Jupyter packages belong in pixlab/widgets/ only:\n" + "\n".join(sorted(set(bad)))
