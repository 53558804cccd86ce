"""Admission in O(1): the running day and month counters that admission checks instead
of summing the month, and that always equal what the ledger sums to."""

from datetime import UTC, datetime, time
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from generator.models import ReferenceImage, Status
from quotas import services
from quotas.errors import QuotaExceeded
from quotas.models import UsageCounter
from quotas.periods import periods, quota_zone
from quotas.selectors import counted_use
from tests.media import picture
from tests.unit.quotas.test_quotas import FLASH_1K, PRO_1K, _finish, _submit

pytestmark = pytest.mark.django_db


def _queries(action) -> list[str]:
    with CaptureQueriesContext(connection) as captured:
        action()
    return [q["sql"].upper() for q in captured.captured_queries]


def _assert_counters_match_the_ledger():
    for row in UsageCounter.objects.all():
        p = periods(datetime.combine(row.start, time(12), tzinfo=quota_zone()))
        since, until = (
            (p.month_start, p.month_end) if row.period == "month" else (p.day_start, p.day_end)
        )
        images, cost = counted_use(row.team_id, since, until, user_id=row.member_id)
        assert row.images == images, row
        if row.period == "month":
            assert Decimal(row.micro_usd) / 1_000_000 == cost, row


def test_it_a_team_without_limits_keeps_no_counter_and_sums_nothing(alice, team):
    _submit(alice, team)
    sql = _queries(lambda: _submit(alice, team, count=2))
    assert not UsageCounter.objects.exists()
    assert not [q for q in sql if "SUM(" in q or "FOR UPDATE" in q]


def test_it_admission_with_limits_stays_flat_as_the_month_grows(alice, bob, team):
    services.set_limits(
        team, images_per_day=1000, monthly_budget_usd=Decimal(1000), member_daily_cap=1000
    )
    _submit(alice, team)  # the period's first admissions start the counters
    _submit(bob, team)
    before = _queries(lambda: _submit(bob, team))
    for _ in range(20):
        _submit(alice, team, count=4)
    after = _queries(lambda: _submit(bob, team))
    assert len(after) == len(before)
    assert not [q for q in after if "SUM(" in q]
    day = UsageCounter.objects.get(member=None, period="day")
    assert day.images == 84


def _moves_counters(sql: str) -> bool:
    return "QUOTAS_TAKE(" in sql or (sql.startswith("UPDATE") and "QUOTAS_USAGECOUNTER" in sql)


def test_it_moves_the_counters_after_every_other_write_of_the_admission(alice, team):
    services.set_limits(
        team, images_per_day=100, images_per_month=1000, monthly_budget_usd=Decimal(1000),
        member_daily_cap=100,
    )  # fmt: skip
    _submit(alice, team)  # the period's first admission starts the counters
    reference = ReferenceImage.objects.create(
        team=team, uploaded_by=alice, file="references/r.png", mime="image/png", width=8,
        height=8, bytes=100, sha256="0" * 64,
    )  # fmt: skip
    sql = _queries(lambda: _submit(alice, team, count=2, references=[reference]))
    sql = [q for q in sql if "SAVEPOINT" not in q]  # the test's own transaction
    # The counters' rows are locked from the statement that moves them to the commit:
    # the requests, the ledger row and the references are all written before it.
    first = next(i for i, q in enumerate(sql) if _moves_counters(q))
    assert all(_moves_counters(q) for q in sql[first:]), sql[first:]
    assert [q for q in sql[:first] if "GENERATOR_GENERATIONREQUEST_REFERENCES" in q]
    if connection.vendor == "postgresql":
        assert len(sql) - first == 1  # every limit, every counter: one statement
    day = UsageCounter.objects.get(member=None, period="day")
    assert day.images == 3
    _assert_counters_match_the_ledger()


