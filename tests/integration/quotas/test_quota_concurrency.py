"""Concurrent admissions against one team's limits, each thread with its own database
connection as separate web processes would have."""

import threading

import pytest
from django.db import connection
from django.db.models import Sum
from django.test.utils import CaptureQueriesContext

from generator.models import GenerationRequest, QuotaState, Status
from generator.reconcile import Report, _settle_quota
from quotas.errors import QuotaExceeded
from tests.unit.quotas.test_counters import _assert_counters_match_the_ledger
from tests.unit.quotas.test_quotas import PRO_1K, _finish, _ledger_total, _limit, _submit


def _all_at_once(actions):
    """Run each action in its own thread with its own database connection, as separate
    web processes and workers would, all released at once. Returns what they accepted
    (the requests each returned), the QuotaExceeded refusals and any other error."""
    accepted, refused, errors = [], [], []
    start = threading.Barrier(len(actions))

    def run(action):
        try:
            start.wait()
            accepted.extend(action())
        except QuotaExceeded as exc:
            refused.append(exc)
        except Exception as exc:  # reported by the callers' assertions
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(action,)) for action in actions]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    return accepted, refused, errors


@pytest.mark.django_db(transaction=True)
def test_it_fifty_concurrent_submissions_never_exceed_ten_images_left(alice, team, redis_conn):
    """Each thread has its own database connection, as separate web processes would."""
    _limit(team, images_per_day=15)
    older = _submit(alice, team, count=4) + _submit(alice, team, count=1)  # 10 left
    accepted, refused, errors = _all_at_once([lambda: _submit(alice, team)] * 50)

    assert errors == []
    assert len(accepted) == 10
    assert len(refused) == 40
    assert all(e.code == "images_per_day" for e in refused)
    assert GenerationRequest.objects.filter(team=team).count() == 15
    assert _ledger_total(team, "reserve") == 15
    assert _ledger_total(team, "reserve", "amount_usd") == 15 * PRO_1K

    # Settle them all: every reserved image is charged or refunded exactly once.
    for i, request in enumerate(older + accepted):
        _finish(request, Status.SUCCEEDED if i % 2 else Status.FAILED)
    _settle_quota(Report())
    charged = GenerationRequest.objects.filter(quota_state=QuotaState.CHARGED)
    assert _ledger_total(team, "charge") + _ledger_total(team, "refund") == 15
    assert _ledger_total(team, "charge") == charged.count() == 7
    assert _ledger_total(team, "charge", "amount_usd") == charged.aggregate(s=Sum("cost_usd"))["s"]
    # The running counters admission checked end equal to what the ledger sums to.
    _assert_counters_match_the_ledger()


@pytest.mark.django_db(transaction=True)
def test_it_refunds_racing_submissions_keep_the_limit_and_the_counters_exact(
    alice, bob, team, redis_conn
):
    """Refunds give images back while others are admitted: never more than the limit
    counted at once, and the counters end equal to the ledger."""
    _limit(team, images_per_day=20, member_daily_cap=20, monthly_budget_usd=PRO_1K * 20)
    older = [request for _ in range(10) for request in _submit(alice, team)]  # 10 left

    def refund(request):
        _finish(request, Status.FAILED, error_code="canceled")
        request.refresh_from_db()
        assert request.settle_quota()
        return []

    submissions = [lambda: _submit(bob, team)] * 20
    refunds = [lambda r=request: refund(r) for request in older]
    accepted, refused, errors = _all_at_once(submissions + refunds)

    assert errors == []
    assert len(accepted) + len(refused) == 20
    assert 10 <= len(accepted) <= 20
    in_use = _ledger_total(team, "reserve") - _ledger_total(team, "refund")
    assert in_use == len(accepted) <= 20
    _assert_counters_match_the_ledger()


@pytest.mark.django_db(transaction=True)
def test_it_admission_moves_the_counters_in_the_commits_round_trip(alice, team, redis_conn):
    """Admission's own transaction (no test transaction around it): on Postgres the
    counters' statement is sent with the COMMIT, so no client round trip holds them."""
    _limit(team, images_per_day=10, images_per_month=100, member_daily_cap=10)
    _submit(alice, team)
    with CaptureQueriesContext(connection) as captured:
        _submit(alice, team, count=2)
    # Django logs its own BEGIN and COMMIT too (the latter finds nothing left to commit).
    sql = [q["sql"].upper() for q in captured.captured_queries]
    last = [q for q in sql if q not in ("BEGIN", "COMMIT")][-1]
    if connection.vendor == "postgresql":
        assert "QUOTAS_TAKE(" in last and last.endswith("COMMIT")
    else:
        assert last.startswith("UPDATE") and "QUOTAS_USAGECOUNTER" in last
    assert _ledger_total(team, "reserve") == 3
    _assert_counters_match_the_ledger()


@pytest.mark.django_db(transaction=True)
def test_it_a_refusal_at_the_commit_leaves_nothing_and_says_which_limit(
    alice, bob, team, redis_conn
):
    _limit(team, images_per_day=10, images_per_month=5, member_daily_cap=10)
    _submit(alice, team, count=3)
    with pytest.raises(QuotaExceeded) as refused:
        _submit(bob, team, count=3)
    # The month refuses after the member's and the team's day counters moved: both are
    # given back, and the message is the one the refusal always had.
    assert str(refused.value).startswith(
        "Your team's images per month quota has 2 images left (3 of 5 images used), not "
        "enough for the 3 this submission asks for."
    )
    assert GenerationRequest.objects.filter(team=team).count() == 3
    assert _ledger_total(team, "reserve") == 3
    _assert_counters_match_the_ledger()
    # The connection goes on as usual: the next submission that fits is admitted.
    assert len(_submit(bob, team, count=2)) == 2
    _assert_counters_match_the_ledger()
