"""The only writers of quota state: reserve at admission, charge or refund once, and
the limits themselves.

Admission is O(1) whatever the month holds. A team without limits takes no lock and
sums nothing: the reservation writes its ledger row and that is all. A team with limits
moves a running counter per limit (quotas.models.UsageCounter: the member's day, the
team's day and month), each with a conditional `… SET images = images + n WHERE images
+ n <= limit`: the database applies it atomically, so concurrent admissions of one team
can never pass a limit together, and they wait for each other only on those rows, from
the update to their commit. So the counters move last, after everything else the
admission writes, in one statement that checks every limit and moves every counter or
none (on Postgres the function quotas_take(), migration 0005), and reserving() sends it
in the same round trip as the COMMIT: a team's rows are locked for the commit alone,
never while a client process waits for a core (issue 17, docs/benchmarks.md). A refusal
takes back what it wrote and says which limit refused.

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

import json
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Protocol
from uuid import UUID

from django.db import DatabaseError, IntegrityError, connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from accounts.models import Team
from config import statements
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
    lock = " FOR KEY SHARE" if connection.vendor == "postgresql" else ""
    row = statements.values_by_pk(Team, connection.alias, team_id, LIMIT_FIELDS, suffix=lock)
    if row is None:
        raise Team.DoesNotExist(f"No team {team_id}.")
    return Limits(*row)


def _limits_and_counters(team_id, user_id, p: Periods) -> tuple[Limits, set | None]:
    """The team's limits (_limits()) and, on SQLite, the keys (_Counter.key) of the
    counter rows of the periods `p` that exist for the team and the member; on Postgres
    None: quotas_take() creates the missing ones itself."""
    if connection.vendor == "postgresql":
        return _limits(team_id), None
    rows = UsageCounter.objects.filter(
        Q(member=None) | Q(member_id=user_id),
        Q(period=UsageCounter.Period.DAY, start=p.day_start.date())
        | Q(period=UsageCounter.Period.MONTH, start=p.month_start.date()),
        team_id=team_id,
    )
    return _limits(team_id), set(rows.values_list("member_id", "period"))


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

    @property
    def key(self) -> tuple[int | None, str]:
        return (self.member_id, self.period)

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
    """Create the counter's row from the ledger, if no other transaction did first. When
    this transaction's own entry is already written (and seen by the sum, a settlement's),
    its share (`own_…`) is left out, for the update that follows to add; a reservation
    on SQLite seeds before it writes its entry (on Postgres quotas_seed() does it, the
    same way, inside quotas_take()). Other transactions' entries are in the sum
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


def _move(
    counter: _Counter, images: int, micro_usd: int, *, fits: Q | None = None, seed: bool = True
) -> bool:
    """Add to the counter if its row matches `fits` (None: always); False when it does
    not. One UPDATE when the row exists, which it does after the period's first use (a
    missing row is seeded from the ledger, unless not `seed`: the row exists)."""
    if not counter.counts_usd:
        micro_usd = 0
    change = {"images": F("images") + images, "micro_usd": F("micro_usd") + micro_usd}
    rows = counter.rows().filter(fits or Q())
    if rows.update(**change):
        return True
    if not seed or counter.rows().exists():
        return False
    _seed(counter, images, micro_usd)
    return bool(rows.update(**change))


class Reservation:
    """What reserving() yields: reserve() once inside the block; the counters move when
    the block ends, in the commit's round trip on Postgres."""

    def __init__(self):
        self._take: _Take | None = None
        self._reserved = False

    def reserve(
        self, team, user, *, images: int, cost_usd_each: Decimal, at: datetime | None = None
    ) -> datetime:
        """Reserve `images` images at worst-case cost `cost_usd_each` for the team and
        member: writes the ledger row now, moves the counters at the block's end (or
        raises QuotaExceeded there, and the block rolls back). Returns the admission time,
        `at` or now, which the requests must carry as their `created`."""
        if self._reserved:
            raise RuntimeError("One reservation per reserving() block.")
        self._reserved = True
        now, self._take = _prepare(team, user, images, cost_usd_each, at)
        return now


@contextmanager
def reserving():
    """transaction.atomic() for an admission, whose reservation moves the team's counters
    last: everything the block writes comes first, then one statement checks every limit
    and moves every counter. On Postgres, when the block is the outermost transaction,
    that statement travels with the COMMIT in one round trip, so a team's counter rows are
    locked for the commit alone and never while the client works (issue 17); elsewhere
    (SQLite, or inside an outer transaction) the commit follows as usual.

        with reserving() as reservation:
            ...  # create the requests
            admitted = reservation.reserve(team, user, images=n, cost_usd_each=price)

    Nothing may run after the block's last line that should be rolled back by a refusal
    it cannot see: the refusal is raised by the block's end."""
    with transaction.atomic():
        reservation = Reservation()
        yield reservation
        if reservation._take is not None:
            reservation._take.run(commit=_may_commit())


