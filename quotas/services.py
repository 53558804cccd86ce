"""The only writers of quota state: reserve at admission, charge or refund once, and
the limits themselves.

Admission is O(1) whatever the month holds. A team without limits takes no lock and
sums nothing: reserve() writes its ledger row and returns. A team with limits moves a
running counter per limit (quotas.models.UsageCounter: the team's day and month, the
member's day) with one conditional UPDATE each, `… SET images = images + n WHERE images
<= limit - n`: the database applies it atomically, so concurrent admissions of one team
can never pass a limit together, and they wait for each other only on that row, from the
update to their commit. The ledger row is written first in the same transaction, the
counters last, so that the rows stay locked as briefly as possible; a refusal takes
back what it wrote.

Every writer first reads the team's limits under a shared row lock (Postgres `FOR KEY
SHARE`, which inserts referencing the team take anyway); set_limits() takes the
exclusive one, so a change of limits waits for the admissions and settlements in
flight, and none starts with the old limits after it. SQLite's IMMEDIATE transactions
serialise all writers anyway.

charge() and refund() settle a request exactly once whatever retries, duplicate jobs or
reconcilers do: the ledger's unique constraint admits one settlement row per request,
and only the call whose row went in returns True and moves the counters. They take the request from the generator (any object with the
`Settleable` fields) and never write to it: the caller records the outcome on its side,
in the same transaction.
"""

from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Protocol
from uuid import UUID

from django.db import IntegrityError, connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from accounts.models import Team
from quotas.errors import QuotaExceeded
from quotas.models import UsageCounter, UsageEntry
from quotas.periods import Periods, periods
from quotas.selectors import counted_use

ZERO = Decimal(0)
CENT = Decimal("0.01")
LIMIT_FIELDS = ("images_per_day", "images_per_month", "monthly_budget_usd", "member_daily_cap")


class Settleable(Protocol):
    """What charge() and refund() read of a request (generator.GenerationRequest fits):
    fields fixed at admission, so a stale instance is as good as a fresh one."""

    pk: UUID
    team_id: UUID
    user_id: int
    reserved_usd: Decimal  # the worst-case price reserved for it
    created: datetime  # its admission time: reserve()'s return value


def _micro(usd: Decimal) -> int:
    return int((usd * 1_000_000).to_integral_value())


@dataclass(frozen=True)
class Limits:
    """A team's limits (None: unlimited), read as the admission or settlement saw them."""

    images_per_day: int | None
    images_per_month: int | None
    monthly_budget_usd: Decimal | None
    member_daily_cap: int | None

    @property
    def any(self) -> bool:
        return any(getattr(self, name) is not None for name in LIMIT_FIELDS)


def _limits(team_id) -> Limits:
    """The team's limits, under a shared lock on its row on Postgres (see the module's
    docstring): never waited for, except while set_limits() changes them."""
    rows = Team.objects.filter(pk=team_id).values_list(*LIMIT_FIELDS)
    if connection.vendor != "postgresql":
        return Limits(*rows.get())
    sql, params = rows.query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute(f"{sql} FOR KEY SHARE", params)
        row = cursor.fetchone()
    if row is None:
        raise Team.DoesNotExist(f"No team {team_id}.")
    return Limits(*row)


@dataclass(frozen=True)
class _Counter:
    """One running counter: its row's key and the stretch of time it totals."""

    team_id: UUID
    member_id: int | None
    period: str
    start: date
    since: datetime
    until: datetime

    @property
    def counts_usd(self) -> bool:
        # The budget is monthly: day rows count images only, their micro_usd stays 0.
        return self.period == UsageCounter.Period.MONTH

    def rows(self):
        return UsageCounter.objects.filter(
            team_id=self.team_id, member_id=self.member_id, period=self.period, start=self.start
        )


def _counters(limits: Limits, team_id, user_id, p: Periods) -> dict[str, _Counter]:
    """The counters the team's limits need in the periods `p`, always in this order: two
    transactions that lock the same rows lock them in the same order (no deadlock), and
    the rows the whole team shares come last, so each is held for as few statements as
    possible before the commit (the member's day, then the team's day, then its month,
    which every admission with a monthly limit or budget moves)."""
    day, month = UsageCounter.Period.DAY, UsageCounter.Period.MONTH
    found = {}
    if limits.member_daily_cap is not None:
        found["member_day"] = _Counter(
            team_id, user_id, day, p.day_start.date(), p.day_start, p.day_end
        )
    if limits.images_per_day is not None:
        found["day"] = _Counter(team_id, None, day, p.day_start.date(), p.day_start, p.day_end)
    if limits.images_per_month is not None or limits.monthly_budget_usd is not None:
        found["month"] = _Counter(
            team_id, None, month, p.month_start.date(), p.month_start, p.month_end
        )
    return found


