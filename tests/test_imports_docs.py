"""docs/ARCHITECTURE.md describes the tree as it is: every module has a row, every row names a module
that exists and names defined in it, and every signature it quotes uses real parameter names.

When this fails after adding, moving or renaming a module: edit the table row in docs/ARCHITECTURE.md
(module, concern, public names) - the message names the row.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "ARCHITECTURE.md"
ROW = re.compile(r"^\| `(pixlab/[\w/]+\.py)` \|(.*)\|(.*)\|\s*$")
SIGNATURE = re.compile(r"^(pixlab(?:\.\w+)+)\((.*)\)(?: -> .*)?$")


def rows() -> dict[str, list[str]]:
    out = {}
    for line in DOC.read_text(encoding="utf-8").splitlines():
        m = ROW.match(line)
        if m:
            out[m.group(1)] = re.findall(r"`([A-Za-z_]\w*)`", m.group(3))
    return out


def defined_names(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            for t in node.targets if isinstance(node, ast.Assign) else [node.target]:
                names |= {n.id for n in ast.walk(t) if isinstance(n, ast.Name)}
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names}
        elif isinstance(node, ast.Try):  # e.g. __version__ set in try/except
            names |= {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
    return names


def test_every_module_has_a_row_and_every_row_a_module():
    documented = set(rows())
    actual = {p.relative_to(REPO).as_posix() for p in (REPO / "pixlab").rglob("*.py")}
    assert not actual - documented, f"modules missing from {DOC.name} (add a table row): {sorted(actual - documented)}"
    assert not documented - actual, f"{DOC.name} names modules that do not exist: {sorted(documented - actual)}"


def test_every_name_in_a_row_is_defined_in_its_module():
    wrong = []
    for module, names in rows().items():
        path = REPO / module
        if not path.is_file():
            continue  # reported by the test above
        lazy = {"Model", "load_model", "predict_file", "predict_folder", "predict_many", "datasets",
                "diagnostics", "import_onnx", "cross_validate"} if module == "pixlab/__init__.py" else set()
        wrong += [f"{module}: {n}" for n in names if n not in defined_names(path) | lazy]
    assert not wrong, f"{DOC.name} lists names its modules do not define: {wrong}"


def signatures() -> list[tuple[str, str]]:
    text = DOC.read_text(encoding="utf-8")
    block = text.split("<!-- signatures -->")[1].split("<!-- /signatures -->")[0]
    return [(m.group(1), m.group(2)) for line in block.splitlines() if (m := SIGNATURE.match(line.strip()))]


def test_doc_has_signatures():
    assert len(signatures()) >= 20


@pytest.mark.parametrize("dotted, params", signatures())
def test_signature_parameters_exist(dotted, params):
    parts = dotted.split(".")
    for i in range(len(parts) - 1, 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ModuleNotFoundError:
            continue
        for attr in parts[i:]:
            obj = getattr(obj, attr)
        break
    real = list(inspect.signature(obj).parameters)
    named = [p.split("=")[0].strip(" *:").split(":")[0].strip() for p in re.split(r",\s*(?![^()\[\]]*[)\]])", params)]
    named = [n for n in named if n and n not in ("...", "/")]
    missing = [n for n in named if n not in real]
    assert not missing, f"{DOC.name}: {dotted}() has no parameter(s) {missing}; it takes {real}"


def test_readme_layout_lists_every_module_of_every_package():
    """README's Layout block: a ``  pkg/`` line, then its modules (comma-separated, indented)."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    block = text.split("## Layout", 1)[1].split("```", 2)[1]
    listed: dict[str, set[str]] = {}
    current = None
    for line in block.splitlines():
        head = re.match(r"^  ([\w/]+)/\s", line)
        if head:
            current = head.group(1)
            listed[current] = set()
        elif current and line.startswith(" " * 22):
            listed[current] |= {m.strip() for m in line.split(",") if m.strip()}
        elif not line.startswith(" "):
            current = None
    packages = {p.parent.relative_to(REPO / "pixlab").as_posix() for p in (REPO / "pixlab").rglob("__init__.py")} - {"."}
    assert set(listed) - {"data"} == packages, f"README Layout: packages {sorted(packages)}, listed {sorted(listed)}"
    for pkg in packages:
        actual = {p.stem for p in (REPO / "pixlab" / pkg).glob("*.py") if p.name != "__init__.py"}
        assert listed[pkg] == actual, (f"README Layout, {pkg}/: missing {sorted(actual - listed[pkg])}, "
                                       f"not in the tree {sorted(listed[pkg] - actual)}")
