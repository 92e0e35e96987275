"""The import rules of the project, read from the source: every module imports on its own, in any order; no
import cycle among project modules (lazy imports inside functions included); no module reaches for another
module's ``_private`` names.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = tuple(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
# Checked for cycles and private names too, though they are not installed packages.
EXTRA_FOLDERS = ("tests", "bench")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def sources(folders: tuple[str, ...]) -> dict[str, Path]:
    found = {}
    for folder in folders:
        for path in sorted((ROOT / folder).rglob("*.py")):
            found[module_name(path)] = path
    return found


ALL = sources(PACKAGES + EXTRA_FOLDERS)


@dataclass
class ModuleImports:
    """What one module imports from the project: modules, and ``(module, name)`` pairs it takes names from."""

    modules: set[str] = field(default_factory=set)
    names: set[tuple[str, str]] = field(default_factory=set)
    private_uses: list[str] = field(default_factory=list)


def _resolve(name: str, known: dict[str, Path]) -> str | None:
    """The project module ``name`` or its nearest enclosing project module."""
    while name:
        if name in known:
            return name
        name = name.rpartition(".")[0]
    return None


def _absolute(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, *([node.module] if node.module else [])])


def imports_of(module: str, known: dict[str, Path]) -> ModuleImports:
    path = known[module]
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    out = ModuleImports()
    aliases: dict[str, str] = {}  # local name -> project module it is bound to
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                target = _resolve(alias.name, known)
                if target is not None:
                    out.modules.add(target)
                    if alias.asname:
                        aliases[alias.asname] = target
        elif isinstance(node, ast.ImportFrom):
            source = _absolute(node, module, path.name == "__init__.py")
            if source == "__future__":
                continue
            for alias in node.names:
                submodule = f"{source}.{alias.name}"
                if submodule in known:  # ``from pkg import module``
                    out.modules.add(submodule)
                    aliases[alias.asname or alias.name] = submodule
                    continue
                target = _resolve(source, known)
                if target is None:
                    continue
                out.modules.add(target)
                out.names.add((target, alias.name))
    for node in ast.walk(tree):
        # ``module._name`` on a project module bound by an import
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases \
                and _is_private(node.attr):
            out.private_uses.append(f"{aliases[node.value.id]}.{node.attr}")
    out.modules.discard(module)
    return out


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path ``[a, b, ..., a]``, or None when the graph is acyclic."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt):], nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_the_cycle_finder_finds_cycles() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"a2"}, "a2": set(), "x": {"y"}, "y": {"x"}}) == ["x", "y", "x"]


def test_the_reader_sees_lazy_relative_and_private_imports(tmp_path: Path) -> None:
    (tmp_path / "pkg").mkdir()
    files = {
        "pkg/__init__.py": "",
        "pkg/a.py": "def f():\n    from pkg import b\n    return b._hidden\n",
        "pkg/b.py": "from .a import f, _g\nimport pkg.c as c\nx = c._y\n",
        "pkg/c.py": "",
    }
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    known = {n.removesuffix(".py").replace("/", ".").removesuffix(".__init__"): tmp_path / n for n in files}
    a, b = imports_of("pkg.a", known), imports_of("pkg.b", known)
    assert a.modules == {"pkg.b"} and a.private_uses == ["pkg.b._hidden"]
    assert b.modules == {"pkg.a", "pkg.c"} and ("pkg.a", "_g") in b.names and b.private_uses == ["pkg.c._y"]
    assert find_cycle({m: imports_of(m, known).modules for m in ("pkg.a", "pkg.b")}) == ["pkg.a", "pkg.b", "pkg.a"]


def test_no_import_cycle_among_project_modules() -> None:
    graph = {m: imports_of(m, ALL).modules for m in ALL}
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def private_offences() -> set[str]:
    offences = set()
    for module in ALL:
        found = imports_of(module, ALL)
        offences |= {f"{module}: from {src} import {name}" for src, name in found.names if _is_private(name)}
        offences |= {f"{module}: {use}" for use in found.private_uses}
    return offences


def test_no_module_imports_another_modules_private_names() -> None:
    assert sorted(private_offences()) == []


@pytest.mark.parametrize("order", ["sorted", "reversed"])
def test_every_module_imports_in_a_fresh_interpreter_in_any_order(order: str) -> None:
    modules = sorted(m for m in sources(PACKAGES) if not m.endswith("__main__"))
    if order == "reversed":
        modules.reverse()
    code = "import importlib, sys\nfor name in sys.argv[1:]:\n    importlib.import_module(name)\n"
    done = subprocess.run([sys.executable, "-c", code, *modules], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
