"""Shared health through real Redis: what one worker records, every other one sees."""

import time

import pytest

from generator.resilience.health import Health
from generator.resilience.taxonomy import Outcome
from tests.unit.resilience.test_health import FLASH, PRO


def test_it_is_shared_through_redis_and_reports_every_catalogue_model(redis_conn, settings):
    settings.TIME_SCALE = 1.0
    settings.BREAKER_DEAD_AFTER = 8
    one, two = Health.from_settings(), Health.from_settings()
    for _ in range(8):
        assert one.acquire(PRO)[0]
        one.record(PRO, Outcome.UNAVAILABLE, 40_000)
    granted, retry_at = two.acquire(PRO)
    assert not granted and retry_at is not None
    rows = {row["model"]: row for row in two.overview()}
    assert set(rows) >= {PRO, FLASH, "gpt-image-1"}
    pro = rows[PRO]
    assert pro["breaker"] == "open"
    assert pro["quota"]["rpm"] == {"used": 8, "limit": 20}  # the whole quota (LIMITER_SAFETY 1)
    assert pro["quota"]["rpd"] == {"used": 8, "limit": 1000}
    assert rows[FLASH]["breaker"] == "closed"
    assert rows[FLASH]["p50_ms"] is None
    (transition,) = two.transitions()
    assert (transition["model"], transition["from"], transition["to"]) == (PRO, "closed", "open")


@pytest.mark.django_db(transaction=True)
def test_it_a_canceled_request_gives_its_booked_slot_back(redis_conn, settings, alice, team):
    from generator.admission import Submission, submit

    settings.TIME_SCALE = 1.0
    (request,) = submit(alice, team, Submission(prompt="a patient lighthouse"))
    health = Health.from_settings()
    quota = health.quotas[PRO]
    while health.acquire(PRO)[0]:  # Pro's burst is used up: the next slot is ahead
        pass
    booked, slot = health.book(PRO, str(request.pk), not_after=time.time() + 3600)
    assert booked
    request.cancel()
    assert health.limiter.peek(PRO, quota, str(request.pk))[1] is None
    # The next request to wait for Pro gets the freed slot.
    assert health.book(PRO, "next", not_after=time.time() + 3600) == (True, slot)
