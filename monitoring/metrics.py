"""/metrics in the Prometheus text format, computed from the database and Redis at
scrape time by a custom collector: every web process answers the same numbers, however
many workers on however many machines did the work (in-process counters would only see
their own process).

Counters are lifetime totals from the hourly rollups plus the raw tail; they only grow
(raw attempts are pruned only after they are in the rollups, which are kept for good).
"""

import hmac
from collections import defaultdict

from django.conf import settings
from django.db.models import Count
from django.http import HttpResponse
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.registry import CollectorRegistry

from accounts.bearer import bearer
from generator.models import ACTIVE_STATUSES, GenerationRequest
from monitoring import rollups, sources
from monitoring.models import LATENCY_BOUNDS_MS, Alert

BREAKER_STATES = ("closed", "open", "half_open")


def _buckets(row_hist: list[int]) -> list[tuple[str, int]]:
    """Prometheus histogram buckets are cumulative, bounded in seconds, ending at +Inf."""
    out, running = [], 0
    for bound, n in zip((*LATENCY_BOUNDS_MS, None), row_hist, strict=True):
        running += n
        out.append(("+Inf" if bound is None else str(bound / 1000), running))
    return out


def _add_histograms(family, rows_by_label: dict, prefix: str, sum_field: str) -> None:
    """One histogram per label from the rollup rows grouped under it."""
    for label, rows in sorted(rows_by_label.items()):
        total_ms = sum(r[sum_field] or 0 for r in rows)
        family.add_metric([label], _buckets(rollups.hist(rows, prefix)), total_ms / 1000)


