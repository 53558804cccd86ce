"""Building the rollups from the raw logs, and reading windows back from them.

`roll_up()` (cron, every minute) rebuilds the buckets from a little before its cursor up
to the current minute: an attempt row is written when the call ends, minutes after it
started, so recent buckets are recomputed until no late row can still arrive.

Readers get exact windows: rollup rows for everything older than the cursor minus that
look-back, and the raw logs (a few minutes, served by the `attempt_window` and
`req_finished` indexes) for the rest.
"""

from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import BigIntegerField, Case, Count, F, Func, Min, Q, Sum, When
from django.db.models.functions import Coalesce, ExtractHour, TruncHour, TruncMinute
from django.utils import timezone

from generator.models import BATCH_PROVIDER, Attempt, GenerationRequest, Status
from generator.resilience.strategies import StrategyName
from monitoring.models import (
    HIST_FIELDS,
    LATENCY_BOUNDS_MS,
    AttemptRollup,
    Period,
    RequestRollup,
    RollupCursor,
)
from monitoring.stats import floor_hour, floor_minute, split_ranges

FINAL = (Status.SUCCEEDED, Status.FAILED, Status.CANCELED)
ATTEMPT_KEYS = ("model", "outcome")
REQUEST_KEYS = ("strategy", "status", "served_model", "fell_back")
SERIES_KEYS = ("status", "fell_back")


def lookback() -> timedelta:
    # Longer than any upstream call (JOB_TIMEOUT_SECONDS) plus the commit after it.
    return timedelta(minutes=getattr(settings, "MONITORING_LOOKBACK_MINUTES", 20))


def _hist_aggregates(expr, prefix: str = "") -> dict:
    """Conditional counts per histogram bucket of a millisecond expression."""
    out, low = {}, None
    for i, name in enumerate(HIST_FIELDS):
        cond = Q()
        if low is not None:
            cond &= Q(**{f"{expr}__gt": low})
        if i < len(LATENCY_BOUNDS_MS):
            cond &= Q(**{f"{expr}__lte": LATENCY_BOUNDS_MS[i]})
            low = LATENCY_BOUNDS_MS[i]
        out[f"{prefix}{name}"] = Count("pk", filter=cond & Q(**{f"{expr}__isnull": False}))
    return out


class MillisBetween(Func):
    """Whole milliseconds from one timestamp column to another, as an integer that the
    database can sum and bucket (a DurationField cannot be summed on SQLite)."""

    output_field = BigIntegerField()
    templates = {
        "postgresql": "CAST(EXTRACT(EPOCH FROM ({end} - {start})) * 1000 AS BIGINT)",
        "sqlite": "CAST(ROUND((julianday({end}) - julianday({start})) * 86400000) AS INTEGER)",
    }

    def __init__(self, start: str, end: str):
        super().__init__(F(start), F(end))

    def as_sql(self, compiler, connection, **extra):
        template = self.templates.get(connection.vendor)
        if template is None:
            raise NotImplementedError(f"MillisBetween does not support {connection.vendor}")
        (start, start_params), (end, end_params) = (
            compiler.compile(e) for e in self.source_expressions
        )
        # The placeholders' order in the SQL is end, then start.
        return template.format(start=start, end=end), (*end_params, *start_params)


def millis_between(start: str, end: str, when: Q | None = None):
    value = MillisBetween(start, end)
    if when is None:
        return value
    return Case(When(when, then=value), default=None, output_field=BigIntegerField())


def attempt_rows(qs, trunc=None):
    """Aggregate attempts into rollup-shaped dicts (optionally per minute/hour bucket)."""
    keys = list(ATTEMPT_KEYS)
    if trunc is not None:
        qs = qs.annotate(bucket=trunc("started"))
        keys.append("bucket")
    return qs.values(*keys).annotate(
        count=Count("pk"),
        http_503=Count("pk", filter=Q(http_status=503)),
        latency_count=Count("latency_ms"),
        latency_sum_ms=Coalesce(Sum("latency_ms"), 0),
        **_hist_aggregates("latency_ms"),
    )


def request_rows(qs, trunc=None):
    """Aggregate final requests (by their finish time) into rollup-shaped dicts."""
    keys = list(REQUEST_KEYS)
    qs = qs.annotate(
        tti=millis_between("created", "finished", when=Q(status=Status.SUCCEEDED)),
        wait=millis_between("created", "started"),
    )
    if trunc is not None:
        qs = qs.annotate(bucket=trunc("finished"))
        keys.append("bucket")
    return qs.values(*keys).annotate(
        count=Count("pk"),
        tti_count=Count("tti"),
        tti_sum_ms=Coalesce(Sum("tti"), 0),
        wait_count=Count("wait"),
        wait_sum_ms=Coalesce(Sum("wait"), 0),
        **_hist_aggregates("tti", "tti_"),
        **_hist_aggregates("wait", "wait_"),
    )


