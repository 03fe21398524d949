"""The folder layout is the architecture: dependencies point inward (STYLE.md, Layout).

domain/ imports only the standard library and itself; only drivers/faust imports faust; only
storage/ imports rocksdict. A violation names the file and the import.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "idstream"


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def _files(folder: str = "") -> list[Path]:
    return sorted((SRC / folder).rglob("*.py"))


def _top(module: str) -> str:
    return module.split(".")[0]


@pytest.mark.parametrize("path", _files("domain"), ids=lambda p: p.name)
def test_domain_imports_only_stdlib_and_itself(path: Path) -> None:
    for module in _imports(path):
        if module.startswith("idstream"):
            assert module.startswith("idstream.domain"), f"{path.name} imports {module}"
        else:
            assert _top(module) in sys.stdlib_module_names, f"{path.name} imports {module}"


def test_only_the_faust_driver_imports_faust() -> None:
    for path in _files():
        if "drivers/faust" in path.as_posix():
            continue
        bad = {m for m in _imports(path) if _top(m) in {"faust", "mode"}}
        assert not bad, f"{path.relative_to(SRC)} imports {bad}"


def test_only_storage_imports_rocksdict() -> None:
    for path in _files():
        if "/storage/" in path.as_posix():
            continue
        bad = {m for m in _imports(path) if _top(m) == "rocksdict"}
        assert not bad, f"{path.relative_to(SRC)} imports {bad}"