def _may_commit() -> bool:
    """Whether the take may carry the COMMIT: on Postgres, in the outermost atomic block,
    with nothing that Django would roll back instead."""
    return (
        connection.vendor == "postgresql"
        and len(connection.atomic_blocks) == 1
        and connection.commit_on_exit
        and not connection.needs_rollback
        and not connection.savepoint_ids
    )


def reserve(
    team, user, *, images: int, cost_usd_each: Decimal, at: datetime | None = None
) -> datetime:
    """Reserve at once, inside the caller's transaction, or raise QuotaExceeded having
    written nothing. Admission uses reserving() instead, which moves the counters with
    the commit; this holds the counters' rows from here to the caller's commit. Returns
    the admission time, `at` or now, which the requests must carry as their `created`:
    charge and refund count them for that day and month."""
    now, take = _prepare(team, user, images, cost_usd_each, at)
    if take is not None:
        take.run(commit=False)
    return now


def _prepare(team, user, images, cost_usd_each, at) -> tuple[datetime, "_Take | None"]:
    """Everything of a reservation but the counters: the limits, on SQLite the missing
    counter rows seeded from the ledger, the ledger row."""
    if not connection.in_atomic_block:
        raise RuntimeError("quotas.reserve() must run inside the admission transaction.")
    if images < 1:
        raise ValueError("Reserve at least one image.")
    needed = cost_usd_each * images
    now = at or timezone.now()
    p = periods(now)
    limits, existing = _limits_and_counters(team.pk, user.pk, p)
    take = None
    if limits.any:
        counters = _counters(limits, team.pk, user.pk, p)
        for counter in counters.values():
            if existing is not None and counter.key not in existing:
                # SQLite: before this reservation's own ledger row, so the sum leaves it
                # out and the take adds it. On Postgres quotas_take() seeds (existing is
                # None), in the commit's round trip.
                _seed(counter, 0, 0)
        take = _Take(limits, counters, team.pk, user.pk, p, images, needed, cost_usd_each)
    entry = statements.create(
        UsageEntry,
        UsageEntry.objects.db,
        team_id=team.pk,
        user=user,
        kind=UsageEntry.Kind.RESERVE,
        images=images,
        amount_usd=needed,
        reason="admission",
        admitted=now,
        created=now,
    )
    if take is not None:
        take.entry = entry
    return now, take


# The limits each counter enforces, by their codes in QuotaExceeded.
_CODES = {
    "day": ("images_per_day",),
    "month": ("images_per_month", "monthly_budget"),
    "member_day": ("member_daily_cap",),
}

# SQLSTATE of quotas_take()'s refusal when strict (migration 0005).
_REFUSED = "QX001"
_TAKE = "SELECT quotas_take(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
# One round trip: the deferred foreign-key checks first (they would otherwise run in the
# COMMIT, with the counters locked), then the counters, then the COMMIT, which the server
# skips if quotas_take() refuses (it raises): the transaction is then rolled back.
_TAKE_AND_COMMIT = f"SET CONSTRAINTS ALL IMMEDIATE; {_TAKE}; COMMIT"


