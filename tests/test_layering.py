"""The package map of docs/design.md, enforced: no package imports a package ranked above it, and no two packages
import each other (directly or around a loop). Every import counts, lazy ones inside functions and ``TYPE_CHECKING``
ones included, because a lazy import is still a dependency, only a hidden one.
"""

from __future__ import annotations

import ast
from pathlib import Path

import cutpoint

ROOT = Path(cutpoint.__file__).parent
# Plain modules of cutpoint itself, importable by all (they import only each other). ``names`` and ``workdir`` are
# the VM-name rule and the private work directory (h5-host); listed ahead so that branch merges without an edit here.
BASE = {"", "errors", "units", "paths", "signals", "faults", "vmconfig", "qemuimg", "names", "workdir", "pids", "heap"}

# Data-path order, lowest first. Equal ranks may import each other only if that makes no cycle.
RANK = {
    "base": 0,
    "cut": 1,          # driver-neutral: the Driver interface, quiesce bracket, cleanup steps, naming, the plan
    "drivers": 2,      # drivers/qmp, drivers/libvirt, and the kind -> driver registry
    "reader": 3,
    "catalog": 4,
    "vault": 5,
    "backup": 6,
    "restore": 7,
    "jobs": 8,
    "policy": 8,
    "service": 9,
    "api": 10,
    "lab": 11,         # test tooling; below cli only because ``cutpoint lab`` and ``cutpoint demo`` drive it
    "cli": 12,
}


def package_of(module: str) -> str:
    """``cutpoint.drivers.qmp.cut`` -> ``drivers``; the root package and its plain modules -> ``base``."""
    parts = module.split(".")
    assert parts[0] == "cutpoint", module
    first = parts[1] if len(parts) > 1 else ""
    return "base" if first in BASE else first


def module_name(path: Path, root: Path = ROOT) -> str:
    rel = path.relative_to(root.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, root: Path = ROOT) -> set[str]:
    """Every cutpoint module ``path`` imports, at any depth of the syntax tree."""
    mod = module_name(path, root)
    pkg = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "cutpoint"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg.split(".")
                base = base[:len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "cutpoint":
                continue
            found.add(target)
            for a in node.names:      # ``from .. import faults`` imports the module cutpoint.faults
                sub = root.parent.joinpath(*f"{target}.{a.name}".split("."))
                if sub.with_suffix(".py").exists() or (sub / "__init__.py").exists():
                    found.add(f"{target}.{a.name}")
    return found


def package_graph() -> dict[str, dict[str, list[str]]]:
    """importing package -> imported package -> the modules (``a.b -> c.d``) that make the edge."""
    graph: dict[str, dict[str, list[str]]] = {}
    for path in sorted(ROOT.rglob("*.py")):
        src = module_name(path)
        for dst in imports_of(path):
            a, b = package_of(src), package_of(dst)
            if a != b:
                graph.setdefault(a, {}).setdefault(b, []).append(f"{src} -> {dst}")
    return graph


def cycles(graph: dict[str, dict[str, list[str]]]) -> list[list[str]]:
    """Strongly connected components of more than one package (each is at least one import cycle)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(set(graph) | {w for e in graph.values() for w in e}):
        if v not in index:
            visit(v)
    return out


def test_every_package_has_a_rank() -> None:
    packages = {package_of(module_name(p)) for p in ROOT.rglob("*.py")}
    assert packages - set(RANK) == set(), "add the new package to RANK here and to design.md's package map"


def test_no_package_import_cycle() -> None:
    graph = package_graph()
    found = cycles(graph)
    detail = [f"{' <-> '.join(c)}: " + "; ".join(m for a in c for b in c if b in graph.get(a, {})
                                                   for m in graph[a][b]) for c in found]
    assert not found, "package import cycles:\n" + "\n".join(detail)


def test_no_import_of_a_higher_package() -> None:
    upward = [m for a, edges in package_graph().items() for b, mods in edges.items()
              if RANK.get(b, 99) > RANK.get(a, 99) for m in mods]
    assert not upward, "imports of a higher-ranked package:\n" + "\n".join(sorted(upward))


def test_checker_sees_lazy_and_relative_imports(tmp_path: Path) -> None:
    """The checker itself: a relative import inside a function, and ``from .. import module``, are edges."""
    root = tmp_path / "cutpoint"
    (root / "cut").mkdir(parents=True)
    (root / "faults.py").write_text("")
    mod = root / "cut" / "plan.py"
    mod.write_text("from .. import faults\n\ndef f():\n    from ..drivers.qmp import cut\n    return cut\n")
    assert imports_of(mod, root) == {"cutpoint", "cutpoint.faults", "cutpoint.drivers.qmp"}
    assert cycles({"cut": {"drivers": ["x"]}, "drivers": {"cut": ["y"]}, "reader": {"base": ["z"]}}) \
        == [["cut", "drivers"]]