def request_series_rows(qs, trunc=None):
    """The lean shape of the request time series: per status and fallback (and bucket),
    the count and the time-to-image histogram only. A fraction of request_rows()'s
    columns and groups, which matters once a window holds hundreds of buckets."""
    keys = list(SERIES_KEYS)
    qs = qs.annotate(tti=millis_between("created", "finished", when=Q(status=Status.SUCCEEDED)))
    if trunc is not None:
        qs = qs.annotate(bucket=trunc("finished"))
        keys.append("bucket")
    return qs.values(*keys).annotate(
        count=Count("pk"), tti_count=Count("tti"), **_hist_aggregates("tti", "tti_")
    )


def final_requests():
    return GenerationRequest.objects.filter(status__in=FINAL, finished__isnull=False)


def upstream_calls():
    """The attempts that were calls to a model. A line of a Batch mode batch is counted
    apart (the monitoring page's economy panel): its hours of waiting are not a call's
    latency, and its failures say nothing about the model's hour-by-hour health."""
    return Attempt.objects.exclude(provider=BATCH_PROVIDER)


def _rebuild(model, rows_fn, source, time_field, start: datetime, end: datetime) -> int:
    """Replace the rollup rows of [start, end) with a fresh aggregate of the raw log."""
    written = 0
    for period, trunc, lo in (
        (Period.MINUTE, TruncMinute, start),
        # Hours are rebuilt whole: the hour that `start` falls in is partly outside.
        (Period.HOUR, TruncHour, floor_hour(start)),
    ):
        raw = source.filter(**{f"{time_field}__gte": lo, f"{time_field}__lt": end})
        model.objects.filter(period=period, bucket__gte=lo, bucket__lt=end).delete()
        objs = [model(period=period, **row) for row in rows_fn(raw, trunc)]
        model.objects.bulk_create(objs, batch_size=2000)
        written += len(objs)
    return written


def roll_up(now: datetime | None = None) -> dict:
    """Bring both rollups up to the current minute. Idempotent; safe to run anywhere."""
    now = now or timezone.now()
    end = floor_minute(now)
    result = {}
    for name, model, rows_fn, source, field in (
        ("attempts", AttemptRollup, attempt_rows, upstream_calls(), "started"),
        ("requests", RequestRollup, request_rows, final_requests(), "finished"),
    ):
        with transaction.atomic():
            cursor = RollupCursor.objects.select_for_update().filter(name=name).first()
            if cursor is None:
                first = source.aggregate(first=Min(field))["first"]
                if first is None:
                    # Nothing logged yet: start from now; later rows arrive within the
                    # look-back and are picked up by the next run.
                    first = end
                cursor = RollupCursor.objects.create(name=name, upto=floor_minute(first))
                start = floor_minute(first)
            else:
                start = cursor.upto - lookback()
            start = min(start, end)
            result[name] = _rebuild(model, rows_fn, source, field, start, end)
            cursor.upto = max(cursor.upto, end)
            cursor.save(update_fields=["upto"])
    return result


def tail_start(name: str) -> datetime | None:
    """Where readers must switch from rollups to the raw log (None: use raw only)."""
    cursor = RollupCursor.objects.filter(name=name).first()
    if cursor is None:
        return None
    return cursor.upto - lookback()


def _range_filter(start, tail, field="bucket") -> Q:
    q = Q(pk__in=[])
    for period, lo, hi in split_ranges(start, tail):
        part = Q(period=period)
        if lo is not None:
            part &= Q(**{f"{field}__gte": lo})
        if hi is not None:
            part &= Q(**{f"{field}__lt": hi})
        q |= part
    return q


SUM_ATTEMPT = ("count", "http_503", "latency_count", "latency_sum_ms", *HIST_FIELDS)
SUM_REQUEST = (
    "count",
    "tti_count",
    "tti_sum_ms",
    "wait_count",
    "wait_sum_ms",
    *(f"tti_{h}" for h in HIST_FIELDS),
    *(f"wait_{h}" for h in HIST_FIELDS),
)
SUM_SERIES = ("count", "tti_count", *(f"tti_{h}" for h in HIST_FIELDS))


