"""Rollups of the attempt and request logs, and the history of alerts.

The monitoring page, the alerts and /metrics read pre-aggregated rows (per minute and
per hour, with latency histograms as plain integer columns so that the database can sum
them) instead of scanning the raw logs, which keeps them fast as the logs grow and lets
old raw attempts be pruned without losing the numbers.
"""

from django.db import models
from django.db.models import Q
from django.utils import timezone

# Upper bounds (ms) of the latency histograms; a last, open bucket takes the rest. They
# cover a fast Flash call (a second or two) up to Pro's overloaded minutes.
LATENCY_BOUNDS_MS = (
    500,
    1_000,
    2_000,
    5_000,
    10_000,
    15_000,
    20_000,
    30_000,
    45_000,
    60_000,
    90_000,
    120_000,
    180_000,
    300_000,
    600_000,
)
HIST_FIELDS = tuple(f"h{i:02}" for i in range(len(LATENCY_BOUNDS_MS) + 1))


class Period(models.TextChoices):
    MINUTE = "minute", "Minute"
    HOUR = "hour", "Hour"


class AttemptRollup(models.Model):
    """Attempts that started in one bucket, per model and outcome (counted per attempt)."""

    period = models.CharField(max_length=6, choices=Period.choices)
    bucket = models.DateTimeField()
    model = models.CharField(max_length=80)
    outcome = models.CharField(max_length=20)
    count = models.PositiveIntegerField(default=0)
    # Attempts with a 503 (overloaded or unavailable) are an alert rule of their own.
    http_503 = models.PositiveIntegerField(default=0)
    latency_count = models.PositiveIntegerField(default=0)
    latency_sum_ms = models.BigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["period", "bucket", "model", "outcome"], name="attempt_rollup_key"
            ),
        ]
        # The unique constraint's index serves every window query (period, bucket range).

    def __str__(self):
        return f"{self.period} {self.bucket:%Y-%m-%d %H:%M} {self.model} {self.outcome}"


class RequestRollup(models.Model):
    """Requests that finished in one bucket (counted once per request, whatever the
    number of attempts), per strategy, final status, served model and fallback."""

    period = models.CharField(max_length=6, choices=Period.choices)
    bucket = models.DateTimeField()
    strategy = models.CharField(max_length=20)
    status = models.CharField(max_length=10)
    served_model = models.CharField(max_length=80, blank=True)
    fell_back = models.BooleanField(default=False)
    count = models.PositiveIntegerField(default=0)
    # Time to image (created -> finished) of succeeded requests; queue wait (created ->
    # started) lives in a second histogram with the same bounds.
    tti_count = models.PositiveIntegerField(default=0)
    tti_sum_ms = models.BigIntegerField(default=0)
    wait_count = models.PositiveIntegerField(default=0)
    wait_sum_ms = models.BigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["period", "bucket", "strategy", "status", "served_model", "fell_back"],
                name="request_rollup_key",
            ),
        ]

    def __str__(self):
        return f"{self.period} {self.bucket:%Y-%m-%d %H:%M} {self.strategy} {self.status}"


# The histogram columns, one per bucket: summable by the database (a JSON list is not).
for _name in HIST_FIELDS:
    AttemptRollup.add_to_class(_name, models.PositiveIntegerField(default=0))
    RequestRollup.add_to_class(f"tti_{_name}", models.PositiveIntegerField(default=0))
    RequestRollup.add_to_class(f"wait_{_name}", models.PositiveIntegerField(default=0))


class RollupCursor(models.Model):
    """How far a log has been rolled up: every bucket before `upto` is in the rollups.

    Its row is locked while a rollup runs, so two cron processes never rebuild the same
    buckets at once."""

    name = models.CharField(max_length=20, primary_key=True)
    upto = models.DateTimeField()

    def __str__(self):
        return f"{self.name} up to {self.upto:%Y-%m-%d %H:%M}"


class Alert(models.Model):
    """One episode of an alert rule for one subject (a model, a team...): opened when the
    rule starts firing, resolved when it stops; rows are kept as the alert history."""

    class Severity(models.TextChoices):
        WARNING = "warning", "Warning"
        CRITICAL = "critical", "Critical"

    rule = models.CharField(max_length=40)
    subject = models.CharField(max_length=120, blank=True)
    severity = models.CharField(max_length=10, choices=Severity.choices, default=Severity.WARNING)
    message = models.CharField(max_length=500)
    details = models.JSONField(default=dict, blank=True)
    started = models.DateTimeField(default=timezone.now)
    last_seen = models.DateTimeField(default=timezone.now)
    resolved = models.DateTimeField(null=True, blank=True)
    notified = models.BooleanField(default=False)

    class Meta:
        ordering = ["-started"]
        constraints = [
            # De-duplication: at most one open episode per rule and subject, also when
            # two evaluators race.
            models.UniqueConstraint(
                fields=["rule", "subject"],
                condition=Q(resolved__isnull=True),
                name="alert_one_open",
            ),
        ]
        indexes = [
            # The banner on every staff page: open alerts.
            models.Index(fields=["resolved"], name="alert_resolved"),
        ]

    def __str__(self):
        return f"{self.rule} {self.subject}: {self.message}"

    @property
    def is_active(self) -> bool:
        return self.resolved is None
