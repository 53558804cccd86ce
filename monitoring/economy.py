"""Economy requests, counted apart (docs/monitoring.md): they wait hours on purpose, so
their time to image would swamp the page's tiles and series, and their Batch mode
lines are not calls. Here: how the economy requests that finished in the window were
served (Batch mode, off-peak, or directly after leaving Batch mode), how many met their
deadline, what they cost against the direct price, and what waits now."""

from datetime import datetime

from django.db.models import Count, F, Q, Sum

from generator.models import GenerationRequest, Route, Status, UpstreamBatch
from generator.resilience.strategies import StrategyName
from monitoring.stats import rate

MIN_REQUESTS = 5


def summary(start: datetime, end: datetime) -> dict:
    finished = GenerationRequest.objects.filter(
        strategy=StrategyName.ECONOMY, finished__gte=start, finished__lt=end
    )
    by = {
        (row["route"], row["status"]): row
        for row in finished.values("route", "status").annotate(
            count=Count("pk"),
            on_time=Count("pk", filter=Q(finished__lte=F("deadline"))),
            cost=Sum("cost_usd"),
        )
    }
    total = sum(row["count"] for row in by.values())
    delivered = {route: by.get((route, Status.SUCCEEDED), {}) for route in Route.values}
    done = sum(row.get("count", 0) for row in delivered.values())
    on_time = sum(row.get("on_time", 0) for row in delivered.values())
    waiting = dict(
        GenerationRequest.objects.filter(status__in=[Status.SCHEDULED, Status.BATCHED])
        .values_list("status")
        .annotate(n=Count("pk"))
    )
    batches = dict(
        UpstreamBatch.objects.filter(created__gte=start, created__lt=end)
        .values_list("state")
        .annotate(n=Count("pk"))
    )
    lines = UpstreamBatch.objects.filter(created__gte=start, created__lt=end).aggregate(
        sent=Sum("lines"), delivered=Sum("delivered"), failed=Sum("failed_lines")
    )
    return {
        "requests": total,
        "delivered": done,
        "delivered_rate": rate(done, total, MIN_REQUESTS),
        "via": [
            {"route": Route(route).label, "count": row.get("count", 0)}
            for route, row in delivered.items()
        ],
        "failed": sum(row["count"] for (_, status), row in by.items() if status == Status.FAILED),
        "canceled": sum(
            row["count"] for (_, status), row in by.items() if status == Status.CANCELED
        ),
        "on_time": on_time,
        "on_time_rate": rate(on_time, done, MIN_REQUESTS),
        "cost": sum((row.get("cost") or 0 for row in delivered.values()), 0),
        "scheduled_now": waiting.get(Status.SCHEDULED, 0),
        "batched_now": waiting.get(Status.BATCHED, 0),
        "batches": [
            {"state": UpstreamBatch.State(state).label, "count": n}
            for state, n in sorted(batches.items())
        ],
        "lines": {key: value or 0 for key, value in lines.items()},
    }
