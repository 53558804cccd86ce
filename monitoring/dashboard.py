"""The numbers of the monitoring page for one window and the one before it.

Counting rules (docs/monitoring.md): requests are counted once, when they finish (delivered rate,
fallback share, time to image, served by); attempts are counted one by one, when they
start (error mix, upstream latency). Rates below a minimum count are not shown.
"""

import math
from collections import defaultdict
from datetime import datetime, timedelta
from urllib.parse import urlencode

from django.conf import settings
from django.db.models import Q, Sum
from django.db.models.functions import ExtractHour, ExtractIsoWeekDay
from django.urls import reverse
from django.utils import timezone

from generator.models import Strategy
from generator.resilience.catalogue import get_catalogue
from generator.resilience.strategies import StrategyName
from generator.resilience.taxonomy import Outcome
from monitoring import economy, rollups, sources, svg
from monitoring.models import LATENCY_BOUNDS_MS, AttemptRollup, Period
from monitoring.stats import WINDOW_LABELS, WINDOWS, Window, percentile, rate

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


def _slot_summary(rows) -> dict:
    """_request_summary()'s request numbers from the lean series rows of one slot."""
    total = sum(r["count"] for r in rows)
    succeeded = [r for r in rows if r["status"] == "succeeded"]
    delivered = sum(r["count"] for r in succeeded)
    fell_back = sum(r["count"] for r in succeeded if r["fell_back"])
    return {
        "requests": total,
        "delivered": delivered,
        "delivered_rate": rate(delivered, total, MIN_REQUESTS),
        "fallback_share": rate(fell_back, delivered, MIN_REQUESTS),
        "tti_p95": _pct(rollups.hist(succeeded, "tti_"), 0.95),
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
    names = ModelNames()
    # Reads of the logs: attempts and requests, this window and the one before, and the
    # lean per-bucket request rows of both for the time series.
    attempts = rollups.attempts_in(window.start, window.end, by_bucket=True)
    prev_attempts = rollups.attempts_in(prev.start, prev.end)
    requests = rollups.requests_in(window.start, window.end)
    prev_requests = rollups.requests_in(prev.start, prev.end)

    # Economy requests wait hours on purpose: counted apart (monitoring/economy.py).
    tiles = _request_summary(_not_economy(requests))
    before = _request_summary(_not_economy(prev_requests))
    attempt_total = sum(r["count"] for r in attempts)
    attempt_failed = sum(r["count"] for r in attempts if r["outcome"] != Outcome.SUCCESS)
    tiles.update(
        attempts=attempt_total,
        attempts_failed=attempt_failed,
        attempt_failure_rate=rate(attempt_failed, attempt_total, MIN_REQUESTS),
        calls_per_image=(attempt_total / tiles["delivered"]) if tiles["delivered"] else None,
    )
    prev_failed = sum(r["count"] for r in prev_attempts if r["outcome"] != Outcome.SUCCESS)
    prev_total = sum(r["count"] for r in prev_attempts)
    before.update(
        attempts=prev_total,
        attempt_failure_rate=rate(prev_failed, prev_total, MIN_REQUESTS),
    )
    since = {"started__gte": _iso(window.start), "started__lt": _iso(window.end)}
    finished = {"finished__gte": _iso(window.start), "finished__lt": _iso(window.end)}
    models = _per_model(attempts, names, since)
    # Every attempt's latency: the models' histograms added up (no second pass).
    upstream_hist = [sum(column) for column in zip(*(m["hist"] for m in models), strict=True)]
    return {
        "window": window,
        "previous": prev,
        "tiles": tiles,
        "before": before,
        "series": _series(
            window,
            rollups.request_series_in(window.start, window.end),
            rollups.request_series_in(prev.start, prev.end),
        ),
        "mix_time": _mix_over_time(window, attempts),
        "models": models,
        "mix_model": _mix_per_model(models),
        "upstream": {"p50": _pct(upstream_hist, 0.5), "p95": _pct(upstream_hist, 0.95)},
        "served": _served(requests, prev_requests, names, finished),
        "economy": economy.summary(window.start, window.end),
        "links": {
            "attempts": _admin_link("attempt", **since),
            "requests": _admin_link("generationrequest", **finished),
            "failed_requests": _admin_link("generationrequest", status="failed", **finished),
            "fell_back": _admin_link("generationrequest", fell_back="1", **finished),
        },
        "heatmap": heatmap(now),
        "breakers": _breakers(sources.breakers(), names, {m["model"] for m in models}),
        "queues": sources.queues(),
        "quota": _sorted_quota(sources.quota_usage(), sort, user_sort),
        "sort": sort,
        "user_sort": user_sort,
    }


def _not_economy(rows):
    return [r for r in rows if r["strategy"] != StrategyName.ECONOMY]


class ModelNames:
    """Display names ("Nano Banana Pro", as everywhere else in the app) and one colour
    class per model, fixed by the catalogue's order so a model keeps its colour from
    window to window and chart to chart."""

    def __init__(self):
        self.catalogue = get_catalogue()
        self.order = list(self.catalogue.models)
        best = max((m.quality_rank for m in self.catalogue.models.values()), default=0)
        # "Pro": the models of the best quality (the preview and the GA release).
        self.best = {m.id for m in self.catalogue.models.values() if m.quality_rank == best}
        self.best_name = self.name(self.catalogue.primary(StrategyName.QUALITY_FIRST).id)

    def name(self, model_id: str) -> str:
        if model_id in self.catalogue.models:
            return self.catalogue[model_id].display_name
        return model_id or "—"

    def css(self, model_id: str) -> str:
        return f"m-{self.order.index(model_id)}" if model_id in self.order else "m-other"

    def rank(self, model_id: str) -> int:
        return self.order.index(model_id) if model_id in self.order else len(self.order)


def _series(window: Window, requests, prev_requests) -> dict:
    """Delivered rate, fallback share and p95 time to image per slot, this window beside
    the previous one (slot i of each is the same offset into its window). A point needs
    MIN_REQUESTS requests, like every rate on the page: sparse slots leave gaps."""
    step = window.series_slot
    n = int(WINDOWS[window.key] / step)
    starts = window.slot_starts(step)[:n]
    fmt = "%H:%M" if step < timedelta(hours=6) else "%a %H:%M"
    labels = [s.strftime(fmt) for s in starts]

    def per_slot(rows, start):
        slots = [[] for _ in range(n)]
        for r in rows:
            i = min(int((r["bucket"] - start) / step), n - 1)
            if i >= 0:
                slots[i].append(r)
        return [_slot_summary(rows) for rows in slots]

    now_slots = per_slot(requests, window.start)
    prev_slots = per_slot(prev_requests, window.previous().start)

    def points(slots, key):
        return [s[key] for s in slots]

    def p95(slots):
        return [s["tti_p95"] if s["delivered"] >= MIN_REQUESTS else None for s in slots]

    def chart(title, desc, now_values, prev_values, top, fmt_value):
        return svg.line_chart(
            title,
            desc,
            labels,
            [
                ("previous window", "s-prev", prev_values),
                ("this window", "s-now", now_values),
            ],
            top,
            fmt_value,
        )

    def pct(v):
        return f"{v:.0%}"

    tti_now, tti_prev = p95(now_slots), p95(prev_slots)
    tti_top = max([v for v in tti_now + tti_prev if v is not None], default=0) or 60_000
    tti_top = math.ceil(tti_top / 10_000) * 10_000  # a round top: 10 s steps

    def secs(ms):
        return f"{ms / 1000:.0f} s"

    per = f"per {duration(step)}"
    return {
        "slot": duration(step),
        "delivered": chart(
            "Delivered rate over time",
            f"Share of finished requests delivered, {per}, this window and the previous one.",
            points(now_slots, "delivered_rate"),
            points(prev_slots, "delivered_rate"),
            1.0,
            pct,
        ),
        "fallback": chart(
            "Fallback share over time",
            f"Share of delivered requests that fell back, {per}, this window and the previous one.",
            points(now_slots, "fallback_share"),
            points(prev_slots, "fallback_share"),
            1.0,
            pct,
        ),
        "tti": chart(
            "Time to image, p95, over time",
            f"95th percentile of submission to stored image, {per}, this window and the previous one.",
            tti_now,
            tti_prev,
            tti_top,
            secs,
        ),
        "rows": [
            {"label": labels[i], "now": now_slots[i], "prev": prev_slots[i]} for i in range(n)
        ],
    }


def duration(step: timedelta) -> str:
    minutes = int(step.total_seconds() // 60)
    if minutes % 60:
        return f"{minutes} min"
    hours = minutes // 60
    return "hour" if hours == 1 else f"{hours} hours"


def _mix_over_time(window: Window, attempts) -> dict:
    """Failed attempts per slot and error class."""
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
    return {
        "outcomes": [{"key": o, "label": o.label, "css": f"o-{o}"} for o in seen],
        "rows": [
            {"label": slot_labels[i], "values": [per_slot[o][i] for o in seen]}
            for i in range(len(slots))
            if any(per_slot[o][i] for o in seen)
        ],
        "svg": svg.stacked_columns(
            "Failed attempts over time by error class",
            f"Stacked columns, one per {duration(window.slot)}, for the last "
            f"{WINDOW_LABELS[window.key]}.",
            slot_labels,
            [(o.label, f"o-{o}", per_slot[o]) for o in seen],
        ),
    }


# The per-model table's columns: what an operator acts on first; every other error
# class is summed under "Other" (the folded breakdown lists each).
MODEL_COLUMNS = (
    ("overloaded", "503", (Outcome.OVERLOADED, Outcome.UNAVAILABLE)),
    ("rate_limited", "429", (Outcome.RATE_LIMITED,)),
    ("blocked", "Blocked by safety filters", (Outcome.BLOCKED,)),
)


def _per_model(attempts, names: ModelNames, since: dict) -> list[dict]:
    by_model = defaultdict(list)
    for r in attempts:
        by_model[r["model"]].append(r)
    models = []
    for model, rows in sorted(by_model.items(), key=lambda item: names.rank(item[0])):
        counts = defaultdict(int)
        for r in rows:
            counts[r["outcome"]] += r["count"]
        total = sum(counts.values())
        failed = total - counts[Outcome.SUCCESS]
        shown = {key: sum(counts[o] for o in outcomes) for key, _, outcomes in MODEL_COLUMNS}
        hist = rollups.hist(rows)
        models.append(
            {
                "model": model,
                "name": names.name(model),
                "css": names.css(model),
                "attempts": total,
                "failed": failed,
                "failure_rate": rate(failed, total, MIN_REQUESTS),
                "columns": [shown[key] for key, _, _ in MODEL_COLUMNS],
                "other": failed - sum(shown.values()),
                "counts": {o: counts[o] for o in Outcome if counts[o]},
                "p50": _pct(hist, 0.5),
                "p90": _pct(hist, 0.9),
                "p95": _pct(hist, 0.95),
                "p99": _pct(hist, 0.99),
                "hist": hist,
                "link": _admin_link("attempt", model=model, **since),
            }
        )
    return models


def _mix_per_model(models: list[dict]) -> dict:
    """Each model's attempts split by outcome, as a labelled bar and a breakdown table
    (outcomes down, models across) listing only the outcomes that happened."""
    seen = [o for o in Outcome if any(o in m["counts"] for m in models)]
    return {
        "outcomes": [{"key": o, "label": o.label, "css": f"o-{o}"} for o in seen],
        "columns": [label for _, label, _ in MODEL_COLUMNS],
        "rows": [
            {
                "label": o.label,
                "css": f"o-{o}",
                "values": [(m["name"], m["counts"].get(o, 0)) for m in models],
            }
            for o in seen
        ],
        "svg": svg.stacked_bars(
            "Attempts per model by outcome",
            "One bar per model (attempts in brackets), split by outcome as shares of that "
            "model's attempts.",
            [
                (m["name"], [(o.label, f"o-{o}", m["counts"].get(o, 0)) for o in seen])
                for m in models
            ],
        ),
    }


def _served(requests, prev_requests, names: ModelNames, finished: dict) -> dict:
    """Per strategy: which models delivered its requests, how often it got the best
    model ("Pro share": does quality-first really get Pro?), and its failures."""

    def tally(rows):
        served, failed = defaultdict(lambda: defaultdict(int)), defaultdict(int)
        for r in rows:
            if r["status"] == "succeeded":
                served[r["strategy"]][r["served_model"]] += r["count"]
            elif r["status"] == "failed":
                failed[r["strategy"]] += r["count"]
        return served, failed

    served, failed = tally(requests)
    prev_served, _ = tally(prev_requests)
    models = sorted({m for s in served.values() for m in s}, key=names.rank)
    labels = dict(Strategy.choices)

    def best_share(counts):
        delivered = sum(counts.values())
        best = sum(n for m, n in counts.items() if m in names.best)
        return best, rate(best, delivered, MIN_REQUESTS)

    rows = []
    for strategy in sorted(set(served) | set(failed)):
        counts = served[strategy]
        best, share = best_share(counts)
        rows.append(
            {
                "strategy": labels.get(strategy, strategy),
                "values": [counts.get(m, 0) for m in models],
                "delivered": sum(counts.values()),
                "best": best,
                "best_share": share,
                "prev_best_share": best_share(prev_served[strategy])[1],
                "failed": failed[strategy],
                "link": _admin_link("generationrequest", strategy=strategy, **finished),
            }
        )
    return {
        "best_name": names.best_name,
        "models": [{"label": names.name(m), "css": names.css(m)} for m in models],
        "rows": rows,
        "svg": svg.stacked_bars(
            "Served by, per strategy",
            "One bar per strategy (delivered requests in brackets), split by the model "
            "that delivered them.",
            [
                (
                    row["strategy"],
                    [
                        (names.name(m), names.css(m), v)
                        for m, v in zip(models, row["values"], strict=True)
                    ],
                )
                for row in rows
            ],
        ),
    }


def _breakers(rows, names: ModelNames, called: set[str]):
    """Each model's breaker and quota headroom: the models called in the window first
    (catalogue order), then, folded on the page, those that were not. A model skipped
    (its breaker not closed, or its daily quota used up) is never folded: it is why
    requests fall back, and it goes uncalled for as long as it is skipped."""
    if rows is None:
        return None
    for row in rows:
        row["name"] = names.name(row["model"])
    ordered = sorted(rows, key=lambda r: names.rank(r["model"]))

    def shown(r):
        return r["model"] in called or r["breaker"] != "closed" or r.get("out_of_quota_until")

    return {
        "active": [r for r in ordered if shown(r)],
        "idle": [r for r in ordered if not shown(r)],
        "window_size": max((r.get("window_size") or 0 for r in rows), default=0),
    }


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
        "days_short": WEEKDAYS,
        # Hours down and days across: eight columns fit a phone, 25 would not.
        "rows": [
            {
                "hour": f"{h:02}:00",
                "cells": [{"failed": counts[d][h][0], "total": counts[d][h][1]} for d in range(7)],
            }
            for h in range(24)
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
