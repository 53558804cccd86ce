"""The only writers of quota state: reserve at admission, then charge or refund once.

reserve() runs inside the admission transaction, before the requests are created, and
holds a row lock on the team (Postgres `SELECT … FOR NO KEY UPDATE`; SQLite's IMMEDIATE
write transaction serialises writers anyway), so concurrent submissions are checked one
after the other and a limit is never exceeded.

charge() and refund() settle a request exactly once whatever retries, duplicate jobs or
reconcilers do: the ledger's unique constraint admits one settlement row per request,
and only the call whose row went in returns True. They take the request from the
generator (any object with the `Settleable` fields) and never write to it: the caller
records the outcome on its side, in the same transaction.
"""

from datetime import datetime
from decimal import Decimal
from typing import Protocol
from uuid import UUID

from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from accounts.models import Team
from quotas.errors import QuotaExceeded
from quotas.models import UsageEntry
from quotas.periods import Periods, periods
from quotas.selectors import team_usage


class Settleable(Protocol):
    """What charge() and refund() read of a request (generator.GenerationRequest fits):
    fields fixed at admission, so a stale instance is as good as a fresh one."""

    pk: UUID
    team_id: UUID
    user_id: int
    reserved_usd: Decimal  # the worst-case price reserved for it
    created: datetime  # its admission time: reserve()'s return value


ZERO = Decimal(0)
CENT = Decimal("0.01")


def reserve(team, user, *, images: int, cost_usd_each: Decimal) -> datetime:
    """Reserve `images` images at worst-case cost `cost_usd_each` for the team and member,
    or raise QuotaExceeded. Must be called inside the admission transaction, which then
    creates the requests. Returns the admission time, which the requests must carry as
    their `created` (charge and refund count them for that day and month)."""
    if not connection.in_atomic_block:
        raise RuntimeError("quotas.reserve() must run inside the admission transaction.")
    if images < 1:
        raise ValueError("Reserve at least one image.")
    # The lock orders concurrent admissions of one team; the limits are read fresh under
    # it, so an owner's change applies to the very next submission. NO KEY UPDATE (not
    # plain FOR UPDATE) so that workers inserting rows that reference the team (images,
    # ledger entries) neither wait for an admission nor make it wait.
    locked = Team.objects.select_for_update(no_key=True).get(pk=team.pk)
    now = timezone.now()
    p = periods(now)
    exceeded = [
        e
        for e in _check(locked, team_usage(locked, user, p), p, images, cost_usd_each)
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
        admitted=now,
        created=now,
    )
    return now


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


def _settle(request: Settleable, kind: str, *, charged: Decimal, model: str, reason: str) -> bool:
    now = timezone.now()
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
        if (
            UsageEntry.objects.filter(request_id=request.pk)
            .exclude(kind=UsageEntry.Kind.RESERVE)
            .exists()
        ):
            return False
        raise
    return True


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
