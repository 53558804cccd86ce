"""The chain end to end: real RQ workers, real Redis, the sandbox over HTTP.

Time is compressed: the sandbox and the policy share one TIME_SCALE, so a minute of
upstream behaviour takes a few seconds.
"""

import socket
import time
from collections import Counter

import pytest

from generator.admission import Submission, submit
from generator.models import FINAL_STATUSES, GenerationRequest, Image, Status
from generator.reconcile import reconcile
from generator.resilience.health import Health

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

PRO = "gemini-3-pro-image-preview"
FLASH = "gemini-2.5-flash-image"
# 0.05: a minute of upstream behaviour in 3 s. Not less: the workers' scheduler wakes
# once a real second, and a busy machine's per-step overhead (and its provider timeouts,
# 180 s emulated: 9 s here) must stay small in emulated time next to Pro's wait limit
# (210 s emulated) and a request's time budget (1200 s emulated).
SCALE = 0.05


@pytest.fixture
def chain(settings, tmp_path, sandbox_settings, monkeypatch):
    settings.TIME_SCALE = SCALE
    # The request budget is scaled too (1200 s x 0.02 = 24 s): on a busy machine the
    # workers' start and the queue alone outlast it. The workers (started after this
    # fixture) get a budget no test reaches.
    monkeypatch.setenv("POLICY_REQUEST_BUDGET_S", "100000")
    settings.LEASE_SECONDS = 2
    settings.RECONCILE_GRACE_SECONDS = 1
    settings.MEDIA_ROOT = tmp_path / "media"
    sandbox_settings.reset()
    return sandbox_settings


def wait_for_all(requests, timeout=60.0, during=None):
    """Wait until every request is final; `during()` runs between polls."""
    ids = [r.pk for r in requests]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if during:
            during()
        rows = list(GenerationRequest.objects.filter(pk__in=ids))
        if all(r.status in FINAL_STATUSES for r in rows):
            return rows
        time.sleep(0.2)
    states = Counter(r.status for r in GenerationRequest.objects.filter(pk__in=ids))
    pytest.fail(f"requests not final after {timeout:.0f} s: {dict(states)}")


def failures(rows) -> str:
    """What went wrong, for assertion messages: each failed request's attempts."""
    lines = []
    for row in rows:
        if row.status != Status.SUCCEEDED:
            lines.append(f"{row.pk} {row.status} {row.error_code}: {row.error_message}")
            for a in row.attempts.order_by("number"):
                lines.append(f"  {a.model} {a.outcome} {a.latency_ms} ms {a.message[:120]}")
    return "\n".join(lines[:40])


def submit_many(user, team, n, **fields):
    requests = []
    for _ in range(n):
        requests += submit(user, team, Submission(**{"prompt": "a lighthouse at dusk", **fields}))
    return requests


def test_it_delivers_every_request_on_its_primary_when_calm(chain, workers, alice, team):
    workers.start(2)
    quality = submit_many(alice, team, 4)
    stability = submit_many(alice, team, 3, strategy="stability-first")
    rows = wait_for_all(quality + stability)
    for row in rows:
        assert row.status == Status.SUCCEEDED, row.error_message
        assert row.served_model == row.chain[0]
        assert not row.fell_back
        image = Image.objects.get(request=row)
        assert image.file.storage.exists(image.file.name)
        assert (row.delivered_width, row.delivered_height) == (image.width, image.height)
    calls = chain.calls()
    assert len(calls) == len(rows)  # one upstream call per request, no retries


def submit_as_they_finish(user, team, total, in_flight, timeout):
    """`in_flight` members who each submit their next request when the last is done:
    the upstream sets the pace, not a burst queued behind our own workers (whose queue
    wait would spend the requests' wait limit for Pro)."""
    requests = submit_many(user, team, in_flight)
    deadline = time.monotonic() + timeout
    while True:
        rows = list(GenerationRequest.objects.filter(pk__in=[r.pk for r in requests]))
        active = sum(r.status not in FINAL_STATUSES for r in rows)
        if len(requests) < total and active < in_flight:
            requests += submit_many(user, team, min(in_flight - active, total - len(requests)))
        elif not active:
            return rows
        assert time.monotonic() < deadline, f"not final after {timeout:.0f} s"
        time.sleep(0.1)


def test_it_delivers_under_peak_mostly_from_pro_and_flags_fallbacks(chain, workers, alice, team):
    chain.set_profile("peak")
    workers.start(2)
    rows = submit_as_they_finish(alice, team, total=24, in_flight=2, timeout=300)
    served = Counter(r.served_model for r in rows)
    assert all(r.status == Status.SUCCEEDED for r in rows), failures(rows)
    assert set(served) <= {PRO, FLASH}
    assert served[PRO] > len(rows) / 2, failures(rows) + str(served)
    for row in rows:
        assert row.fell_back == (row.served_model != PRO)
        if row.fell_back:
            assert row.fallback_reason