def _seed(counter: _Counter, own_images: int, own_micro_usd: int) -> None:
    """Create the counter's row from the ledger, if no other transaction did first. This
    transaction's own entry is already written (and seen by the sum): its share is left
    out, for the update that follows to add. Other transactions' entries are in the sum
    only once committed, and each of them moved the row or created it before its commit,
    so no entry counts twice or not at all."""
    images, cost = counted_use(
        counter.team_id, counter.since, counter.until, user_id=counter.member_id
    )
    UsageCounter.objects.bulk_create(
        [
            UsageCounter(
                team_id=counter.team_id,
                member_id=counter.member_id,
                period=counter.period,
                start=counter.start,
                images=images - own_images,
                micro_usd=_micro(cost) - own_micro_usd if counter.counts_usd else 0,
            )
        ],
        ignore_conflicts=True,
    )


def _move(counter: _Counter, images: int, micro_usd: int, *, fits: Q | None = None) -> bool:
    """Add to the counter if its row matches `fits` (None: always); False when it does
    not. One UPDATE when the row exists, which it does after the period's first use."""
    if not counter.counts_usd:
        micro_usd = 0
    change = {"images": F("images") + images, "micro_usd": F("micro_usd") + micro_usd}
    rows = counter.rows().filter(fits or Q())
    if rows.update(**change):
        return True
    if counter.rows().exists():
        return False
    _seed(counter, images, micro_usd)
    return bool(rows.update(**change))


def reserve(
    team, user, *, images: int, cost_usd_each: Decimal, at: datetime | None = None
) -> datetime:
    """Reserve `images` images at worst-case cost `cost_usd_each` for the team and member,
    or raise QuotaExceeded. Must be called inside the admission transaction that creates
    the requests, best last (a team with limits holds its counters' rows from here to the
    commit). Returns the admission time, `at` or now, which the requests must carry as
    their `created`: charge and refund count them for that day and month."""
    if not connection.in_atomic_block:
        raise RuntimeError("quotas.reserve() must run inside the admission transaction.")
    if images < 1:
        raise ValueError("Reserve at least one image.")
    needed = cost_usd_each * images
    limits = _limits(team.pk)
    now = at or timezone.now()
    # The ledger row first and the counters last: a team with limits holds its counters'
    # rows from their update to the commit, so as little as possible comes after it.
    entry = UsageEntry.objects.create(
        team_id=team.pk,
        user=user,
        kind=UsageEntry.Kind.RESERVE,
        images=images,
        amount_usd=needed,
        reason="admission",
        admitted=now,
        created=now,
    )
    if limits.any:
        try:
            _take(limits, team.pk, user.pk, periods(now), images, needed, cost_usd_each)
        except QuotaExceeded:
            entry.delete()
            raise
    return now


def _take(limits, team_id, user_id, p, images, needed, cost_each, tries=3) -> None:
    """Move each counter the limits need, or none and raise QuotaExceeded."""
    counters = _counters(limits, team_id, user_id, p)
    micro = _micro(needed)
    caps = {
        "day": (limits.images_per_day, None),
        "month": (limits.images_per_month, limits.monthly_budget_usd),
        "member_day": (limits.member_daily_cap, None),
    }
    moved = []
    for name, counter in counters.items():
        image_cap, usd_cap = caps[name]
        fits = Q()
        if image_cap is not None:
            fits &= Q(images__lte=image_cap - images)
        if usd_cap is not None:
            fits &= Q(micro_usd__lte=_micro(usd_cap) - micro)
        if _move(counter, images, micro, fits=fits):
            moved.append(counter)
            continue
        # Refused: take back what this call moved (its rows are still locked by it).
        for done in moved:
            _move(done, -images, -micro)
        # After a few rounds of "refused, then it fits" (other admissions' use refunded
        # in between, each time), report the counter that refused.
        force = _CODES[name] if tries <= 1 else ()
        exceeded = [
            e
            for e in _check(
                limits, _used(counters, images, needed), p, images, cost_each, force=force
            )
            if e is not None
        ]
        if exceeded:
            # Say the limit that lasts longest: telling someone to come back tomorrow
            # while the monthly limit still blocks them would be wrong.
            raise max(exceeded, key=lambda e: e.resets_at)
        _take(limits, team_id, user_id, p, images, needed, cost_each, tries - 1)
        return


# The limits each counter enforces, by their codes in QuotaExceeded.
_CODES = {
    "day": ("images_per_day",),
    "month": ("images_per_month", "monthly_budget"),
    "member_day": ("member_daily_cap",),
}


