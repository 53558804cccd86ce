"""The layout's promises, checked: the import contracts of pyproject.toml hold (the pure
core imports no framework, the providers know nothing of the product)."""

from pathlib import Path

from importlinter.cli import lint_imports

ROOT = Path(__file__).resolve().parents[2]


def test_it_keeps_every_import_contract(monkeypatch):
    monkeypatch.chdir(ROOT)
    assert lint_imports(config_filename=str(ROOT / "pyproject.toml"), no_cache=True) == 0
