"""Quotas: reservation at admission, exactly-once charge and refund, the ledger, day and
month rollover, and what the pages and monitoring are given. Submissions go through the
real admission (generator.admission.submit); the worker pipeline is tested elsewhere."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.db.models import Sum
from django.utils import timezone

from accounts.models import Team
from generator.admission import Submission, submit
from generator.models import GenerationRequest, QuotaState, Status
from generator.reconcile import Report, _settle_quota
from quotas import selectors, services
from quotas.errors import QuotaExceeded
from quotas.models import UsageEntry
from quotas.periods import periods

PRO_1K = Decimal("0.134")
FLASH_1K = Decimal("0.039")

pytestmark = pytest.mark.django_db


def _submit(user, team, count=1, **extra):
    return submit(user, team, Submission(prompt="a lighthouse at dusk", count=count, **extra))


def _limit(team, **limits):
    Team.objects.filter(pk=team.pk).update(**limits)
    team.refresh_from_db()


def _finish(request, status, **fields):
    GenerationRequest.objects.filter(pk=request.pk).update(
        status=status, finished=timezone.now(), **fields
    )


def _ledger_total(team, kind, field="images"):
    return UsageEntry.objects.filter(team=team, kind=kind).aggregate(s=Sum(field))["s"] or 0


# --- Reserve ----------------------------------------------------------------------------


def test_it_reserves_the_worst_case_price_and_records_it(alice, team):
    requests = _submit(alice, team, count=3)
    assert all(r.reserved_usd == PRO_1K for r in requests)
    entry = UsageEntry.objects.get(team=team)
    assert (entry.kind, entry.images, entry.amount_usd) == ("reserve", 3, PRO_1K * 3)
    assert entry.user == alice


def test_it_refuses_the_image_over_the_daily_limit_and_creates_nothing(alice, team):
    _limit(team, images_per_day=3)
    _submit(alice, team, count=2)
    with pytest.raises(QuotaExceeded) as refused:
        _submit(alice, team, count=2)
    error = refused.value
    assert "has 1 image left (2 of 3 images used), not enough for the 2" in str(error)
    assert error.code == "images_per_day"
    assert (error.used, error.allowed, error.requested) == ("2", "3", "2")
    assert GenerationRequest.objects.count() == 2
    assert _ledger_total(team, "reserve") == 2
    # One image still fits.
    _submit(alice, team, count=1)
    with pytest.raises(QuotaExceeded, match=r"images per day quota is used up"):
        _submit(alice, team)


def test_it_the_error_says_which_limit_the_use_and_when_it_resets(alice, team):
    _limit(team, images_per_day=1)
    _submit(alice, team)
    with pytest.raises(QuotaExceeded) as refused:
        _submit(alice, team)
    error = refused.value
    tomorrow = periods().day_end
    assert error.resets_at == tomorrow
    assert str(error) == (
        "Your team's images per day quota is used up (1 of 1 images). "
        f"It resets at {tomorrow:%-d %b %Y}, 00:00 UTC."
    )
    now = tomorrow - timedelta(seconds=90)
    assert error.retry_after_s(now) == 90
    assert error.retry_after_s(tomorrow + timedelta(hours=1)) == 0
    assert error.to_dict() == {
        "limit": "images per day",
        "code": "images_per_day",
        "quota": "images_per_day",
        "unit": "images",
        "used": "1",
        "allowed": "1",
        "requested": "1",
        "resets_at": tomorrow.isoformat(),
    }


def test_it_enforces_the_monthly_budget_in_dollars(alice, team):
    _limit(team, monthly_budget_usd=Decimal("0.30"))
    _submit(alice, team, count=2)  # 2 × $0.134 reserved
    with pytest.raises(QuotaExceeded) as refused:
        _submit(alice, team)
    error = refused.value
    assert (error.code, error.unit, error.used, error.allowed) == (
        "monthly_budget",
        "USD",
        "0.27",
        "0.30",
    )
    assert error.resets_at == periods().month_end
    assert str(error).startswith(
        "Your team's monthly budget quota has $0.03 left ($0.27 of $0.30 used), "
        "not enough for the $0.13 this submission asks for. It resets at "
    )
    # A refund releases the reservation and makes room again.
    assert services.refund(GenerationRequest.objects.first())
    _submit(alice, team)


def test_it_caps_each_member_separately(alice, bob, team):
    _limit(team, member_daily_cap=2)
    _submit(bob, team, count=2)
    with pytest.raises(QuotaExceeded) as refused:
        _submit(bob, team)
    assert refused.value.code == "member_daily_cap"
    assert str(refused.value).startswith("Your own images per member per day quota")
    _submit(alice, team, count=2)  # alice's own cap is untouched


def test_it_the_longest_lasting_limit_is_the_one_reported(alice, team):
    _limit(team, images_per_day=1, images_per_month=1)
    _submit(alice, team)
    with pytest.raises(QuotaExceeded) as refused:
        _submit(alice, team)
    # Coming back tomorrow would not help: the month is full too.
    assert refused.value.code == "images_per_month"


def test_it_a_limit_of_zero_refuses_everything(alice, team):
    _limit(team, images_per_month=0)
    with pytest.raises(QuotaExceeded):
        _submit(alice, team)


def test_it_other_teams_use_does_not_count(alice, team, charlie):
    _limit(team, images_per_day=1)
    _submit(charlie, charlie.active_team, count=4)
    _submit(alice, team)


def test_it_reserve_outside_a_transaction_is_a_programming_error(transactional_db, alice, team):
    with pytest.raises(RuntimeError, match="inside the admission transaction"):
        services.reserve(team, alice, images=1, cost_usd_each=PRO_1K)


# --- Charge and refund, exactly once -------------------------------------------------------


def test_it_success_charges_the_fallback_at_the_fallbacks_price(alice, team):
    (request,) = _submit(alice, team)
    _finish(
        request,
        Status.SUCCEEDED,
        served_model="gemini-2.5-flash-image",
        fell_back=True,
        cost_usd=FLASH_1K,
    )
    request.refresh_from_db()
    assert request.settle_quota() is True
    request.refresh_from_db()
    assert request.quota_state == QuotaState.CHARGED
    assert request.cost_usd == FLASH_1K
    entry = UsageEntry.objects.get(request_id=request.pk)
    assert (entry.kind, entry.images, entry.amount_usd, entry.reserved_usd, entry.model) == (
        "charge",
        1,
        FLASH_1K,
        PRO_1K,
        "gemini-2.5-flash-image",
    )
    # The rest of the reservation is released: the budget counts the Flash price only.
    budget = {line.code: line for line in selectors.quota_summary(team, alice).lines}
    assert budget["monthly_budget"].used == FLASH_1K
    assert budget["monthly_budget"].in_flight == 0


def test_it_a_second_charge_or_refund_does_nothing(alice, team):
    (request,) = _submit(alice, team)
    assert services.charge(request, FLASH_1K, model="gemini-2.5-flash-image")
    assert services.charge(request, PRO_1K) is False
    assert services.refund(request) is False
    (entry,) = UsageEntry.objects.filter(request_id=request.pk)
    assert (entry.kind, entry.amount_usd) == ("charge", FLASH_1K)


def test_it_the_request_shows_its_settlement_once(alice, team):
    (request,) = _submit(alice, team)
    _finish(request, Status.SUCCEEDED, served_model="gemini-2.5-flash-image", cost_usd=FLASH_1K)
    request.refresh_from_db()
    assert request.settle_quota() is True
    assert request.settle_quota() is False
    request.refresh_from_db()
    assert (request.quota_state, request.cost_usd) == (QuotaState.CHARGED, FLASH_1K)
    assert UsageEntry.objects.filter(request_id=request.pk).count() == 1


def test_it_failure_refunds_the_reservation(alice, team):
    _limit(team, images_per_day=1)
    (request,) = _submit(alice, team)
    _finish(request, Status.FAILED, error_code="overloaded")
    request.refresh_from_db()
    assert request.settle_quota() is True
    entry = UsageEntry.objects.get(request_id=request.pk)
    assert (entry.kind, entry.amount_usd, entry.reserved_usd, entry.reason) == (
        "refund",
        0,
        PRO_1K,
        "overloaded",
    )
    # The refunded image no longer counts: the team can ask again.
    _submit(alice, team)


def test_it_cancel_refunds_once(alice, team):
    (request,) = _submit(alice, team)
    request.cancel()
    request.cancel()
    request.refresh_from_db()
    assert (request.status, request.quota_state) == (Status.CANCELED, QuotaState.REFUNDED)
    entry = UsageEntry.objects.get(request_id=request.pk)
    assert (entry.kind, entry.reason) == ("refund", "canceled")


def test_it_the_reconciler_settles_requests_a_dead_worker_left_reserved(alice, team):
    done, failed, running = _submit(alice, team, count=3)
    _finish(done, Status.SUCCEEDED, served_model="gemini-2.5-flash-image", cost_usd=FLASH_1K)
    _finish(failed, Status.FAILED, error_code="worker_lost")
    GenerationRequest.objects.filter(pk=running.pk).update(status=Status.RUNNING)

    report = Report()
    _settle_quota(report)
    assert report.settled == 2
    states = dict(GenerationRequest.objects.values_list("pk", "quota_state"))
    assert states == {
        done.pk: QuotaState.CHARGED,
        failed.pk: QuotaState.REFUNDED,
        running.pk: QuotaState.RESERVED,  # still in flight: not the reconciler's to settle
    }
    charge = UsageEntry.objects.get(request_id=done.pk)
    assert (charge.amount_usd, charge.model) == (FLASH_1K, "gemini-2.5-flash-image")
    assert UsageEntry.objects.get(request_id=failed.pk).reason == "worker_lost"

    again = Report()
    _settle_quota(again)
    assert again.settled == 0
    assert UsageEntry.objects.exclude(kind="reserve").count() == 2


def test_it_the_ledger_refuses_a_second_settlement_row(alice, team):
    from django.db import IntegrityError, transaction

    (request,) = _submit(alice, team)
    services.refund(request)
    with pytest.raises(IntegrityError), transaction.atomic():
        UsageEntry.objects.create(
            team=team,
            user=alice,
            request_id=request.pk,
            kind="charge",
            images=1,
            amount_usd=1,
            admitted=request.created,
        )


# --- Periods and rollover -------------------------------------------------------------------


def _at(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


def test_it_periods_follow_the_quota_time_zone(settings):
    now = _at(2026, 11, 30, 3, 0)  # still the 29th in New York
    settings.QUOTA_TIME_ZONE = "America/New_York"
    p = periods(now)
    assert p.day_start == _at(2026, 11, 29, 5, 0)
    assert p.day_end == _at(2026, 11, 30, 5, 0)
    assert p.month_start == _at(2026, 11, 1, 4, 0)  # EDT until 1 November 06:00 UTC
    assert p.month_end == _at(2026, 12, 1, 5, 0)
    settings.QUOTA_TIME_ZONE = "UTC"
    assert periods(now).day_start == _at(2026, 11, 30)
    assert periods(_at(2026, 12, 31, 23, 59)).month_end == _at(2027, 1, 1)


def test_it_a_bad_time_zone_is_explained(settings):
    from django.core.exceptions import ImproperlyConfigured

    settings.QUOTA_TIME_ZONE = "Mars/Olympus"
    with pytest.raises(ImproperlyConfigured, match="IANA time zone"):
        periods()


def _travel(monkeypatch, moment):
    """Run what follows as if it were `moment` (the services read timezone.now())."""
    monkeypatch.setattr(timezone, "now", lambda: moment)


def test_it_the_day_rolls_over_but_the_month_keeps_counting(monkeypatch, alice, team):
    _limit(team, images_per_day=2, images_per_month=10)
    _travel(monkeypatch, _at(2026, 11, 10, 23, 59))
    requests = _submit(alice, team, count=2)
    for r in requests:
        services.charge(r, FLASH_1K)

    same_day = selectors.quota_summary(team, alice, now=_at(2026, 11, 10, 23, 59, 30))
    next_day = selectors.quota_summary(team, alice, now=_at(2026, 11, 11, 0, 0, 30))
    next_month = selectors.quota_summary(team, alice, now=_at(2026, 12, 1, 0, 0, 30))

    def totals(summary):
        return {line.code: line.total for line in summary.lines}

    assert totals(same_day)["images_per_day"] == 2
    assert same_day.blocked.code == "images_per_day"
    assert same_day.blocked.resets_at == _at(2026, 11, 11)
    assert totals(next_day)["images_per_day"] == 0
    assert totals(next_day)["images_per_month"] == 2
    assert next_day.blocked is None
    assert totals(next_month) == {
        "images_per_day": 0,
        "images_per_month": 0,
        "monthly_budget": 0,
    }


def test_it_admission_counts_only_todays_requests(monkeypatch, alice, team):
    _limit(team, images_per_day=1)
    today = periods()
    _travel(monkeypatch, today.day_start - timedelta(seconds=1))
    _submit(alice, team)
    with pytest.raises(QuotaExceeded):
        _submit(alice, team)
    _travel(monkeypatch, today.now)
    _submit(alice, team)


# --- What the pages and monitoring get ------------------------------------------------------


def test_it_the_summary_splits_charged_from_in_flight_and_warns_at_80_percent(alice, bob, team):
    _limit(team, images_per_day=5, monthly_budget_usd=Decimal("10"), member_daily_cap=3)
    first, _ = _submit(alice, team, count=2)
    services.charge(first, FLASH_1K)
    _submit(bob, team, count=2)

    summary = selectors.quota_summary(team, bob)
    lines = {line.code: line for line in summary.lines}
    day = lines["images_per_day"]
    assert (day.used, day.in_flight, day.limit, day.left, day.percent) == (1, 3, 5, 1, 80.0)
    assert day.warning and not day.exceeded
    assert lines["images_per_month"].limit is None
    assert lines["images_per_month"].percent is None
    assert lines["monthly_budget"].total == FLASH_1K + 3 * PRO_1K
    assert not lines["monthly_budget"].warning
    mine = lines["member_daily_cap"]
    assert (mine.total, mine.limit) == (2, 3)
    assert summary.mine.images_today == 2
    assert summary.images_left == 1
    assert summary.warning


def test_it_member_usage_lists_every_member_and_former_ones(alice, bob, charlie, team):
    _submit(alice, team, count=1)
    (gone,) = _submit(bob, team, count=1)
    services.charge(gone, FLASH_1K)
    bob.memberships.filter(team=team).delete()
    rows = selectors.member_usage(team)
    assert [(r["user"].email, r["role"], r["images_today"], r["in_flight"]) for r in rows] == [
        ("alice@example.com", "Owner", 1, 1),
        ("bob@example.com", "Former member", 1, 0),
    ]
    assert rows[1]["cost_month"] == FLASH_1K


def test_it_usage_overview_aggregates_per_team_and_user_in_few_queries(
    alice, bob, charlie, team, django_assert_max_num_queries
):
    _limit(team, images_per_day=4)
    _submit(alice, team, count=2)
    _submit(bob, team, count=1)
    _submit(charlie, charlie.active_team, count=1)
    idle = Team.objects.create(name="Idle, limited", images_per_month=100)
    Team.objects.create(name="Idle, unlimited")

    with django_assert_max_num_queries(3):
        overview = selectors.usage_overview()
    teams = {row["team"]: row for row in overview["teams"]}
    assert set(teams) == {"Acme", "Outsiders", idle.name}
    acme = teams["Acme"]
    assert (acme["images_today"], acme["images_month"], acme["percent"]) == (3, 3, 75.0)
    assert acme["cost_month"] == 3 * PRO_1K
    assert teams["Outsiders"]["percent"] is None
    assert teams[idle.name]["percent"] == 0
    assert overview["teams"][0]["team"] == "Acme"  # fullest first
    users = {(row["user"], row["team"]): row["images_month"] for row in overview["users"]}
    assert users == {
        ("alice@example.com", "Acme"): 2,
        ("bob@example.com", "Acme"): 1,
        ("charlie@example.com", "Outsiders"): 1,
    }


def test_it_the_ledger_helper_filters(alice, bob, team):
    (request,) = _submit(alice, team)
    _submit(bob, team)
    services.refund(request, reason="canceled")
    assert selectors.ledger(team).count() == 3
    assert selectors.ledger(team, user=bob).count() == 1
    assert [e.reason for e in selectors.ledger(team, kind="refund")] == ["canceled"]
    assert not selectors.ledger(team, since=timezone.now() + timedelta(seconds=1)).exists()


def test_it_new_teams_start_with_the_configured_defaults(settings, alice):
    settings.QUOTA_DEFAULT_IMAGES_PER_DAY = 20
    settings.QUOTA_DEFAULT_MONTHLY_BUDGET_USD = "12.50"
    created = Team.create_with_owner("Defaults", alice)
    assert created.images_per_day == 20
    assert created.monthly_budget_usd == Decimal("12.50")
    assert created.images_per_month is None


# --- Concurrency ------------------------------------------------------------------------------
