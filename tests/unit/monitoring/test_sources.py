"""sources.py reads other modules lazily and turns their absence or failure into None."""

import sys
import types

from monitoring import sources

OVERVIEW = [{"model": "m", "breaker": "open", "open_until": None, "quota": {}}]


def _fake_health(monkeypatch, overview):
    class Health:
        @classmethod
        def from_settings(cls):
            return cls()

        def overview(self):
            if isinstance(overview, Exception):
                raise overview
            return overview

        def transitions(self, limit=50):
            return [{"model": "m", "to": "open", "reason": "r"}][:limit]

    module = types.ModuleType("generator.resilience.health")
    module.Health = Health
    monkeypatch.setitem(sys.modules, "generator.resilience.health", module)


def test_it_reads_the_breakers_from_shared_health(monkeypatch):
    _fake_health(monkeypatch, OVERVIEW)
    assert sources.breakers() == OVERVIEW
    assert sources.breakers()[0]["why"] == "r"  # an open breaker's latest transition


def test_it_reports_unreadable_health_as_not_available(monkeypatch):
    _fake_health(monkeypatch, ConnectionError("redis down"))
    assert sources.breakers() is None


def test_it_reports_missing_modules_as_not_available(monkeypatch):
    monkeypatch.setitem(
        sys.modules, "generator.resilience.health", None
    )  # import raises ImportError
    monkeypatch.setitem(sys.modules, "quotas.selectors", None)
    assert sources.breakers() is None
    assert sources.quota_usage() is None


def test_it_reads_quota_use(monkeypatch):
    module = types.ModuleType("quotas.selectors")
    module.usage_overview = lambda now=None: {"teams": [{"team": "Acme"}], "users": []}
    monkeypatch.setitem(sys.modules, "quotas.selectors", module)
    assert sources.quota_usage()["teams"][0]["team"] == "Acme"


def test_it_reads_redis_over_one_client_per_process(settings):
    """Every page view and scrape shares one pool: no connection opened per read."""
    first = sources._redis()
    assert sources._redis() is first
    settings.REDIS_URL = "redis://127.0.0.1:9/7"  # another Redis: another client
    assert sources._redis() is not first