class SteadyshotCollector:
    def collect(self):
        yield from self._attempts()
        yield from self._requests()
        yield from self._live()

    def _attempts(self):
        total = CounterMetricFamily(
            "steadyshot_attempts",
            "Upstream calls by model and outcome",
            labels=["model", "outcome"],
        )
        latency = HistogramMetricFamily(
            "steadyshot_attempt_latency_seconds",
            "Upstream latency per attempt, by model",
            labels=["model"],
        )
        counts, per_model = defaultdict(int), defaultdict(list)
        for r in rollups.attempts_in(None, None):
            counts[(r["model"], r["outcome"])] += r["count"]
            per_model[r["model"]].append(r)
        for (model, outcome), n in sorted(counts.items()):
            total.add_metric([model, outcome], n)
        _add_histograms(latency, per_model, "", "latency_sum_ms")
        yield total
        yield latency

    def _requests(self):
        finished = CounterMetricFamily(
            "steadyshot_requests_finished",
            "Requests that ended, by strategy, status and served model (counted once)",
            labels=["strategy", "status", "served_model"],
        )
        fallbacks = CounterMetricFamily(
            "steadyshot_fallbacks",
            "Delivered requests served by a model other than the chain's first",
            labels=["strategy", "served_model"],
        )
        tti = HistogramMetricFamily(
            "steadyshot_time_to_image_seconds",
            "Submission to stored image, delivered requests, by strategy",
            labels=["strategy"],
        )
        counts, falls = defaultdict(int), defaultdict(int)
        per_strategy = defaultdict(list)
        for r in rollups.requests_in(None, None):
            counts[(r["strategy"], r["status"], r["served_model"])] += r["count"]
            if r["status"] == "succeeded":
                if r["fell_back"]:
                    falls[(r["strategy"], r["served_model"])] += r["count"]
                per_strategy[r["strategy"]].append(r)
        for labels, n in sorted(counts.items()):
            finished.add_metric(list(labels), n)
        for labels, n in sorted(falls.items()):
            fallbacks.add_metric(list(labels), n)
        _add_histograms(tti, per_strategy, "tti_", "tti_sum_ms")
        yield finished
        yield fallbacks
        yield tti

        active = GaugeMetricFamily(
            "steadyshot_requests_active", "Requests not finished yet, by status", labels=["status"]
        )
        by_status = dict(
            GenerationRequest.objects.filter(status__in=ACTIVE_STATUSES)
            .values_list("status")
            .annotate(n=Count("pk"))
        )
        for status in ACTIVE_STATUSES:
            active.add_metric([str(status)], by_status.get(status, 0))
        yield active

        alerts = GaugeMetricFamily(
            "steadyshot_alerts_active", "Open alerts by rule", labels=["rule"]
        )
        for rule, n in (
            Alert.objects.filter(resolved=None).values_list("rule").annotate(n=Count("pk"))
        ):
            alerts.add_metric([rule], n)
        yield alerts

    def _live(self):
        up = GaugeMetricFamily(
            "steadyshot_source_up", "Whether a live source could be read", labels=["source"]
        )
        breakers = sources.breakers()
        up.add_metric(["health"], 0 if breakers is None else 1)
        if breakers is not None:
            state = GaugeMetricFamily(
                "steadyshot_breaker_state",
                "Circuit breaker state per model (1 for the current state)",
                labels=["model", "state"],
            )
            quota = GaugeMetricFamily(
                "steadyshot_upstream_quota_used_ratio",
                "Share of the upstream quota in use per model and dimension",
                labels=["model", "dimension"],
            )
            out = GaugeMetricFamily(
                "steadyshot_daily_quota_used_up",
                "1 while the upstream's daily quota of the model is used up (a per-day 429): "
                "it is skipped and requests fall back until the daily reset",
                labels=["model"],
            )
            for b in breakers:
                for s in BREAKER_STATES:
                    state.add_metric([b["model"], s], 1 if b.get("breaker") == s else 0)
                for dim, q in (b.get("quota") or {}).items():
                    if q and q.get("limit"):
                        quota.add_metric([b["model"], dim], q["used"] / q["limit"])
                out.add_metric([b["model"]], 1 if b.get("out_of_quota_until") else 0)
            yield state
            yield quota
            yield out
        queues = sources.queues()
        up.add_metric(["redis"], 0 if queues is None else 1)
        if queues is not None:
            depth = GaugeMetricFamily("steadyshot_queue_depth", "Jobs waiting", labels=["queue"])
            for q in queues["queues"]:
                depth.add_metric([q["name"]], q["depth"])
            yield depth
            yield GaugeMetricFamily(
                "steadyshot_workers", "Live RQ workers", value=queues["workers"]
            )
            calls = queues["calls"]
            yield GaugeMetricFamily(
                "steadyshot_callers", "Live caller processes", value=calls["callers"]
            )
            yield GaugeMetricFamily(
                "steadyshot_calls_in_flight",
                "Upstream calls in flight in the callers",
                value=calls["in_flight"],
            )
            yield GaugeMetricFamily(
                "steadyshot_calls_waiting",
                "Upstream calls waiting for a caller",
                value=calls["waiting"],
            )
        usage = sources.quota_usage()
        up.add_metric(["quotas"], 0 if usage is None else 1)
        if usage is not None:
            # Teams are told apart by id: names are the owners' to choose, and two
            # teams may share one (two users' personal teams, say).
            labels = ["team_id", "team"]
            images = GaugeMetricFamily(
                "steadyshot_team_images_month", "Images this month per team", labels=labels
            )
            percent = GaugeMetricFamily(
                "steadyshot_team_quota_used_percent",
                "Percent of the team's tightest quota used",
                labels=labels,
            )
            for t in usage.get("teams", []):
                names = [str(t["team_id"]), str(t["team"])]
                images.add_metric(names, t.get("images_month") or 0)
                if t.get("percent") is not None:
                    percent.add_metric(names, float(t["percent"]))
            yield images
            yield percent
        yield up


def _authorized(request) -> bool:
    token = settings.METRICS_TOKEN
    credentials = bearer(request)
    if not token or not credentials:
        return False
    return hmac.compare_digest(credentials.encode(), token.encode())


@require_GET
def metrics_view(request):
    if not settings.METRICS_TOKEN:
        return HttpResponse(
            "Metrics are disabled: set METRICS_TOKEN to enable them.\n",
            status=403,
            content_type="text/plain",
        )
    if not _authorized(request):
        response = HttpResponse(
            "Send Authorization: Bearer <METRICS_TOKEN>.\n", status=401, content_type="text/plain"
        )
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SteadyshotCollector())
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
