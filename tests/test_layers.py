"""Dependencies point one way: each package imports only the packages below it (README, Architecture)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# What each package may import of crowdgate. ml_backend and routing are siblings: neither imports the other.
ALLOWED = {
    "core": set(),
    "qa_hooks": {"core"},
    "ml_backend": {"core", "qa_hooks"},
    "routing": {"core", "qa_hooks"},
    "crowdgate": {"core", "qa_hooks", "ml_backend", "routing"},
    "scripts": {"core", "qa_hooks", "ml_backend", "routing"},
}


def imported_packages(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
            [node.module] if isinstance(node, ast.ImportFrom) and node.module and not node.level else []
        found |= {name.split(".")[0] for name in names}
    return found & set(ALLOWED)


def test_each_package_imports_only_those_below_it():
    wrong = []
    for package, allowed in ALLOWED.items():
        for path in sorted((ROOT / package).rglob("*.py")):
            extra = imported_packages(path) - allowed - {package}
            if extra:
                wrong.append(f"{path.relative_to(ROOT)} imports {sorted(extra)}")
    assert not wrong, "\n".join(wrong)


def test_the_check_sees_a_wrong_import(tmp_path: Path):
    module = tmp_path / "m.py"
    module.write_text("import os\nfrom routing.router import after_scoring\n\ndef f():\n    import ml_backend.llm\n")
    assert imported_packages(module) == {"routing", "ml_backend"}
