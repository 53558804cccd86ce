"""quotas sits below the generator and monitoring: it must not import them, not even
inside a function (the circle accounts/quotas.py ⇄ generator/models.py it replaced was
held open by function-level imports)."""

import ast
from pathlib import Path

import quotas

ABOVE = ("generator", "monitoring", "config")


def _imports(path: Path):
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module


def test_it_imports_nothing_above_quotas():
    root = Path(quotas.__file__).parent
    found = {
        f"{path.relative_to(root)}: {name}"
        for path in root.rglob("*.py")
        for name in _imports(path)
        if name.split(".")[0] in ABOVE
    }
    assert found == set()
