"""The layout's promises, checked: the import contracts of pyproject.toml hold (the pure
core imports no framework, the providers know nothing of the product)."""

import logging
from pathlib import Path

from importlinter.cli import lint_imports

ROOT = Path(__file__).resolve().parents[2]


def test_it_keeps_every_import_contract(monkeypatch):
    monkeypatch.chdir(ROOT)
    # lint_imports() configures logging with dictConfig(), which disables every logger
    # that exists already (steadyshot.breaker among them): later tests that read the
    # logs would find them silent. Give them back as they were.
    loggers = logging.root.manager.loggerDict.values()
    enabled = [lg for lg in loggers if isinstance(lg, logging.Logger) and not lg.disabled]
    try:
        assert lint_imports(config_filename=str(ROOT / "pyproject.toml"), no_cache=True) == 0
    finally:
        for logger in enabled:
            logger.disabled = False
