"""The quota ledger (docs/quotas.md)."""

from django.conf import settings
from django.db import models
from django.utils import timezone


class UsageEntry(models.Model):
    """The quota ledger: one row per reservation, charge and refund, written in the same
    transaction as the change it records, so every number on the quota pages can be
    traced to rows here (docs/quotas.md).

    - reserve: at admission, `images` images at the worst-case price each (`amount_usd` is
      the total reserved); written before the requests exist, so it names no request.
    - charge: one delivered image; `amount_usd` is the price of the model that served it,
      `reserved_usd` the reservation it settles (the difference is released).
    - refund: one image that failed or was canceled; `amount_usd` is 0 and `reserved_usd`
      the reservation released.
    """

    class Kind(models.TextChoices):
        RESERVE = "reserve", "Reserved"
        CHARGE = "charge", "Charged"
        REFUND = "refund", "Refunded"

    team = models.ForeignKey(
        "accounts.Team", on_delete=models.CASCADE, related_name="usage_entries"
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+"
    )
    # The GenerationRequest a charge or refund settles; empty on a reservation, which is
    # written before its requests exist. An id, not a foreign key: quotas knows nothing of
    # the generator, and the ledger outlives requests that are purged.
    request_id = models.UUIDField(null=True, blank=True)
    kind = models.CharField(max_length=10, choices=Kind.choices)
    images = models.PositiveIntegerField()
    amount_usd = models.DecimalField(max_digits=12, decimal_places=4)
    reserved_usd = models.DecimalField(max_digits=12, decimal_places=4, default=0)
    model = models.CharField(max_length=80, blank=True)
    reason = models.CharField(max_length=200, blank=True)
    # When the reservation was made; on a charge or refund, when the request it settles
    # was admitted. Use counts for the day and month of this moment, whenever it settles.
    admitted = models.DateTimeField()
    created = models.DateTimeField(default=timezone.now)

    class Meta:
        verbose_name_plural = "usage entries"
        indexes = [
            # The team's ledger page and audits: a team's entries, newest first.
            models.Index(fields=["team", "-created"], name="usage_team_created"),
            # A team's (or a member's) use this day or month: the quota pages, and the
            # running counters' first value (services._seed).
            models.Index(fields=["team", "admitted"], name="usage_team_admitted"),
            # The monitoring overview: every team's use this month.
            models.Index(fields=["admitted"], name="usage_admitted"),
        ]
        constraints = [
            # A request is settled once: at most one charge or refund row per request.
            # charge() and refund() rely on it for exactly-once (services._settle).
            models.UniqueConstraint(
                fields=["request_id"],
                condition=models.Q(kind__in=["charge", "refund"]),
                name="usage_one_settlement_per_request",
            ),
        ]

    def __str__(self):
        return f"{self.get_kind_display()} {self.images} image(s), ${self.amount_usd}"


class UsageCounter(models.Model):
    """A running total of one team's (or one member's) use in one quota day or month, so
    that admission checks a limit by updating one row instead of summing the ledger.

    Kept only for the limits a team has (services.reserve): the team's day for
    images_per_day, its month for images_per_month and the budget, each member's day for
    member_daily_cap. A row starts from the ledger's sum the first time it is needed
    (services._seed) and moves in the same transaction as every ledger entry after that,
    so it always equals what the selectors count; services.set_limits deletes a team's
    rows, and they start again from the ledger.
    """

    class Period(models.TextChoices):
        DAY = "day", "Day"
        MONTH = "month", "Month"

    team = models.ForeignKey("accounts.Team", on_delete=models.CASCADE, related_name="+")
    # Empty for the whole team's total.
    member = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, null=True, related_name="+"
    )
    period = models.CharField(max_length=5, choices=Period.choices)
    # The day, or the first day of the month, in QUOTA_TIME_ZONE.
    start = models.DateField()
    # Images reserved or charged (refunds taken off).
    images = models.IntegerField(default=0)
    # Reserved in flight at the worst-case price plus charged, in millionths of a dollar:
    # integers stay exact on SQLite, which adds decimals as floats.
    micro_usd = models.BigIntegerField(default=0)

    class Meta:
        constraints = [
            # One row per team and period, and per member and period: admissions of the
            # same team meet on it, and the first one creates it (ON CONFLICT DO NOTHING).
            models.UniqueConstraint(
                fields=["team", "period", "start"],
                condition=models.Q(member=None),
                name="counter_one_per_team_period",
            ),
            models.UniqueConstraint(
                fields=["team", "member", "period", "start"],
                condition=models.Q(member__isnull=False),
                name="counter_one_per_member_period",
            ),
        ]

    def __str__(self):
        return f"{self.period} {self.start}: {self.images} image(s)"