def _window_rows(
    name, model, rows_fn, source, time_field, keys, sums, start, end, by_bucket, leave_out=None
):
    """Rows per key (and per minute bucket if asked) for [start, end), exact: rollups
    before the tail, the raw log after it; `leave_out`, a Q on both, drops some."""
    tail = tail_start(name)
    if tail is not None and end is not None and tail > end:
        tail = end
    rows = []
    rolled = model.objects.filter(_range_filter(start, tail))
    if leave_out is not None:
        rolled, source = rolled.exclude(leave_out), source.exclude(leave_out)
    if tail is not None and (start is None or tail > start):
        fields = [*keys, "bucket"] if by_bucket else list(keys)
        rows += list(rolled.values(*fields).annotate(**{s: Sum(s) for s in sums}))
    raw = source
    lo = tail if tail is not None and (start is None or tail > start) else start
    if lo is not None:
        raw = raw.filter(**{f"{time_field}__gte": lo})
    if end is not None:
        if lo is not None and lo >= end:
            return rows  # the rollups cover the whole window (an earlier one)
        raw = raw.filter(**{f"{time_field}__lt": end})
    rows += list(rows_fn(raw, TruncMinute if by_bucket else None))
    return rows


def hist(rows, prefix: str = "") -> list[int]:
    """The histogram columns (h00..., or tti_h00... with a prefix) summed over rows."""
    # The keys are built once, not once per row: the page sums thousands of rows.
    keys = [f"{prefix}{h}" for h in HIST_FIELDS]
    return [sum(r[k] or 0 for r in rows) for k in keys]


def attempts_in(start, end, by_bucket=False) -> list[dict]:
    """Attempt rows {model, outcome, [bucket], count, http_503, latency..., h00...}."""
    return _window_rows(
        "attempts",
        AttemptRollup,
        attempt_rows,
        upstream_calls(),
        "started",
        ATTEMPT_KEYS,
        SUM_ATTEMPT,
        start,
        end,
        by_bucket,
    )


def requests_in(start, end, by_bucket=False) -> list[dict]:
    """Final request rows {strategy, status, served_model, fell_back, count, tti...}."""
    return _window_rows(
        "requests",
        RequestRollup,
        request_rows,
        final_requests(),
        "finished",
        REQUEST_KEYS,
        SUM_REQUEST,
        start,
        end,
        by_bucket,
    )


def request_series_in(start, end) -> list[dict]:
    """Final request rows per minute or hour bucket {status, fell_back, bucket, count,
    tti_count, tti_h00...}: the page's time series. Economy requests, which wait hours
    on purpose, are counted apart (monitoring/economy.py)."""
    return _window_rows(
        "requests",
        RequestRollup,
        request_series_rows,
        final_requests(),
        "finished",
        SERIES_KEYS,
        SUM_SERIES,
        start,
        end,
        True,
        leave_out=Q(strategy=StrategyName.ECONOMY),
    )


def failures_by_hour(model: str, since: datetime) -> list[tuple[int, int]]:
    """(failed, total) calls of `model` per UTC hour of the day since `since`, from the
    hourly rollups (the heatmap's data, for one model): what the off-peak scheduler
    learns from (generator/economy.py)."""
    rows = (
        AttemptRollup.objects.filter(period=Period.HOUR, model=model, bucket__gte=since)
        .annotate(hr=ExtractHour("bucket"))
        .values("hr")
        .annotate(total=Sum("count"), failed=Sum("count", filter=~Q(outcome="success")))
    )
    table = [(0, 0)] * 24
    for row in rows:
        table[row["hr"]] = (row["failed"] or 0, row["total"] or 0)
    return table


def prune(now: datetime | None = None) -> dict:
    """Delete raw attempts older than MONITORING_RETENTION_DAYS (only once they are in
    the rollups) and minute rollups older than MONITORING_MINUTE_ROLLUP_DAYS; hourly
    rollups are kept for good."""
    now = now or timezone.now()
    cutoff = now - timedelta(days=settings.MONITORING_RETENTION_DAYS)
    cursor = RollupCursor.objects.filter(name="attempts").first()
    deleted_attempts = 0
    if cursor is not None:
        safe = min(cutoff, cursor.upto - lookback())
        deleted_attempts, _ = Attempt.objects.filter(started__lt=safe).delete()
    minute_cutoff = now - timedelta(days=settings.MONITORING_MINUTE_ROLLUP_DAYS)
    minutes = 0
    for model in (AttemptRollup, RequestRollup):
        n, _ = model.objects.filter(period=Period.MINUTE, bucket__lt=minute_cutoff).delete()
        minutes += n
    return {"attempts": deleted_attempts, "minute_rollups": minutes}
