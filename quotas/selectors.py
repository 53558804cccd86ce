"""Read-only views of quota use: the quota pages, the prompt page's partial and the
monitoring overview. Nothing here writes.

Use is counted from the ledger alone (quotas.models.UsageEntry), never from the
generator's requests: an image counts for the day and month it was admitted in
(`admitted`), from its reservation until it is refunded; while in flight at its
worst-case price, once charged at the served model's price.
"""

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from django.conf import settings
from django.db.models import DecimalField, F, IntegerField, Q, Sum, Value
from django.db.models.functions import Coalesce

from accounts.models import Team, User
from quotas.errors import format_amount
from quotas.models import UsageEntry
from quotas.periods import Periods, format_reset, periods

ZERO = Decimal(0)
_MONEY = DecimalField(max_digits=14, decimal_places=4)

_RESERVED = Q(kind=UsageEntry.Kind.RESERVE)
_REFUNDED = Q(kind=UsageEntry.Kind.REFUND)
_SETTLED = Q(kind__in=[UsageEntry.Kind.CHARGE, UsageEntry.Kind.REFUND])


def _images(where: Q):
    return Coalesce(Sum("images", filter=where), Value(0), output_field=IntegerField())


def _usd(expression, where: Q | None = None):
    return Coalesce(
        Sum(expression, filter=where, output_field=_MONEY), Value(ZERO), output_field=_MONEY
    )


def _use(p: Periods, where: Q | None = None) -> dict:
    """Images today, images this month and the month's cost, as aggregates over the
    month's entries (the day is inside the month), or over those matching `where`.

    Images count from their reservation and stop counting when refunded. The cost is
    what was reserved, less what settlements released, plus what charges cost:
    Σ(amount_usd − reserved_usd) over every kind (a reservation's reserved_usd is 0, a
    refund's amount_usd is 0)."""
    where = where or Q()
    today = where & Q(admitted__gte=p.day_start)
    return {
        "images_today": _images(today & _RESERVED) - _images(today & _REFUNDED),
        "images_month": _images(where & _RESERVED) - _images(where & _REFUNDED),
        "cost_month": _usd(F("amount_usd") - F("reserved_usd"), where or None),
    }


def _in_flight(p: Periods, where: Q | None = None) -> dict:
    """What of the use is reserved by requests not settled yet."""
    where = where or Q()
    today = where & Q(admitted__gte=p.day_start)
    return {
        "flight_today": _images(today & _RESERVED) - _images(today & _SETTLED),
        "flight_month": _images(where & _RESERVED) - _images(where & _SETTLED),
        "flight_cost_month": _usd("amount_usd", where & _RESERVED)
        - _usd("reserved_usd", where or None),
    }


# Use of a team or member with no entry this month.
_NO_USE = {"images_today": 0, "images_month": 0, "cost_month": ZERO}


def _usage_aggregates(p: Periods, *, user=None) -> dict:
    """The team's use and what of it is in flight; with `user`, theirs too (`my_…`)."""
    aggregates = _use(p) | _in_flight(p)
    if user is not None:
        mine = Q(user=user)
        aggregates |= {f"my_{name}": value for name, value in _use(p, mine).items()}
        aggregates["my_flight_today"] = _in_flight(p, mine)["flight_today"]
    return aggregates


def _month_entries(p: Periods):
    # Served by usage_team_admitted for one team, by usage_admitted for all of them.
    return UsageEntry.objects.filter(admitted__gte=p.month_start, admitted__lt=p.month_end)


def _money(row: dict) -> dict:
    """Decimal sums to 4 places: SQLite sums decimals as floats."""
    return {
        k: v.quantize(Decimal("0.0001")) if isinstance(v, Decimal) else v for k, v in row.items()
    }


def team_usage(team, user, p: Periods) -> dict:
    """The team's use this day and month (and the member's, `my_…`), with what is in
    flight: one aggregate query over the team's entries of the month."""
    return _money(_month_entries(p).filter(team=team).aggregate(**_usage_aggregates(p, user=user)))


