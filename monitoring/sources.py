"""Live state owned by other parts of the product: breakers and upstream quota headroom
(generator.resilience.health), team and member quota use (quotas.selectors), the RQ queues and
workers (Redis).

Each reader returns None when its source is missing or unreachable, so the page says
"not available" for that panel instead of failing as a whole; the imports are lazy
because those modules are optional from monitoring's point of view.
"""

import logging
from datetime import UTC, datetime

from django.conf import settings

log = logging.getLogger(__name__)


def _health():
    try:
        from generator.resilience.health import Health
    except ImportError:
        return None
    try:
        return Health.from_settings()
    except Exception as exc:
        log.warning("Shared health is not available: %s", exc)
        return None


def breakers() -> list[dict] | None:
    """Per model: breaker state, open_until, failure_rate over window_calls (of the
    breaker's window_size), p50_ms, quota, out_of_quota_until (Health.overview())."""
    health = _health()
    if health is None:
        return None
    try:
        rows = list(health.overview())
    except Exception as exc:
        log.warning("Could not read the breakers: %s", exc)
        return None
    # An open breaker starts a fresh window, so its own numbers say little: show why it
    # opened (its latest transition) instead.
    try:
        latest = {}
        for change in health.transitions(limit=50):  # newest first
            latest.setdefault(change["model"], change)
    except Exception as exc:
        log.warning("Could not read the breaker transitions: %s", exc)
        latest = {}
    for row in rows:
        # Epoch seconds in the store; a time a person can read on the page.
        for key in ("open_until", "out_of_quota_until"):
            if row.get(key):
                row[key] = datetime.fromtimestamp(row[key], tz=UTC)
        change = latest.get(row["model"])
        if row["breaker"] != "closed" and change:
            row["why"] = change.get("reason", "")
    return rows


def quota_usage() -> dict | None:
    """{"teams": [...], "users": [...]} from quotas.selectors, or None."""
    try:
        from quotas.selectors import usage_overview
    except ImportError:
        return None
    try:
        return usage_overview()
    except Exception as exc:
        log.warning("Could not read the quota use: %s", exc)
        return None


def _redis():
    """The process's client (shared by every page view and scrape), with short timeouts:
    a Redis that does not answer must not hang the page or a scrape."""
    from generator.resilience.stores import shared_client

    return shared_client(settings.REDIS_URL, socket_connect_timeout=1, socket_timeout=2)


def queues() -> dict | None:
    """{"queues": [{"name", "depth", "scheduled", "failed"}], "workers": n, "calls":
    {"callers", "in_flight", "waiting"}} or None."""
    try:
        from rq import Queue, Worker

        from generator.caller import calls

        conn = _redis()
        rows = []
        for name in settings.RQ_QUEUES:
            queue = Queue(name, connection=conn)
            rows.append(
                {
                    "name": name,
                    "depth": queue.count,
                    "scheduled": queue.scheduled_job_registry.count,
                    "failed": queue.failed_job_registry.count,
                }
            )
        return {
            "queues": rows,
            "workers": Worker.count(connection=conn),
            "calls": calls.callers(conn),
        }
    except Exception as exc:
        log.warning("Could not read the queues: %s", exc)
        return None
