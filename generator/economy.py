"""Economy requests: half price for images that are needed by a deadline hours away.

At admission an economy request is planned one of two ways, and waits in the database
(status `scheduled`, no RQ job) until generator/batching.py moves it on:
- **batch**: its first model has Batch mode and BATCH_MODE is on: it is put in a batch
  of its model and size, sent to the provider's Batch mode, and delivered from it;
- **off-peak**: otherwise: it waits for the calmest hour before its deadline (the
  failure rate by hour learned from the attempt log) and runs through the normal chain.

Either way, if it cannot deliver in time (a batch that expires, fails or is still
running `ECONOMY_DIRECT_MARGIN_S` before the deadline), the request goes the normal way
while its deadline still allows.

It is charged the Batch price of its first model (its normal price if it has no Batch
mode), or less if a cheaper model served it: never more than it reserved.
"""

import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from django.conf import settings

from generator.models import Route, Status
from generator.reasons import day_and_time
from generator.resilience.catalogue import ModelSpec, get_catalogue
from generator.resilience.offpeak import calmest_start, learned_rates


def scaled(seconds: float) -> timedelta:
    """A duration from settings, compressed like every other by TIME_SCALE."""
    return timedelta(seconds=seconds * settings.TIME_SCALE)


def min_lead() -> timedelta:
    """How far ahead an economy request's deadline must be."""
    return scaled(settings.ECONOMY_MIN_LEAD_S)


def direct_margin() -> timedelta:
    """How long before its deadline a request still waiting for Batch mode or its
    off-peak hour goes the normal way instead: enough for the chain to deliver."""
    return scaled(settings.ECONOMY_DIRECT_MARGIN_S)


def uses_batch(spec: ModelSpec) -> bool:
    """Whether requests for this model go through Batch mode (only the Gemini provider
    speaks it)."""
    return settings.BATCH_MODE and spec.has_batch and spec.provider == "gemini"


def price(chain: list[str], image_size: str) -> Decimal:
    """What an economy request reserves: its first model's Batch price at that size."""
    spec = get_catalogue()[chain[0]]
    return spec.batch_price(image_size) if spec.has_batch else spec.price(image_size)


@dataclass(frozen=True)
class Plan:
    route: str
    status: str
    waiting_until: datetime | None
    reason: str  # what the page says while it waits


def plan(chain: list[str], deadline: datetime, now: datetime) -> Plan:
    spec = get_catalogue()[chain[0]]
    if uses_batch(spec):
        return Plan(
            Route.BATCH,
            Status.SCHEDULED,
            now,
            f"Waiting to go into a batch for {spec.display_name} (Batch mode, half price).",
        )
    rates = learned_rates(failures_by_hour(spec.id, now))
    latest = deadline - direct_margin()
    # Spread over the hour, so that the requests of a busy day do not all start on it.
    spread = random.random()
    start = calmest_start(now.timestamp(), latest.timestamp(), rates, spread)
    start = datetime.fromtimestamp(start, UTC)
    return Plan(
        Route.OFF_PEAK,
        Status.SCHEDULED,
        start,
        f"Scheduled for {day_and_time(start)} UTC, the calmest hour for "
        f"{spec.display_name} before its deadline.",
    )


# Where the failure table comes from: the monitoring app hands in its reader at start
# (monitoring imports the generator, never the reverse). Without it, the prior alone.
_failure_source: Callable[[str, datetime], list[tuple[int, int]]] | None = None


def learn_failures_from(source: Callable[[str, datetime], list[tuple[int, int]]]) -> None:
    """Set the reader of the failure table: source(model, since) -> (failed, total) per
    UTC hour (monitoring.rollups.failures_by_hour, the heatmap's data)."""
    global _failure_source
    _failure_source = source


def failures_by_hour(model: str, now: datetime) -> list[tuple[int, int]] | None:
    """(failed, total) calls of `model` per UTC hour over the monitoring heatmap's days,
    or None when nothing has learned them."""
    if _failure_source is None:
        return None
    return _failure_source(model, now - timedelta(days=settings.MONITORING_HEATMAP_DAYS))
