"""Economy requests end to end: the batcher (generator/batching.py) in this process, the
sandbox's Batch mode over HTTP, real Redis, and real RQ workers for the requests that
leave Batch mode for the normal chain.

Time is compressed: at SCALE an hour of the sandbox's (and the settings') time takes
3.6 s, so a batch runs for a few seconds and deadlines are hours of virtual time.
"""

import threading
import time
from collections import Counter
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.utils import timezone

from generator.admission import Submission, submit
from generator.batching import Report, _close, tick
from generator.models import (
    BATCH_PROVIDER,
    FINAL_STATUSES,
    GenerationRequest,
    Image,
    Route,
    Status,
    UpstreamBatch,
)
from generator.resilience.catalogue import get_catalogue
from generator.upstream.base import GenerationCall
from generator.upstream.gemini_batch import BatchLine
from generator.upstream.registry import get_batch_client
from quotas.models import UsageEntry

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

PRO = "gemini-3-pro-image-preview"
SCALE = 0.001
HOUR = 3600 * SCALE  # real seconds in an hour of the settings' and the sandbox's time
GIVE_UP_S = 120  # a bound on waiting only: the runs below end far sooner


@pytest.fixture
def economy(settings, tmp_path, sandbox_settings):
    settings.TIME_SCALE = SCALE
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.LEASE_SECONDS = 2
    settings.ECONOMY_MIN_LEAD_S = 3600
    # Three hours before its deadline a request still waiting on Batch mode is called
    # directly: 10.8 s of real time for the normal chain, however busy the machine.
    settings.ECONOMY_DIRECT_MARGIN_S = 3 * 3600
    settings.BATCH_MAX_AGE_S = 60
    sandbox_settings.reset()
    return sandbox_settings


def order(user, team, prompt, hours=24.0, **fields):
    deadline = timezone.now() + timedelta(seconds=hours * HOUR)
    return submit(
        user, team, Submission(prompt=prompt, strategy="economy", deadline=deadline, **fields)
    )


def run_until_final(requests, during=tick):
    ids = [r.pk for r in requests]
    started = time.monotonic()
    while time.monotonic() - started < GIVE_UP_S:
        during()
        rows = list(GenerationRequest.objects.filter(pk__in=ids))
        if all(r.status in FINAL_STATUSES for r in rows):
            return rows
        time.sleep(0.1)
    states = Counter(r.status for r in GenerationRequest.objects.filter(pk__in=ids))
    pytest.fail(f"requests not final after {GIVE_UP_S} s: {dict(states)}")


def tick_until_settled(batch):
    started = time.monotonic()
    while time.monotonic() - started < GIVE_UP_S:
        tick()
        batch.refresh_from_db()
        if batch.settled:
            break
        time.sleep(0.1)
    return batch


def direct_calls(sandbox):
    return [c for c in sandbox.calls() if c["protocol"] == "gemini"]


def test_it_delivers_an_economy_request_through_batch_mode_at_half_price(
    economy, redis_conn, alice, team
):
    [request] = order(alice, team, "a lighthouse at dusk")
    assert (request.status, request.route, request.reserved_usd) == (
        Status.SCHEDULED,
        Route.BATCH,
        Decimal("0.0670"),
    )

    [row] = run_until_final([request])

    assert row.status == Status.SUCCEEDED, row.error_message
    assert (row.route, row.served_model, row.cost_usd) == (Route.BATCH, PRO, Decimal("0.0670"))
    batch = row.upstream_batch
    assert (batch.state, batch.lines, batch.delivered) == ("succeeded", 1, 1)
    assert batch.settled is not None
    assert Image.objects.filter(request=row).count() == 1
    [attempt] = row.attempts.all()
    assert (attempt.provider, attempt.outcome, attempt.decision) == (
        BATCH_PROVIDER,
        "success",
        "done",
    )
    charges = UsageEntry.objects.filter(request_id=row.pk, kind="charge")
    assert [c.amount_usd for c in charges] == [Decimal("0.0670")]
    assert [b["keys"] for b in economy.batches()] == [[str(row.pk)]]
    assert direct_calls(economy) == []
    assert row.served_how.startswith("Batch, Nano Banana Pro, ")