def test_it_stops_calling_pro_once_its_breaker_opens(chain, settings, workers, alice, team):
    chain.set_profile("outage")
    workers.start(1)
    # Requests find the outage out: within a few dozen, BREAKER_DEAD_AFTER calls in a
    # row failed and Pro's breaker calls it dead.
    for _ in range(6):
        wait_for_all(submit_many(alice, team, 8), timeout=120)
        if Health.from_settings().breaker.state(PRO).state != "closed":
            break
    else:
        pytest.fail("Pro's breaker never opened during the outage")
    pro_calls_before = sum(1 for c in chain.calls() if c["model"] == PRO)
    started = chain.state()["virtual_time_s"]
    later = submit_many(alice, team, 6)
    rows = wait_for_all(later, timeout=60)
    pro_calls_after = sum(1 for c in chain.calls() if c["model"] == PRO) - pro_calls_before
    elapsed = chain.state()["virtual_time_s"] - started
    assert all(r.status == Status.SUCCEEDED and r.served_model == FLASH for r in rows)
    assert all("Nano Banana Pro is down" in r.fallback_reason for r in rows)
    # Straight to Flash, but for the probes the dead breaker lets through, one at a
    # time and at least BREAKER_PROBE_S (emulated) apart.
    assert pro_calls_after <= 1 + elapsed / settings.BREAKER_PROBE_S
    assert sum(r.attempt_count for r in rows) <= len(rows) + pro_calls_after


def test_it_causes_no_429_of_its_own_under_quota(chain, workers, alice, team):
    chain.set_profile("quota")
    workers.start(2)
    requests = submit_many(alice, team, 30, strategy="stability-first")
    rows = wait_for_all(requests, timeout=120)
    assert all(r.status == Status.SUCCEEDED for r in rows)
    outcomes = Counter(c["outcome"] for c in chain.calls())
    assert outcomes["rate_limited"] == 0, outcomes


def test_it_fails_a_blocked_prompt_at_once_without_downgrading(chain, workers, alice, team):
    workers.start(1)
    (request,) = submit(alice, team, Submission(prompt="sandbox:blocked a forbidden thing"))
    (row,) = wait_for_all([request], timeout=30)
    assert row.status == Status.FAILED
    assert row.error_code == "blocked"
    assert "safety filters" in row.error_message
    assert row.attempt_count == 1
    assert [c["model"] for c in chain.calls()] == [PRO]


def test_it_takes_a_garbled_image_for_a_malformed_answer_and_goes_on(chain, workers, alice, team):
    # Issue 13, item 9: an image with a valid header over garbage was a success for the
    # breaker, then the worker's decode raised and the request hung until its lease.
    workers.start(1)
    prompt = f"sandbox:garbage_image@{PRO}*1 a lighthouse"
    (request,) = submit(alice, team, Submission(prompt=prompt))
    (row,) = wait_for_all([request], timeout=60)
    assert row.status == Status.SUCCEEDED, failures([row])
    first, second = row.attempts.order_by("number")
    assert (first.model, first.outcome) == (PRO, "malformed")
    assert "not readable" in first.message
    assert (second.model, second.outcome) == (PRO, "success")
    assert row.images.get().width > 0
    assert [c["outcome"] for c in chain.calls()] == ["malformed", "success"]


def test_it_moves_on_when_pro_fails_only_this_request(chain, workers, alice, team):
    """Pro serves every other prompt; this one gets server errors from it every time:
    after three in a row the request goes to Flash instead of spending its wait limit
    and Pro's quota on more."""
    workers.start(1)
    rows = wait_for_all(submit_many(alice, team, 8), timeout=120)
    assert all(r.served_model == PRO for r in rows), failures(rows)
    (request,) = submit(alice, team, Submission(prompt=f"sandbox:server_error@{PRO} a cat"))
    (row,) = wait_for_all([request], timeout=120)
    assert row.status == Status.SUCCEEDED, failures([row])
    assert row.served_model == FLASH
    outcomes = [(a.model, a.outcome) for a in row.attempts.order_by("number")]
    assert outcomes == [(PRO, "server_error")] * 3 + [(FLASH, "success")]
    assert "for this request 3 times in a row" in row.fallback_reason


def test_it_nothing_is_lost_when_a_worker_dies_and_redis_is_flushed(
    chain, workers, alice, team, redis_conn
):
    workers.start(2)
    # Slow enough to be killed mid-call (6 s here), short enough that the one worker left
    # gets through every slow call well within a request's time budget (1200 s).
    slow = submit_many(alice, team, 4, prompt="sandbox:slow=120 a slow lighthouse")
    quick = submit_many(alice, team, 6)
    # Wait until a slow call is in flight, then kill the caller making it without warning
    # (a worker only decides and records: it holds a request for milliseconds).
    callers = [worker_name_of(c.pid) for c in workers.callers]
    deadline = time.monotonic() + 30
    while True:
        running = GenerationRequest.objects.filter(
            pk__in=[r.pk for r in slow], status=Status.RUNNING, claimed_by__in=callers
        ).first()
        if running:
            break
        assert time.monotonic() < deadline, "no slow request started"
        time.sleep(0.05)
    workers.kill_holder(running.claimed_by)
    # And lose every queue, scheduled retry and rate-limit slot in Redis.
    redis_conn.flushdb()
    workers.start(1)
    rows = wait_for_all(slow + quick, timeout=120, during=reconcile)
    assert {r.status for r in rows} <= {Status.SUCCEEDED, Status.FAILED}
    assert all(r.status == Status.SUCCEEDED for r in rows), failures(rows)
    # Never generated twice into the gallery.
    assert Image.objects.filter(request__in=rows).count() == len(rows)
    # The request whose worker was killed was taken back by the reconciler.
    assert next(r for r in rows if r.pk == running.pk).recoveries >= 1


def worker_name_of(pid: int) -> str:
    """The `claimed_by` of a process on this host (generator.jobs.worker_name)."""
    return f"{socket.gethostname()}:{pid}"
