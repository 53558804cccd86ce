"""Quota days and months: they run in settings.QUOTA_TIME_ZONE, not in UTC or the
server's zone, so that "resets at midnight" means the owner's midnight."""

import calendar
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from functools import cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.utils import timezone


@cache
def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ImproperlyConfigured(
            f"QUOTA_TIME_ZONE must be an IANA time zone such as UTC or Europe/Paris; got {name!r}"
        ) from None


def quota_zone() -> ZoneInfo:
    return _zone(settings.QUOTA_TIME_ZONE)


def _midnight(day: date) -> datetime:
    # A wall-clock midnight in the quota zone; zoneinfo resolves DST gaps and folds.
    return datetime.combine(day, time.min, tzinfo=quota_zone())


@dataclass(frozen=True)
class Periods:
    """The current quota day and month: [start, end) in the quota time zone."""

    now: datetime
    day_start: datetime
    day_end: datetime
    month_start: datetime
    month_end: datetime


def periods(now: datetime | None = None) -> Periods:
    now = now or timezone.now()
    local = now.astimezone(quota_zone()).date()
    first = local.replace(day=1)
    days_in_month = calendar.monthrange(first.year, first.month)[1]
    return Periods(
        now=now,
        day_start=_midnight(local),
        day_end=_midnight(local + timedelta(days=1)),
        month_start=_midnight(first),
        month_end=_midnight(first + timedelta(days=days_in_month)),
    )


def format_reset(moment: datetime) -> str:
    """A reset time as people read it, in the quota time zone: "30 Nov 2026, 00:00 UTC"."""
    local = moment.astimezone(quota_zone())
    return f"{local:%-d %b %Y, %H:%M} {local.tzname()}"