def test_it_the_counters_follow_charges_and_refunds(alice, bob, team):
    services.set_limits(
        team, images_per_day=50, images_per_month=100, monthly_budget_usd=Decimal(50),
        member_daily_cap=20,
    )  # fmt: skip
    delivered, failed, _running = _submit(alice, team, count=3)
    _submit(bob, team, count=2)
    _finish(delivered, Status.SUCCEEDED, served_model="gemini-2.5-flash-image", cost_usd=FLASH_1K)
    _finish(failed, Status.FAILED, error_code="overloaded")
    for request in (delivered, failed):
        request.refresh_from_db()
        assert request.settle_quota()
    month = UsageCounter.objects.get(member=None, period="month")
    assert (month.images, month.micro_usd) == (4, 1_000_000 * (FLASH_1K + 3 * PRO_1K))
    assert UsageCounter.objects.get(member=bob).images == 2
    assert UsageCounter.objects.get(member=alice).images == 2
    _assert_counters_match_the_ledger()


def test_it_a_limit_set_after_use_counts_the_use_so_far(alice, team):
    _submit(alice, team, count=3)
    services.set_limits(team, images_per_day=4)
    with pytest.raises(QuotaExceeded, match=r"has 1 image left \(3 of 4 images used\)"):
        _submit(alice, team, count=2)
    _submit(alice, team)
    _assert_counters_match_the_ledger()


def test_it_changing_the_limits_starts_the_counters_again(alice, team):
    services.set_limits(team, images_per_day=5)
    _submit(alice, team, count=2)
    services.set_limits(team, images_per_day=None)  # unlimited: the counters stop
    _submit(alice, team, count=2)
    services.set_limits(team, images_per_day=5)
    with pytest.raises(QuotaExceeded, match=r"has 1 image left \(4 of 5"):
        _submit(alice, team, count=2)
    _submit(alice, team)
    _assert_counters_match_the_ledger()


def test_it_a_settlement_moves_only_the_counters_of_periods_still_running(
    monkeypatch, alice, team
):
    services.set_limits(team, images_per_day=3, images_per_month=10)
    monkeypatch.setattr(timezone, "now", lambda: datetime(2026, 11, 10, 23, 59, tzinfo=UTC))
    (request,) = _submit(alice, team)
    monkeypatch.setattr(timezone, "now", lambda: datetime(2026, 11, 11, 0, 1, tzinfo=UTC))
    _finish(request, Status.FAILED, error_code="overloaded")
    request.refresh_from_db()
    assert request.settle_quota()
    # The 10th is over: its counter is left as it was; the month's gives the image back.
    assert UsageCounter.objects.get(period="day").images == 1
    assert UsageCounter.objects.get(period="month").images == 0


def test_it_set_limits_refuses_what_is_not_a_limit(team):
    with pytest.raises(TypeError, match="Not a limit: name"):
        services.set_limits(team, name="Renamed")


def test_it_a_refusal_that_fits_again_on_reading_names_the_limit_that_refused(
    monkeypatch, alice, team
):
    services.set_limits(team, images_per_day=5, images_per_month=100)
    # The day's counter refused, yet by the time its value is read the image fits: another
    # admission's use was refunded in between. The refusal still names the day's limit.
    refused_then_fits = {"refused": "day", "day": 0, "month": 0, "micro_usd": 0}
    monkeypatch.setattr(services._Take, "_in_one_statement", lambda *a: refused_then_fits)
    monkeypatch.setattr(services._Take, "_one_by_one", lambda *a: refused_then_fits)
    with pytest.raises(QuotaExceeded) as refused:
        _submit(alice, team)
    assert refused.value.code == "images_per_day"
    assert not alice.generation_requests.exists()


def test_it_a_refused_submission_leaves_no_uploaded_file(settings, tmp_path, alice, team):
    settings.MEDIA_ROOT = tmp_path / "media"
    services.set_limits(team, images_per_day=1)
    # Uploads are stored before the counters move: an accepted one keeps its file...
    _submit(alice, team, uploads=[(picture(), "image/png")])
    files = [p for p in (tmp_path / "media").rglob("*") if p.is_file()]
    assert len(files) == 1
    # ...and a refused one takes its file away again, with its row.
    with pytest.raises(QuotaExceeded, match="images per day"):
        _submit(alice, team, uploads=[(picture("JPEG"), "image/jpeg")])
    assert [p for p in (tmp_path / "media").rglob("*") if p.is_file()] == files
    assert ReferenceImage.objects.count() == 1
