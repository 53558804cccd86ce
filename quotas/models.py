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