def test_it_a_batch_closes_at_its_size_and_the_rest_wait_for_its_age(
    economy, redis_conn, settings, alice, team
):
    settings.BATCH_MAX_REQUESTS = 3
    settings.BATCH_MAX_AGE_S = 3600  # 3.6 s
    first = order(alice, team, "a harbour", count=4)
    other_size = order(alice, team, "a harbour in 4K", image_size="4K")

    tick()

    batches = list(UpstreamBatch.objects.all())
    assert [(b.image_size, b.requests.count()) for b in batches] == [("1K", 3)]
    waiting = GenerationRequest.objects.filter(status=Status.SCHEDULED)
    assert waiting.count() == 2

    run_until_final(first + other_size)

    sizes = Counter((b.image_size, b.lines) for b in UpstreamBatch.objects.all())
    assert sizes == Counter({("1K", 3): 1, ("1K", 1): 1, ("4K", 1): 1})


def test_it_delivers_from_a_batch_that_ended_even_inside_the_deadline_margin(economy, alice, team):
    [request] = order(alice, team, "a lighthouse at dusk", hours=8)
    started = time.monotonic()
    while not UpstreamBatch.objects.exclude(name="").exists():  # closed, then sent
        assert time.monotonic() - started < GIVE_UP_S
        tick()
        time.sleep(0.05)
    time.sleep(2 * HOUR)  # the sandbox's batches end within 1.1 hours (docs/sandbox.md)

    # The batcher's next look comes late, when the deadline is already inside the margin
    # for a direct call: the batch is asked first, and what it made is delivered.
    report = tick(now=request.deadline - timedelta(seconds=2 * HOUR))

    request.refresh_from_db()
    assert (report.delivered, report.direct) == (1, 0)
    assert (request.status, request.route) == (Status.SUCCEEDED, Route.BATCH)
    assert direct_calls(economy) == []


@pytest.mark.parametrize(
    ("word", "state"),
    # The batch expires after one hour, or fails; the deadline is eight hours away.
    [("sandbox:batch_expired=1", "expired"), ("sandbox:batch_failed", "failed")],
)
def test_it_an_expired_or_failed_batch_falls_back_to_the_chain_within_the_deadline(
    economy, workers, alice, team, word, state
):
    workers.start(1)
    [request] = order(alice, team, f"{word} a fox in the snow", hours=8)

    [row] = run_until_final([request])

    assert row.status == Status.SUCCEEDED, row.error_message
    assert row.finished <= row.deadline
    assert row.route == Route.DIRECT and state in row.left_batch_reason
    assert row.upstream_batch.state == state
    # Called directly, it is still charged no more than its Batch price.
    assert row.cost_usd == Decimal("0.0670")
    assert [c["model"] for c in direct_calls(economy)] == [PRO]


def test_it_a_request_leaves_a_batch_still_running_near_its_deadline(
    economy, workers, alice, team
):
    workers.start(1)
    # Ten hours of batch against a deadline in six: the request leaves it at three.
    [request] = order(alice, team, "sandbox:batch_slow=10 a long night", hours=6)

    [row] = run_until_final([request])

    assert row.status == Status.SUCCEEDED, row.error_message
    assert row.finished <= row.deadline
    assert "had not finished in time" in row.left_batch_reason
    # Nobody waits for the batch any more: it is cancelled upstream.
    batch = tick_until_settled(row.upstream_batch)
    assert batch.state == "cancelled"
    assert [b["state"] for b in economy.batches()] == ["BATCH_STATE_CANCELLED"]


