"""Team and member quotas: reserve at admission, charge or refund once.

Limits live on the Team (images per day, images per month, a monthly budget in USD and a
per-member daily cap; empty is unlimited). Days and months run in QUOTA_TIME_ZONE.

Use is counted from the requests themselves, the source of truth: a request counts for
the day and month it was admitted in, while its quota is reserved (in flight, at its
worst-case price) or charged (at the served model's price); refunded requests count for
nothing. The UsageEntry ledger records every reservation, charge and refund, so each
number can be traced.

reserve() runs inside the admission transaction, before the requests are created, and
holds a row lock on the team (Postgres `SELECT … FOR NO KEY UPDATE`; SQLite's IMMEDIATE write
transaction serialises writers anyway), so concurrent submissions are checked one after
the other and a limit is never exceeded. charge() and refund() flip
GenerationRequest.quota_state with a filtered UPDATE, so each happens at most once
whatever retries, duplicate jobs or reconcilers do; the ledger row is written in the same
transaction.
"""

import calendar
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from functools import cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import connection, transaction
from django.db.models import Case, Count, DecimalField, F, Q, Sum, Value, When
from django.db.models.functions import Coalesce
from django.utils import timezone

ZERO = Decimal(0)
CENT = Decimal("0.01")


# --- Periods ------------------------------------------------------------------------------


@cache
def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ImproperlyConfigured(
            f"QUOTA_TIME_ZONE must be an IANA time zone such as UTC or Europe/Paris; got {name!r}"
        ) from None


def quota_zone() -> ZoneInfo:
    return _zone(settings.QUOTA_TIME_ZONE)


def _midnight(day: date) -> datetime:
    # A wall-clock midnight in the quota zone; zoneinfo resolves DST gaps and folds.
    return datetime.combine(day, time.min, tzinfo=quota_zone())


@dataclass(frozen=True)
class Periods:
    """The current quota day and month: [start, end) in the quota time zone."""

    now: datetime
    day_start: datetime
    day_end: datetime
    month_start: datetime
    month_end: datetime


def periods(now: datetime | None = None) -> Periods:
    now = now or timezone.now()
    local = now.astimezone(quota_zone()).date()
    first = local.replace(day=1)
    days_in_month = calendar.monthrange(first.year, first.month)[1]
    return Periods(
        now=now,
        day_start=_midnight(local),
        day_end=_midnight(local + timedelta(days=1)),
        month_start=_midnight(first),
        month_end=_midnight(first + timedelta(days=days_in_month)),
    )


# --- Errors -------------------------------------------------------------------------------


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


def format_amount(value, unit: str) -> str:
    """An amount as people read it: "$12.50" in USD, the bare number for images."""
    return f"${Decimal(value):.2f}" if unit == "USD" else str(value)


def format_reset(moment: datetime) -> str:
    """A reset time as people read it, in the quota time zone: "30 Nov 2026, 00:00 UTC"."""
    local = moment.astimezone(quota_zone())
    return f"{local:%-d %b %Y, %H:%M} {local.tzname()}"


# --- Counting -----------------------------------------------------------------------------


def _counted():
    """Requests whose quota counts: reserved (in flight) or charged."""
    from generator.models import QuotaState

    return Q(quota_state__in=[QuotaState.RESERVED, QuotaState.CHARGED])


def _cost():
    """What a request weighs against the budget: its price once charged, its worst-case
    reservation while in flight."""
    from generator.models import QuotaState

    return Case(
        When(quota_state=QuotaState.CHARGED, then=Coalesce("cost_usd", Value(ZERO))),
        default=F("reserved_usd"),
        output_field=DecimalField(max_digits=14, decimal_places=4),
    )


def _in_flight():
    from generator.models import QuotaState

    return Q(quota_state=QuotaState.RESERVED)