@dataclass
class _Take:
    """A reservation's move of the counters, checked against every limit: all of them
    or none."""

    limits: Limits
    counters: dict[str, _Counter]
    team_id: UUID
    user_id: int
    p: Periods
    images: int
    needed: Decimal
    cost_each: Decimal
    entry: UsageEntry | None = None

    def run(self, *, commit: bool) -> None:
        """Move the counters, or take back this reservation and raise QuotaExceeded.
        With `commit` (Postgres only), the statement is sent with the COMMIT."""
        if connection.vendor == "postgresql":
            refusal = self._in_one_statement(commit)
        else:
            refusal = self._one_by_one()
        if refusal is None:
            return
        if not commit and self.entry is not None:
            # The caller's transaction goes on: leave no trace of the refused reservation.
            self.entry.delete()
        raise self._refusal(refusal)

    def _in_one_statement(self, commit: bool) -> dict | None:
        limits = self.limits
        usd_cap = limits.monthly_budget_usd
        params = [
            str(self.team_id),
            self.user_id,
            self.p.day_start.date(),
            self.p.month_start.date(),
            self.images,
            _micro(self.needed),
            limits.member_daily_cap,
            limits.images_per_day,
            limits.images_per_month,
            None if usd_cap is None else _micro(usd_cap),
            commit,
            self.p.day_start,
            self.p.day_end,
            self.p.month_start,
            self.p.month_end,
        ]
        with connection.cursor() as cursor:
            if not commit:
                cursor.execute(_TAKE, params)
                (refusal,) = cursor.fetchone()
                return None if refusal is None else json.loads(refusal)
            # Django's own commit at the block's end then finds nothing to do.
            try:
                cursor.execute(_TAKE_AND_COMMIT, params)
            except DatabaseError as exc:
                if getattr(exc.__cause__, "sqlstate", None) != _REFUSED:
                    raise
                return json.loads(exc.__cause__.diag.message_detail)
        return None

    def _one_by_one(self) -> dict | None:
        """The same as quotas_take(), one UPDATE per counter (SQLite: its IMMEDIATE
        transactions serialise writers anyway)."""
        caps = {
            "day": (self.limits.images_per_day, None),
            "month": (self.limits.images_per_month, self.limits.monthly_budget_usd),
            "member_day": (self.limits.member_daily_cap, None),
        }
        micro = _micro(self.needed)
        moved = []
        for name, counter in self.counters.items():
            image_cap, usd_cap = caps[name]
            fits = Q()
            if image_cap is not None:
                fits &= Q(images__lte=image_cap - self.images)
            if usd_cap is not None:
                fits &= Q(micro_usd__lte=_micro(usd_cap) - micro)
            if _move(counter, self.images, micro, fits=fits, seed=False):
                moved.append(counter)
                continue
            for done in moved:
                _move(done, -self.images, -micro)
            used = {"refused": name}
            for other, row in self.counters.items():
                values = row.rows().values_list("images", "micro_usd").first() or (0, 0)
                used[other] = values[0]
                if other == "month":
                    used["micro_usd"] = values[1]
            return used
        return None

    def _refusal(self, counted: dict) -> QuotaExceeded:
        """The refusal's message from the counters' values without this reservation.
        Several limits may be full: say the one that lasts longest, as telling someone to
        come back tomorrow while the monthly limit still blocks them would be wrong."""
        used = {
            "images_today": counted.get("day") or 0,
            "images_month": counted.get("month") or 0,
            "my_images_today": counted.get("member_day") or 0,
            "cost_month": Decimal(counted.get("micro_usd") or 0) / 1_000_000,
        }
        args = (self.limits, used, self.p, self.images, self.cost_each)
        exceeded = [e for e in _check(*args) if e is not None]
        if not exceeded:
            # It fits on this reading: use was given back (a refund) since the counter
            # refused. Name the limit that refused.
            exceeded = [
                e for e in _check(*args, force=_CODES[counted["refused"]]) if e is not None
            ]
        return max(exceeded, key=lambda e: e.resets_at)


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


def _settle(
    request: Settleable, kind: str, *, charged: Decimal, model: str, reason: str, first: bool
) -> bool:
    now = timezone.now()
    limits = _limits(request.team_id)
    entry = UsageEntry(
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
    if first:
        # The caller knows no settlement can exist (see charge()): no savepoint, and a
        # refused row fails its transaction.
        statements.insert(entry, UsageEntry.objects.db)
    else:
        try:
            # A savepoint: a refused second settlement leaves the caller's transaction
            # usable.
            with transaction.atomic():
                entry.save(force_insert=True)
        except IntegrityError:
            # usage_one_settlement_per_request: settled already (on Postgres, a
            # concurrent settlement of the same request makes this insert wait for it,
            # then fail).
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


def charge(
    request: Settleable, cost_usd: Decimal, *, model: str = "", first: bool = False
) -> bool:
    """Charge the request at the served model's price (releasing the rest of its
    reservation); True if this call did it, False if it was already charged or refunded.
    `first`: the caller knows the request was never settled (it has just ended it, in
    this transaction, from a state no settled request is in); the ledger's row then goes
    in without a savepoint, and a refused one raises IntegrityError, which fails the
    caller's transaction."""
    if cost_usd is None or cost_usd < 0:
        raise ValueError(f"A charge needs a price of 0 or more; got {cost_usd!r}.")
    return _settle(
        request, UsageEntry.Kind.CHARGE, charged=cost_usd, model=model, reason="", first=first
    )


def refund(request: Settleable, *, reason: str = "", first: bool = False) -> bool:
    """Release the request's reservation; True if this call did it. `reason` says why
    (e.g. "canceled", or the error code: "overloaded", "worker_lost"); `first` as in
    charge()."""
    return _settle(
        request, UsageEntry.Kind.REFUND, charged=ZERO, model="", reason=reason, first=first
    )
