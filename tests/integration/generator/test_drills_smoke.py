"""CI-sized versions of two failure drills (drills/run.py, docs/reliability.md): real
workers, Redis and sandbox, a handful of requests, the drills' own checks: every
accepted request ends exactly once, the quota ledger balances, no file is left behind."""

from collections import Counter
from datetime import timedelta

import pytest
from django.utils import timezone

from drills.hosts import ledger
from drills.run import orphan_files
from generator.admission import Submission, submit
from generator.models import Image, Status
from generator.reconcile import reconcile
from tests.integration.generator.test_chain import wait_for_all

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


@pytest.fixture
def drill(settings, tmp_path, sandbox_settings, workers):
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.TIME_SCALE = 0.1
    sandbox_settings.reset()
    workers.env["TIME_SCALE"] = "0.1"
    workers.env["MEDIA_ROOT"] = str(settings.MEDIA_ROOT)
    return workers


def _assert_each_ended_once(requests) -> None:
    rows = wait_for_all(requests, timeout=45)
    states = Counter(r.status for r in rows)
    assert states == {Status.SUCCEEDED: len(requests)}, [r.error_message for r in rows]
    images = Counter(Image.objects.values_list("request", flat=True))
    assert sorted(images.values()) == [1] * len(requests)
    assert ledger(len(requests), states)["balanced"], ledger(len(requests), states)
    assert orphan_files() == []


def test_it_ends_each_request_once_when_the_upstream_closes_connections(drill, alice, team):
    drill.start(1)
    requests = [
        submit(alice, team, Submission(prompt=f"drill-{n} sandbox:disconnect*1 a wren"))[0]
        for n in range(3)
    ]
    _assert_each_ended_once(requests)
    # Each met the fault once, then was delivered.
    assert all(r.attempts.filter(outcome="network").count() == 1 for r in requests)


def test_it_ends_each_request_once_after_redis_is_flushed(
    drill, settings, redis_conn, alice, team
):
    # Accepted and queued, then Redis loses every job before a worker takes them.
    requests = [submit(alice, team, Submission(prompt=f"drill-{n} a plover"))[0] for n in range(3)]
    redis_conn.flushdb()
    drill.start(1)

    later = timezone.now() + timedelta(seconds=settings.RECONCILE_GRACE_SECONDS + 1)
    assert reconcile(later).requeued == 3
    _assert_each_ended_once(requests)