def test_it_a_failed_line_goes_the_normal_way_and_a_blocked_one_fails(
    economy, workers, alice, team
):
    workers.start(1)
    retried = order(alice, team, "sandbox:overloaded*1 a crowded beach")
    blocked = order(alice, team, "sandbox:blocked a forbidden picture")

    rows = {r.prompt: r for r in run_until_final(retried + blocked)}

    ok = rows["sandbox:overloaded*1 a crowded beach"]
    assert ok.status == Status.SUCCEEDED, ok.error_message
    assert [a.provider for a in ok.attempts.order_by("number")] == [BATCH_PROVIDER, "gemini"]
    refused = rows["sandbox:blocked a forbidden picture"]
    assert (refused.status, refused.error_code, refused.quota_state) == (
        Status.FAILED,
        "blocked",
        "refunded",
    )
    assert ok.upstream_batch_id == refused.upstream_batch_id


def test_it_a_request_canceled_in_a_sent_batch_is_never_charged(economy, redis_conn, alice, team):
    [request] = order(alice, team, "sandbox:batch_slow=2 a slow sunrise")
    for _ in range(100):
        tick()
        request.refresh_from_db()
        if request.upstream_batch and request.upstream_batch.name:
            break
        time.sleep(0.05)
    assert request.status == Status.BATCHED
    # What its page says meanwhile: Batch mode's 24 hours, and that the deadline holds.
    assert "Batch mode answers within 24 hours" in request.status_reason
    assert "made directly so that it still arrives in time" in request.status_reason

    assert request.cancel(alice)

    request.refresh_from_db()
    assert (request.status, request.quota_state) == (Status.CANCELED, "refunded")
    batch = tick_until_settled(request.upstream_batch)
    assert batch.settled and batch.delivered == 0
    assert not Image.objects.filter(request=request).exists()
    assert not UsageEntry.objects.filter(request_id=request.pk, kind="charge").exists()


def test_it_batchers_on_several_machines_never_double_anything(economy, redis_conn, alice, team):
    requests = []
    for n in range(6):
        requests += order(alice, team, f"a lighthouse, version {n}", count=2)
    errors = []

    def machine():
        try:
            for _ in range(400):
                tick()
                if not GenerationRequest.objects.exclude(status__in=FINAL_STATUSES).exists():
                    return
                time.sleep(0.02)
        except Exception as exc:  # reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=machine) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    rows = list(GenerationRequest.objects.filter(pk__in=[r.pk for r in requests]))
    assert {r.status for r in rows} == {Status.SUCCEEDED}
    assert Image.objects.count() == len(rows)
    charges = Counter(e.request_id for e in UsageEntry.objects.filter(kind="charge"))
    assert set(charges.values()) == {1} and len(charges) == len(rows)
    # One batch upstream per batch here, and every request in exactly one of them.
    sent = economy.batches()
    assert len(sent) == UpstreamBatch.objects.count()
    keys = [k for b in sent for k in b["keys"]]
    assert sorted(keys) == sorted(str(r.pk) for r in rows)


def test_it_a_send_whose_answer_was_lost_is_found_again_not_sent_twice(
    economy, redis_conn, settings, alice, team
):
    settings.BATCH_MAX_AGE_S = 0
    [request] = order(alice, team, "a cliff at noon")
    _close(timezone.now(), Report())
    batch = UpstreamBatch.objects.get()
    # As if a step had sent it and died before writing the provider's name down.
    spec = get_catalogue()[PRO]
    call = GenerationCall(model=spec, prompt=request.prompt, aspect_ratio=request.aspect_ratio)
    lost = get_batch_client(spec).submit(
        spec, [BatchLine(str(request.pk), call)], batch.display_name
    )
    UpstreamBatch.objects.filter(pk=batch.pk).update(submit_tries=1)

    [row] = run_until_final([request])

    assert row.status == Status.SUCCEEDED
    batch.refresh_from_db()
    assert batch.name == lost.name
    assert [b["name"] for b in economy.batches()] == [lost.name]
    assert Image.objects.filter(request=row).count() == 1
