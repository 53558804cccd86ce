"""The refusal a submission over a limit gets, and how amounts read."""

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from django.utils import timezone

from quotas.periods import format_reset


def format_amount(value, unit: str) -> str:
    """An amount as people read it: "$12.50" in USD, the bare number for images."""
    return f"${Decimal(value):.2f}" if unit == "USD" else str(value)


@dataclass
class QuotaExceeded(Exception):
    limit: str  # which limit, e.g. "images per day"
    used: str  # current use (charged + reserved in flight), a number without its unit
    allowed: str  # the limit, a number without its unit
    resets_at: datetime | None
    code: str = ""  # "images_per_day", "images_per_month", "monthly_budget", "member_daily_cap"
    unit: str = "images"  # "images" or "USD"
    requested: str = ""  # what the refused submission asked for, same unit

    def __str__(self):
        whose = "Your own" if self.code == "member_daily_cap" else "Your team's"
        of = f"{self._amount(self.used)} of {self._amount(self.allowed)}{self._unit(2)}"
        left = Decimal(self.allowed) - Decimal(self.used)
        if self.requested and left > 0:
            state = (
                f"has {self._amount(left)}{self._unit(left)} left ({of} used), not enough for "
                f"the {self._amount(self.requested)} this submission asks for"
            )
        else:
            state = f"is used up ({of})"
        when = f" It resets at {format_reset(self.resets_at)}." if self.resets_at else ""
        return f"{whose} {self.limit} quota {state}.{when}"

    def _amount(self, value) -> str:
        return format_amount(value, self.unit)

    def _unit(self, count) -> str:
        if self.unit == "USD":
            return ""
        return " image" if count == 1 else " images"

    def retry_after_s(self, now: datetime | None = None) -> float:
        """Seconds until the limit resets (0 when it has no reset time)."""
        if self.resets_at is None:
            return 0.0
        return max(0.0, (self.resets_at - (now or timezone.now())).total_seconds())

    def to_dict(self) -> dict:
        """JSON-safe details for the API's 429. `quota` repeats `code`, for callers whose
        envelope uses `code` for the error kind."""
        return {
            "limit": self.limit,
            "code": self.code,
            "quota": self.code,
            "unit": self.unit,
            "used": self.used,
            "allowed": self.allowed,
            "requested": self.requested,
            "resets_at": self.resets_at.isoformat() if self.resets_at else None,
        }
