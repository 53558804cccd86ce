"""The caller process: one process keeps many upstream calls in flight while the workers
go on with other steps, and a caller that dies mid-call loses nothing."""

import time

import pytest

from generator.admission import Submission, submit
from generator.models import Attempt, GenerationRequest, Image, Status
from generator.reconcile import reconcile
from monitoring import sources
from tests.integration.generator.test_chain import failures, submit_many, wait_for_all

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

FLASH = "gemini-2.5-flash-image"


@pytest.fixture
def slow_calls(settings, tmp_path, sandbox_settings, monkeypatch):
    # 0.05: a 120 s call (emulated) takes 6 s, long enough for every call to be in flight
    # at once; the request budget never runs out before (REQUEST_BUDGET_FLOOR_S).
    settings.TIME_SCALE = 0.05
    settings.LEASE_SECONDS = 2
    settings.RECONCILE_GRACE_SECONDS = 1
    settings.MEDIA_ROOT = tmp_path / "media"
    sandbox_settings.reset()
    return sandbox_settings


def test_it_keeps_two_dozen_slow_calls_in_flight_through_one_caller(
    slow_calls, workers, alice, team
):
    workers.start(1)
    caller = workers.callers[0]
    requests = submit_many(
        alice, team, 24, prompt="sandbox:slow=120 a slow lighthouse", strategy="stability-first"
    )
    # What the monitoring page shows while they are in flight: one caller, holding them.
    seen, deadline = {"callers": 0, "in_flight": 0}, time.monotonic() + 60
    while seen["in_flight"] < 10 and time.monotonic() < deadline:
        seen = sources.queues()["calls"]
        time.sleep(0.1)
    assert seen["callers"] == 1 and seen["in_flight"] >= 10, seen
    rows = wait_for_all(requests, timeout=120)

    assert all(r.status == Status.SUCCEEDED for r in rows), failures(rows)
    # One worker and one caller: had a process waited on each call, at most one or two
    # would have been in flight at once.
    assert slow_calls.state()["max_in_flight"] >= 20
    made_by = set(Attempt.objects.filter(request__in=rows).values_list("worker", flat=True))
    assert [name.rsplit(":", 1)[1] for name in made_by] == [str(caller.pid)]


def test_it_delivers_once_when_the_caller_dies_mid_call(slow_calls, workers, alice, team):
    workers.start(1)
    caller = workers.callers[0]
    # Slow the first time only (each prompt its own): the calls made again are quick.
    requests = [
        request
        for n in range(3)
        for request in submit(alice, team, Submission(prompt=f"sandbox:slow=120*1 lighthouse {n}"))
    ]
    ids = [r.pk for r in requests]
    deadline = time.monotonic() + 60
    while GenerationRequest.objects.filter(
        pk__in=ids, claimed_by__endswith=f":{caller.pid}"
    ).count() < len(ids):
        assert time.monotonic() < deadline, "the caller did not take every call"
        time.sleep(0.05)

    workers.kill(workers.processes.index(caller))
    workers.start_caller()
    rows = wait_for_all(requests, timeout=120, during=reconcile)

    assert all(r.status == Status.SUCCEEDED for r in rows), failures(rows)
    assert all(r.recoveries == 1 for r in rows)
    # Delivered once: one image, one charge, one successful attempt each.
    assert Image.objects.filter(request__in=rows).count() == len(rows)
    assert all(r.quota_state == "charged" for r in rows)
    for row in rows:
        assert row.attempts.filter(outcome="success").count() == 1
