"""Cron entry points (config/cron.py): small, idempotent, safe on several machines."""

import logging

from monitoring import alerts, rollups

log = logging.getLogger(__name__)


def roll_up() -> dict:
    """Bring the attempt and request rollups up to the current minute."""
    result = rollups.roll_up()
    log.info("Rolled up %s", result)
    return result


def evaluate_alerts() -> dict:
    """Evaluate the alert rules: open, refresh or resolve alerts, and notify."""
    result = alerts.evaluate()
    if result["opened"] or result["resolved"]:
        log.warning("Alerts: %s", result)
    return result


def prune() -> dict:
    """Delete raw attempts past MONITORING_RETENTION_DAYS and old minute rollups."""
    result = rollups.prune()
    log.info("Pruned %s", result)
    return result
