"""The only writers of quota state: reserve at admission, then charge or refund once.

reserve() runs inside the admission transaction, before the requests are created, and
holds a row lock on the team (Postgres `SELECT … FOR NO KEY UPDATE`; SQLite's IMMEDIATE
write transaction serialises writers anyway), so concurrent submissions are checked one
after the other and a limit is never exceeded. charge() and refund() flip
GenerationRequest.quota_state with a filtered UPDATE, so each happens at most once
whatever retries, duplicate jobs or reconcilers do; the ledger row is written in the same
transaction.
"""

from decimal import Decimal

from django.db import connection, transaction

from accounts.models import Team
from quotas.errors import QuotaExceeded
from quotas.models import UsageEntry
from quotas.periods import Periods, periods
from quotas.selectors import team_usage

ZERO = Decimal(0)
CENT = Decimal("0.01")


def reserve(team, user, *, images: int, cost_usd_each: Decimal) -> None:
    """Reserve `images` images at worst-case cost `cost_usd_each` for the team and member,
    or raise QuotaExceeded. Must be called inside the admission transaction: the requests
    created after it in that transaction are the reservation, and the team's row lock is
    held until it commits, so the next submission for the team counts them."""
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
    from generator.models import QuotaState

    if cost_usd is None or cost_usd < 0:
        raise ValueError(f"A charge needs a price of 0 or more; got {cost_usd!r}.")
    return _settle(
        request, QuotaState.CHARGED, UsageEntry.Kind.CHARGE, model=model, cost_usd=cost_usd
    )


def refund(request, *, reason: str = "") -> bool:
    """Release the request's reservation; True if this call did it. `reason` defaults to
    the request's error code (e.g. "canceled", "overloaded", "worker_lost")."""
    from generator.models import QuotaState

    return _settle(request, QuotaState.REFUNDED, UsageEntry.Kind.REFUND, reason=reason)