def _used(counters: dict[str, _Counter], own_images: int, own_cost: Decimal) -> dict:
    """The counters' values, for the refusal's message. A counter with no row yet is
    summed from the ledger, less this admission's own entry."""
    used = {"images_today": 0, "images_month": 0, "my_images_today": 0, "cost_month": ZERO}
    names = {"day": "images_today", "month": "images_month", "member_day": "my_images_today"}
    for name, counter in counters.items():
        row = counter.rows().values_list("images", "micro_usd").first()
        if row is None:
            images, cost = counted_use(
                counter.team_id, counter.since, counter.until, user_id=counter.member_id
            )
            images, cost = images - own_images, cost - own_cost
        else:
            images, cost = row[0], Decimal(row[1]) / 1_000_000
        used[names[name]] = images
        if name == "month":
            used["cost_month"] = cost
    return used


def set_limits(team, **limits) -> None:
    """Change the team's limits (fields of accounts.Team; None: unlimited). Waits for the
    admissions and settlements in flight (they hold the team's row in share mode), then
    drops the team's counters: they start again from the ledger at the next
    admission, so a limit added to a team that had none counts the use so far."""
    unknown = set(limits) - set(LIMIT_FIELDS)
    if unknown:
        raise TypeError(f"Not a limit: {', '.join(sorted(unknown))}.")
    with transaction.atomic():
        locked = Team.objects.select_for_update().get(pk=team.pk)
        for name, value in limits.items():
            setattr(locked, name, value)
            setattr(team, name, value)
        locked.save(update_fields=list(limits))
        UsageCounter.objects.filter(team=locked).delete()


def _check(team, used: dict, p: Periods, images: int, cost_each: Decimal, force=()):
    """The limits the submission does not fit in; those named in `force` (codes) are
    reported whenever they are set."""

    def over(count_limit, count_used, code, label, resets_at):
        if count_limit is None or (count_used + images <= count_limit and code not in force):
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
    if budget is not None and (used["cost_month"] + needed > budget or "monthly_budget" in force):
        yield QuotaExceeded(
            limit="monthly budget",
            used=str(used["cost_month"].quantize(CENT)),
            allowed=str(budget.quantize(CENT)),
            resets_at=p.month_end,
            code="monthly_budget",
            unit="USD",
            requested=str(needed.quantize(CENT)),
        )


def _settle(request: Settleable, kind: str, *, charged: Decimal, model: str, reason: str) -> bool:
    now = timezone.now()
    limits = _limits(request.team_id)
    try:
        # A savepoint: a refused second settlement leaves the caller's transaction usable.
        with transaction.atomic():
            UsageEntry.objects.create(
                team_id=request.team_id,
                user_id=request.user_id,
                request_id=request.pk,
                kind=kind,
                images=1,
                amount_usd=charged,
                reserved_usd=request.reserved_usd,
                model=model[:80],
                reason=reason[:200],
                admitted=request.created,
                created=now,
            )
    except IntegrityError:
        # usage_one_settlement_per_request: settled already (on Postgres, a concurrent
        # settlement of the same request makes this insert wait for it, then fail).
        settled = UsageEntry.objects.filter(request_id=request.pk).exclude(
            kind=UsageEntry.Kind.RESERVE
        )
        if settled.exists():
            return False
        raise
    if limits.any:
        # After the ledger row, which decides exactly-once: only the settlement that
        # counts moves the counters.
        refunded = kind == UsageEntry.Kind.REFUND
        _release(limits, request, now, -1 if refunded else 0, charged)
    return True


def _release(limits, request: Settleable, now, images: int, charged: Decimal) -> None:
    """Move the counters of the periods the request was admitted in, while they are
    current: a counter of a day or month that is over is never read again."""
    micro = _micro(charged - request.reserved_usd)
    current = periods(now)
    admitted = periods(request.created)
    for counter in _counters(limits, request.team_id, request.user_id, admitted).values():
        still = (
            counter.start
            == (
                current.month_start
                if counter.period == UsageCounter.Period.MONTH
                else current.day_start
            ).date()
        )
        if still and (images or (micro and counter.counts_usd)):
            _move(counter, images, micro)


def charge(request: Settleable, cost_usd: Decimal, *, model: str = "") -> bool:
    """Charge the request at the served model's price (releasing the rest of its
    reservation); True if this call did it, False if it was already charged or refunded."""
    if cost_usd is None or cost_usd < 0:
        raise ValueError(f"A charge needs a price of 0 or more; got {cost_usd!r}.")
    return _settle(request, UsageEntry.Kind.CHARGE, charged=cost_usd, model=model, reason="")


def refund(request: Settleable, *, reason: str = "") -> bool:
    """Release the request's reservation; True if this call did it. `reason` says why
    (e.g. "canceled", or the error code: "overloaded", "worker_lost")."""
    return _settle(request, UsageEntry.Kind.REFUND, charged=ZERO, model="", reason=reason)