def counted_use(team_id, since: datetime, until: datetime, *, user_id=None):
    """(images, cost) of the team's (or one member's) entries admitted in [since, until):
    what a running counter starts from (services._seed)."""
    entries = UsageEntry.objects.filter(team_id=team_id, admitted__gte=since, admitted__lt=until)
    if user_id is not None:
        entries = entries.filter(user_id=user_id)
    row = _money(
        entries.aggregate(
            images=_images(_RESERVED) - _images(_REFUNDED),
            cost=_usd(F("amount_usd") - F("reserved_usd")),
        )
    )
    return row["images"], row["cost"]


def _percent(total, limit) -> float | None:
    if limit is None:
        return None
    if not limit:
        return 100.0
    return round(float(total) * 100 / float(limit), 1)


@dataclass
class QuotaLine:
    """One limit as the quota page shows it."""

    code: str
    label: str
    unit: str  # "images" or "USD"
    used: int | Decimal  # charged
    in_flight: int | Decimal  # reserved by requests not finished yet
    limit: int | Decimal | None  # None: unlimited
    resets_at: datetime
    warning_percent: int = 80

    @property
    def total(self):
        return self.used + self.in_flight

    @property
    def percent(self) -> float | None:
        return _percent(self.total, self.limit)

    @property
    def bar_percent(self) -> int:
        """For a meter: 0-100."""
        return min(100, int(self.percent or 0))

    @property
    def left(self):
        return None if self.limit is None else max(self.limit - self.total, 0)

    @property
    def warning(self) -> bool:
        return self.percent is not None and self.percent >= self.warning_percent

    @property
    def exceeded(self) -> bool:
        return self.limit is not None and self.total >= self.limit

    @property
    def resets_label(self) -> str:
        return format_reset(self.resets_at)

    def amount(self, value) -> str:
        return "unlimited" if value is None else format_amount(value, self.unit)

    @property
    def used_label(self) -> str:
        return self.amount(self.used)

    @property
    def in_flight_label(self) -> str:
        return self.amount(self.in_flight)

    @property
    def limit_label(self) -> str:
        return self.amount(self.limit)

    @property
    def left_label(self) -> str:
        return self.amount(self.left)


@dataclass
class MemberUse:
    images_today: int
    images_month: int
    cost_month: Decimal
    in_flight_today: int
    daily_cap: int | None


@dataclass
class QuotaSummary:
    team: object
    time_zone: str
    periods: Periods
    lines: list[QuotaLine] = field(default_factory=list)
    mine: MemberUse | None = None

    @property
    def limited(self) -> list[QuotaLine]:
        return [line for line in self.lines if line.limit is not None]

    @property
    def warning(self) -> bool:
        return any(line.warning for line in self.lines)

    @property
    def blocked(self) -> QuotaLine | None:
        """The limit that refuses the next image, if any (the one that lasts longest)."""
        full = [line for line in self.lines if line.exceeded]
        return max(full, key=lambda line: line.resets_at) if full else None

    @property
    def images_left(self) -> int | None:
        """Images the member can still ask for today (None: no image limit applies)."""
        lefts = [
            line.left for line in self.lines if line.unit == "images" and line.limit is not None
        ]
        return min(lefts) if lefts else None


def quota_summary(team, user, now: datetime | None = None) -> QuotaSummary:
    """The team's quotas with the member's own use, for the quota page and the prompt
    page's `{% include "quotas/partials/quota_remaining.html" %}` (context `quota`)."""
    p = periods(now)
    used = team_usage(team, user, p)
    warn = settings.QUOTA_WARNING_PERCENT

    def line(code, label, unit, total, flight, limit, resets_at):
        return QuotaLine(code, label, unit, total - flight, flight, limit, resets_at, warn)

    lines = [
        line("images_per_day", "Images today", "images", used["images_today"],
             used["flight_today"], team.images_per_day, p.day_end),
        line("images_per_month", "Images this month", "images", used["images_month"],
             used["flight_month"], team.images_per_month, p.month_end),
        line("monthly_budget", "Spend this month", "USD", used["cost_month"],
             used["flight_cost_month"], team.monthly_budget_usd, p.month_end),
    ]  # fmt: skip
    if team.member_daily_cap is not None:
        lines.append(
            line("member_daily_cap", "Your images today", "images", used["my_images_today"],
                 used["my_flight_today"], team.member_daily_cap, p.day_end)
        )  # fmt: skip
    mine = MemberUse(
        images_today=used["my_images_today"],
        images_month=used["my_images_month"],
        cost_month=used["my_cost_month"],
        in_flight_today=used["my_flight_today"],
        daily_cap=team.member_daily_cap,
    )
    return QuotaSummary(
        team=team, time_zone=settings.QUOTA_TIME_ZONE, periods=p, lines=lines, mine=mine
    )


