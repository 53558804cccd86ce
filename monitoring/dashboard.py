"""The numbers of the monitoring page for one window and the one before it.

Counting rules (docs/monitoring.md): requests are counted once, when they finish (delivered rate,
fallback share, time to image, served by); attempts are counted one by one, when they
start (error mix, upstream latency). Rates below a minimum count are not shown.
"""

from collections import defaultdict
from datetime import datetime, timedelta
from urllib.parse import urlencode

from django.conf import settings
from django.db.models import Q, Sum
from django.db.models.functions import ExtractHour, ExtractIsoWeekDay
from django.urls import reverse
from django.utils import timezone

from generator.resilience.taxonomy import Outcome
from monitoring import rollups, sources, svg
from monitoring.models import LATENCY_BOUNDS_MS, AttemptRollup, Period
from monitoring.stats import Window, percentile, rate

MIN_REQUESTS = 5  # below this a window's rates are not shown, only its counts
WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
FAILURES = [o for o in Outcome if o.is_failure]
QUOTA_SORTS = {"team", "images_today", "images_month", "cost_month", "percent"}
USER_SORTS = {"user", "team", "images_today", "images_month", "cost_month"}


def _pct(hist, q):
    value = percentile(hist, LATENCY_BOUNDS_MS, q)
    return None if value is None else round(value)


def _request_summary(rows):
    total = sum(r["count"] for r in rows)
    succeeded = [r for r in rows if r["status"] == "succeeded"]
    delivered = sum(r["count"] for r in succeeded)
    fell_back = sum(r["count"] for r in succeeded if r["fell_back"])
    tti = rollups.hist(succeeded, "tti_")
    wait = rollups.hist(rows, "wait_")
    return {
        "requests": total,
        "delivered": delivered,
        "failed": sum(r["count"] for r in rows if r["status"] == "failed"),
        "canceled": sum(r["count"] for r in rows if r["status"] == "canceled"),
        "delivered_rate": rate(delivered, total, MIN_REQUESTS),
        "fell_back": fell_back,
        "fallback_share": rate(fell_back, delivered, MIN_REQUESTS),
        "tti_p50": _pct(tti, 0.5),
        "tti_p95": _pct(tti, 0.95),
        "wait_p50": _pct(wait, 0.5),
        "wait_p95": _pct(wait, 0.95),
    }


def _admin_link(name: str, **params) -> str:
    return reverse(f"admin:generator_{name}_changelist") + "?" + urlencode(params)


def _iso(moment: datetime) -> str:
    # With its UTC offset: the admin filters on aware datetimes.
    return moment.replace(microsecond=0).isoformat()