def _use(p: Periods, where: Q | None = None) -> dict:
    """Images today, images this month and the month's cost: aggregates over the month's
    counted requests (the day is inside the month), or over those matching `where`."""
    return {
        "images_today": Count("pk", filter=Q(created__gte=p.day_start) & (where or Q())),
        "images_month": Count("pk", filter=where),
        "cost_month": Coalesce(
            Sum(_cost(), filter=where), Value(ZERO), output_field=DecimalField()
        ),
    }


# Use of a team or member with no counted request this month.
_NO_USE = {"images_today": 0, "images_month": 0, "cost_month": ZERO}


def _usage_aggregates(p: Periods, *, user=None) -> dict:
    """The team's use and what of it is in flight; with `user`, theirs too (`my_…`)."""
    today = Q(created__gte=p.day_start)
    flight = _in_flight()
    aggregates = _use(p) | {
        "flight_today": Count("pk", filter=today & flight),
        "flight_month": Count("pk", filter=flight),
        "flight_cost_month": Coalesce(
            Sum("reserved_usd", filter=flight), Value(ZERO), output_field=DecimalField()
        ),
    }
    if user is not None:
        mine = Q(user=user)
        aggregates |= {f"my_{name}": value for name, value in _use(p, mine).items()}
        aggregates["my_flight_today"] = Count("pk", filter=today & mine & flight)
    return aggregates


def _month_requests(p: Periods):
    from generator.models import GenerationRequest

    # Served by the req_team_created index (team, -created).
    return GenerationRequest.objects.filter(
        _counted(), created__gte=p.month_start, created__lt=p.month_end
    )


def _money(row: dict) -> dict:
    """Decimal sums to 4 places: SQLite sums decimals as floats."""
    return {
        k: v.quantize(Decimal("0.0001")) if isinstance(v, Decimal) else v for k, v in row.items()
    }


def _team_usage(team, user, p: Periods) -> dict:
    return _money(
        _month_requests(p).filter(team=team).aggregate(**_usage_aggregates(p, user=user))
    )


# --- Reserve, charge, refund ----------------------------------------------------------------


def reserve(team, user, *, images: int, cost_usd_each: Decimal) -> None:
    """Reserve `images` images at worst-case cost `cost_usd_each` for the team and member,
    or raise QuotaExceeded. Must be called inside the admission transaction: the requests
    created after it in that transaction are the reservation, and the team's row lock is
    held until it commits, so the next submission for the team counts them."""
    from accounts.models import Team, UsageEntry

    if not connection.in_atomic_block:
        raise RuntimeError("quotas.reserve() must run inside the admission transaction.")
    if images < 1:
        raise ValueError("Reserve at least one image.")
    # The lock orders concurrent admissions of one team; the limits are read fresh under
    # it, so an owner's change applies to the very next submission. NO KEY UPDATE (not
    # plain FOR UPDATE) so that workers inserting rows that reference the team (images,
    # ledger entries) neither wait for an admission nor make it wait.
    locked = Team.objects.select_for_update(no_key=True).get(pk=team.pk)
    p = periods()
    exceeded = [
        e
        for e in _check(locked, _team_usage(locked, user, p), p, images, cost_usd_each)
        if e is not None
    ]
    if exceeded:
        # Say the limit that lasts longest: telling someone to come back tomorrow while
        # the monthly limit still blocks them would be wrong.
        raise max(exceeded, key=lambda e: e.resets_at)
    UsageEntry.objects.create(
        team=locked,
        user=user,
        kind=UsageEntry.Kind.RESERVE,
        images=images,
        amount_usd=cost_usd_each * images,
        reason="admission",
    )