def member_usage(team, now: datetime | None = None) -> list[dict]:
    """Each member's use this day and month (owners first), for the owner's breakdown.
    Former members who still have use this month are listed too, marked `former`."""
    p = periods(now)
    rows = {
        row["user_id"]: _money(row)
        for row in _month_entries(p)
        .filter(team=team, user__isnull=False)
        .values("user_id")
        .annotate(**_use(p), in_flight=_in_flight(p)["flight_month"])
    }
    empty = _NO_USE | {"in_flight": 0}
    result = []
    for membership in team.members():
        use = rows.pop(membership.user_id, empty)
        result.append(_member_row(membership.user, membership.get_role_display(), use, team))
    if rows:
        for former in User.objects.filter(pk__in=rows).order_by("email"):
            result.append(_member_row(former, "Former member", rows[former.pk], team))
    return result


def _member_row(user, role, use, team) -> dict:
    cap = team.member_daily_cap
    return {
        "user": user,
        "role": role,
        "images_today": use["images_today"],
        "images_month": use["images_month"],
        "cost_month": use["cost_month"],
        "in_flight": use["in_flight"],
        "daily_cap": cap,
        "cap_percent": _percent(use["images_today"], cap),
        "former": role == "Former member",
    }


def ledger(team, *, user=None, kind: str | None = None, since=None, until=None):
    """The team's ledger entries, newest first, optionally for one member, kind or
    time range [since, until)."""
    entries = UsageEntry.objects.filter(team=team).select_related("user")
    if user is not None:
        entries = entries.filter(user=user)
    if kind:
        entries = entries.filter(kind=kind)
    if since is not None:
        entries = entries.filter(created__gte=since)
    if until is not None:
        entries = entries.filter(created__lt=until)
    return entries.order_by("-created", "-id")


def usage_overview(now: datetime | None = None) -> dict:
    """Quota use of every team and user with use this month (and every team with a
    limit), for the monitoring page; three queries whatever the number of teams."""
    p = periods(now)
    sums = _use(p)
    month = _month_entries(p)
    by_team = {row["team_id"]: _money(row) for row in month.values("team_id").annotate(**sums)}
    limited = Q(images_per_day__isnull=False) | Q(images_per_month__isnull=False)
    limited |= Q(monthly_budget_usd__isnull=False)
    teams = Team.objects.filter(Q(pk__in=list(by_team)) | limited).only(
        "id", "name", "images_per_day", "images_per_month", "monthly_budget_usd"
    )
    team_rows = []
    for team in teams:
        use = by_team.get(team.pk, _NO_USE)
        shares = [
            s
            for s in (
                _percent(use["images_today"], team.images_per_day),
                _percent(use["images_month"], team.images_per_month),
                _percent(use["cost_month"], team.monthly_budget_usd),
            )
            if s is not None
        ]
        team_rows.append(
            {
                "team_id": team.pk,
                "team": team.name,
                "images_today": use["images_today"],
                "images_month": use["images_month"],
                "cost_month": use["cost_month"],
                "images_per_day": team.images_per_day,
                "images_per_month": team.images_per_month,
                "monthly_budget_usd": team.monthly_budget_usd,
                "percent": max(shares) if shares else None,
            }
        )
    team_rows.sort(key=lambda r: (-(r["percent"] or 0), -r["images_month"], r["team"]))
    user_rows = [
        {
            "user_id": row["user_id"],
            "user": row["user__email"],
            "team_id": row["team_id"],
            "team": row["team__name"],
            "images_today": row["images_today"],
            "images_month": row["images_month"],
            "cost_month": row["cost_month"],
        }
        for row in map(
            _money,
            month.filter(user__isnull=False)
            .values("user_id", "user__email", "team_id", "team__name")
            .annotate(**sums)
            .order_by("-images_month", "user__email"),
        )
    ]
    return {"teams": team_rows, "users": user_rows}
