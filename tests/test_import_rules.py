"""The rooms and what each may import: two peers over one contract.

dsgd_operator and dsgd_trainer never import each other; both may import
dsgd_contract, which imports neither of them, nor torch, nor kopf (the operator
image has no torch, the trainer image no kopf). Checked on the source (every
import statement of every module, function-local ones included), so a lazy
import cannot slip through.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGES = {
    "dsgd_contract": REPO / "contract" / "dsgd_contract",
    "dsgd_operator": REPO / "operator" / "dsgd_operator",
    "dsgd_trainer": REPO / "trainer_image" / "dsgd_trainer",
}
#: Top-level modules each package must never import.
FORBIDDEN = {
    "dsgd_contract": {"dsgd_operator", "dsgd_trainer", "torch", "kopf", "kubernetes"},
    "dsgd_operator": {"dsgd_trainer", "torch"},
    "dsgd_trainer": {"dsgd_operator", "kopf", "kubernetes"},
}


def imported_modules(path: Path) -> set[str]:
    """Top-level names of every module `path` imports (relative imports stay in the package)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


def test_imported_modules_sees_every_kind_of_import(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text(
        "import a.b\nfrom c.d import e\nfrom . import f\n"
        "def g():\n    import h\n    from i import j\n"
    )
    assert imported_modules(module) == {"a", "c", "h", "i"}


@pytest.mark.parametrize("package", sorted(PACKAGES))
def test_package_imports_only_what_its_room_allows(package: str) -> None:
    modules = sorted(PACKAGES[package].rglob("*.py"))
    assert modules, f"no modules found for {package}"
    offences = [
        f"{path.relative_to(REPO)} imports {name}"
        for path in modules
        for name in sorted(imported_modules(path) & FORBIDDEN[package])
    ]
    assert offences == []