def _check(team, used: dict, p: Periods, images: int, cost_each: Decimal):
    def over(count_limit, count_used, code, label, resets_at):
        if count_limit is None or count_used + images <= count_limit:
            return None
        return QuotaExceeded(
            limit=label,
            used=str(count_used),
            allowed=str(count_limit),
            resets_at=resets_at,
            code=code,
            unit="images",
            requested=str(images),
        )

    yield over(team.images_per_day, used["images_today"], "images_per_day", "images per day",
               p.day_end)  # fmt: skip
    yield over(team.images_per_month, used["images_month"], "images_per_month",
               "images per month", p.month_end)  # fmt: skip
    yield over(team.member_daily_cap, used["my_images_today"], "member_daily_cap",
               "images per member per day", p.day_end)  # fmt: skip
    budget = team.monthly_budget_usd
    needed = cost_each * images
    if budget is not None and used["cost_month"] + needed > budget:
        yield QuotaExceeded(
            limit="monthly budget",
            used=str(used["cost_month"].quantize(CENT)),
            allowed=str(budget.quantize(CENT)),
            resets_at=p.month_end,
            code="monthly_budget",
            unit="USD",
            requested=str(needed.quantize(CENT)),
        )


def _settle(request, new_state, ledger_kind, *, model="", reason="", **fields) -> bool:
    from accounts.models import UsageEntry
    from generator.models import GenerationRequest, QuotaState

    with transaction.atomic():
        done = GenerationRequest.objects.filter(
            pk=request.pk, quota_state=QuotaState.RESERVED
        ).update(quota_state=new_state, **fields)
        if not done:
            return False
        # Read back under the update's row lock: the caller's instance may be stale.
        row = GenerationRequest.objects.values(
            "team_id", "user_id", "reserved_usd", "served_model", "error_code"
        ).get(pk=request.pk)
        charged = fields.get("cost_usd", ZERO)
        UsageEntry.objects.create(
            team_id=row["team_id"],
            user_id=row["user_id"],
            request_id=request.pk,
            kind=ledger_kind,
            images=1,
            amount_usd=charged if ledger_kind == UsageEntry.Kind.CHARGE else ZERO,
            reserved_usd=row["reserved_usd"],
            model=(model or row["served_model"])[:80],
            reason=(reason or row["error_code"])[:200],
        )
    return True


def charge(request, cost_usd: Decimal, *, model: str = "") -> bool:
    """Charge the request at the served model's price (releasing the rest of its
    reservation); True if this call did it, False if it was already charged or refunded."""
    from accounts.models import UsageEntry
    from generator.models import QuotaState

    if cost_usd is None or cost_usd < 0:
        raise ValueError(f"A charge needs a price of 0 or more; got {cost_usd!r}.")
    return _settle(
        request, QuotaState.CHARGED, UsageEntry.Kind.CHARGE, model=model, cost_usd=cost_usd
    )


def refund(request, *, reason: str = "") -> bool:
    """Release the request's reservation; True if this call did it. `reason` defaults to
    the request's error code (e.g. "canceled", "overloaded", "worker_lost")."""
    from accounts.models import UsageEntry
    from generator.models import QuotaState

    return _settle(request, QuotaState.REFUNDED, UsageEntry.Kind.REFUND, reason=reason)


# --- What the pages show --------------------------------------------------------------------


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

    @property
    def cap_left(self) -> int | None:
        return None if self.daily_cap is None else max(self.daily_cap - self.images_today, 0)


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
    used = _team_usage(team, user, p)
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
        for row in _month_requests(p)
        .filter(team=team)
        .values("user_id")
        .annotate(**_use(p), in_flight=Count("pk", filter=_in_flight()))
    }
    empty = _NO_USE | {"in_flight": 0}
    result = []
    for membership in team.members():
        use = rows.pop(membership.user_id, empty)
        result.append(_member_row(membership.user, membership.get_role_display(), use, team))
    if rows:
        from accounts.models import User

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
    from accounts.models import UsageEntry

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
    from accounts.models import Team

    p = periods(now)
    sums = _use(p)
    month = _month_requests(p)
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
            month.values("user_id", "user__email", "team_id", "team__name")
            .annotate(**sums)
            .order_by("-images_month", "user__email"),
        )
    ]
    return {"teams": team_rows, "users": user_rows}