def build(window_key: str, now: datetime | None = None, sort: str = "", user_sort: str = ""):
    now = now or timezone.now()
    window = Window.ending(window_key, now)
    prev = window.previous()
    attempts = rollups.attempts_in(window.start, window.end, by_bucket=True)
    requests = rollups.requests_in(window.start, window.end)
    prev_requests = rollups.requests_in(prev.start, prev.end)
    prev_attempts = rollups.attempts_in(prev.start, prev.end)

    tiles = _request_summary(requests)
    before = _request_summary(prev_requests)
    attempt_total = sum(r["count"] for r in attempts)
    attempt_failed = sum(r["count"] for r in attempts if r["outcome"] != Outcome.SUCCESS)
    tiles.update(
        attempts=attempt_total,
        attempts_failed=attempt_failed,
        attempt_failure_rate=rate(attempt_failed, attempt_total, MIN_REQUESTS),
        calls_per_image=(attempt_total / tiles["delivered"]) if tiles["delivered"] else None,
    )
    prev_attempt_total = sum(r["count"] for r in prev_attempts)
    before.update(attempts=prev_attempt_total)
    since = {"started__gte": _iso(window.start), "started__lt": _iso(window.end)}
    finished = {"finished__gte": _iso(window.start), "finished__lt": _iso(window.end)}

    # Error mix over time (failed attempts per slot and outcome).
    slots = window.slot_starts()
    per_slot = defaultdict(lambda: [0] * len(slots))
    for r in attempts:
        if r["outcome"] == Outcome.SUCCESS:
            continue
        i = window.slot_index(r["bucket"])
        if 0 <= i < len(slots):
            per_slot[r["outcome"]][i] += r["count"]
    seen = [o for o in FAILURES if o in per_slot]
    slot_fmt = "%H:%M" if window.slot < timedelta(hours=6) else "%a %H:%M"
    slot_labels = [s.strftime(slot_fmt) for s in slots]
    mix_time = {
        "outcomes": [{"key": o, "label": o.label, "css": f"o-{o}"} for o in seen],
        "rows": [
            {"label": slot_labels[i], "values": [per_slot[o][i] for o in seen]}
            for i in range(len(slots))
        ],
        "svg": svg.stacked_columns(
            "Failed attempts over time by error class",
            f"Stacked columns, one per {window.slot}, for the last {window.key}.",
            slot_labels,
            [(o.label, f"o-{o}", per_slot[o]) for o in seen],
        ),
    }

    # Per model: error mix and latency percentiles.
    by_model = defaultdict(list)
    for r in attempts:
        by_model[r["model"]].append(r)
    models = []
    for model, rows in sorted(by_model.items()):
        counts = defaultdict(int)
        for r in rows:
            counts[r["outcome"]] += r["count"]
        total = sum(counts.values())
        hist = rollups.hist(rows)
        models.append(
            {
                "model": model,
                "attempts": total,
                "failed": total - counts[Outcome.SUCCESS],
                "failure_rate": rate(total - counts[Outcome.SUCCESS], total, MIN_REQUESTS),
                "counts": [counts[o] for o in Outcome],
                "p50": _pct(hist, 0.5),
                "p90": _pct(hist, 0.9),
                "p95": _pct(hist, 0.95),
                "p99": _pct(hist, 0.99),
                "link": _admin_link("attempt", model=model, **since),
            }
        )
    mix_model_svg = svg.stacked_bars(
        "Attempts per model by outcome",
        "One bar per model, split by outcome, as shares of that model's attempts.",
        [
            (m["model"], [(f"o-{o}", n) for o, n in zip(Outcome, m["counts"], strict=True)])
            for m in models
        ],
        [o.label for o in Outcome],
    )
    upstream_hist = rollups.hist(attempts)

    # Served by, per strategy (delivered requests only; failures beside).
    served = defaultdict(lambda: defaultdict(int))
    failed_by_strategy = defaultdict(int)
    for r in requests:
        if r["status"] == "succeeded":
            served[r["strategy"]][r["served_model"]] += r["count"]
        elif r["status"] == "failed":
            failed_by_strategy[r["strategy"]] += r["count"]
    served_models = sorted({m for s in served.values() for m in s})
    served_rows = [
        {
            "strategy": strategy,
            "values": [served[strategy].get(m, 0) for m in served_models],
            "failed": failed_by_strategy[strategy],
            "link": _admin_link("generationrequest", strategy=strategy, **finished),
        }
        for strategy in sorted(set(served) | set(failed_by_strategy))
    ]

    context = {
        "window": window,
        "previous": prev,
        "tiles": tiles,
        "before": before,
        "mix_time": mix_time,
        "models": models,
        "outcomes": list(Outcome),
        "mix_model_svg": mix_model_svg,
        "upstream": {"p50": _pct(upstream_hist, 0.5), "p95": _pct(upstream_hist, 0.95)},
        "served_models": served_models,
        "served_rows": served_rows,
        "served_svg": svg.stacked_bars(
            "Served by, per strategy",
            "One bar per strategy: the models that delivered its requests.",
            [
                (row["strategy"], [(f"m-{i}", v) for i, v in enumerate(row["values"])])
                for row in served_rows
            ],
            served_models,
        ),
        "links": {
            "attempts": _admin_link("attempt", **since),
            "requests": _admin_link("generationrequest", **finished),
            "failed_requests": _admin_link("generationrequest", status="failed", **finished),
            "fell_back": _admin_link("generationrequest", fell_back="1", **finished),
        },
        "heatmap": heatmap(now),
        "breakers": sources.breakers(),
        "queues": sources.queues(),
        "quota": _sorted_quota(sources.quota_usage(), sort, user_sort),
        "sort": sort,
        "user_sort": user_sort,
    }
    return context


def heatmap(now: datetime) -> dict:
    """Failure rate by weekday and hour (UTC), learned from the hourly attempt rollups."""
    days = settings.MONITORING_HEATMAP_DAYS
    rows = (
        AttemptRollup.objects.filter(period=Period.HOUR, bucket__gte=now - timedelta(days=days))
        .annotate(wd=ExtractIsoWeekDay("bucket"), hr=ExtractHour("bucket"))
        .values("wd", "hr")
        .annotate(total=Sum("count"), failed=Sum("count", filter=~Q(outcome=Outcome.SUCCESS)))
    )
    grid = [[None] * 24 for _ in range(7)]
    counts = [[(0, 0)] * 24 for _ in range(7)]
    for r in rows:
        d, h = r["wd"] - 1, r["hr"]
        counts[d][h] = (r["failed"] or 0, r["total"])
        grid[d][h] = rate(r["failed"] or 0, r["total"], MIN_REQUESTS)
    return {
        "days": days,
        "svg": svg.heatmap(
            "Failure rate by weekday and hour (UTC)",
            f"Share of failed attempts per weekday and hour over the last {days} days; "
            "darker is worse.",
            grid,
            WEEKDAYS,
        ),
        "rows": [
            {"day": WEEKDAYS[d], "cells": [{"failed": f, "total": t} for f, t in counts[d]]}
            for d in range(7)
        ],
    }


def _sorted_quota(usage, sort, user_sort):
    if usage is None:
        return None
    teams, users = list(usage.get("teams", [])), list(usage.get("users", []))

    def order(rows, key, allowed, default):
        # "-field" sorts descending; an unknown field falls back to the default.
        field, desc = key.lstrip("-"), key.startswith("-")
        if field not in allowed:
            field, desc = default, True
        if field in ("team", "user"):
            return sorted(rows, key=lambda r: str(r.get(field) or "").lower(), reverse=desc)
        return sorted(rows, key=lambda r: r.get(field) or 0, reverse=desc)

    return {
        "teams": order(teams, sort, QUOTA_SORTS, "percent"),
        "users": order(users, user_sort, USER_SORTS, "images_month"),
    }
