"""The monitoring page's live panels read real Redis: shared breakers, limiter use,
queues and workers."""

import re
from decimal import Decimal

import pytest

from generator.admission import Submission, submit
from monitoring import sources
from quotas import services
from tests.factories import FLASH, PRO
from tests.unit.monitoring.test_page import URL, _cell


def test_it_shows_the_shared_breakers_and_the_teams_quota_use(
    client_for, staff, alice, team, redis_conn, settings
):
    from generator.resilience.health import Health
    from generator.resilience.taxonomy import Outcome

    settings.BREAKER_DEAD_AFTER = 8
    health = Health.from_settings()
    for _ in range(10):
        health.record(PRO, Outcome.UNAVAILABLE, 2000)
    health.record(FLASH, Outcome.SUCCESS, 12_000)
    (request,) = submit(alice, team, Submission(prompt="a lighthouse at dusk"))
    services.charge(request, Decimal("0.134"), model=PRO)
    html = client_for(staff).get(URL).content.decode()
    breakers = _cell(html, "breakers")
    row = re.search(r">Nano Banana Pro</th>.*?</tr>", breakers, re.S).group(0)
    assert 'class="badge danger">open</span>' in row
    assert "until" in row  # when the next probe may go
    assert "8 calls in a row failed" in row  # why it opened
    # Closed, and with no attempt in the window: folded under the models not called.
    idle = _cell(html, "breakers-idle")
    flash = re.search(r">Nano Banana</th>.*?</tr>", idle, re.S).group(0)
    assert 'class="badge ok">closed</span>' in flash
    teams = _cell(html, "quota-teams")
    assert re.search(rf'>{team.name}</th><td class="num" data-label="Images today">1</td>', teams)
    assert "$0.134" in teams


def test_it_shows_a_model_out_of_its_daily_quota_through_redis(client_for, staff, redis_conn):
    from datetime import UTC, datetime

    from generator.resilience.health import Health
    from generator.resilience.taxonomy import Outcome

    health = Health.from_settings()
    health.record(PRO, Outcome.RATE_LIMITED, 300, quota_scope="day")
    _, reset = health.limiter.day_window(health.clock.now())
    html = client_for(staff).get(URL, {"window": "15m"}).content.decode()
    row = re.search(r">Nano Banana Pro</th>.*?</tr>", _cell(html, "breakers"), re.S).group(0)
    assert '<span class="badge danger">daily quota used up</span>' in row
    assert f"until {datetime.fromtimestamp(reset, UTC):%-d %b %H:%M} UTC" in row


def test_it_exports_a_used_up_daily_quota_to_metrics(client, db, redis_conn, settings):
    from prometheus_client.parser import text_string_to_metric_families

    from generator.resilience.health import Health
    from generator.resilience.taxonomy import Outcome

    settings.METRICS_TOKEN = "scrape"
    Health.from_settings().record(PRO, Outcome.RATE_LIMITED, 300, quota_scope="day")
    text = client.get("/metrics", HTTP_AUTHORIZATION="Bearer scrape").content.decode()
    (family,) = [
        f
        for f in text_string_to_metric_families(text)
        if f.name == "steadyshot_daily_quota_used_up"
    ]
    used_up = {s.labels["model"]: s.value for s in family.samples}
    assert (used_up[PRO], used_up[FLASH]) == (1, 0)


def test_it_shows_queue_depth_and_workers(client_for, staff, redis_conn):
    from rq import Queue

    Queue("default", connection=redis_conn).enqueue("builtins.print", "x")
    html = client_for(staff).get(URL).content.decode()
    queues = _cell(html, "queues")
    assert '>default</th><td class="num" data-label="Waiting">1</td>' in queues
    assert 'id="workers">0<' in html


@pytest.mark.usefixtures("redis_conn")
def test_it_counts_queued_jobs_and_workers(redis_conn):
    from rq import Queue

    Queue("default", connection=redis_conn).enqueue("builtins.print", "x")
    assert sources.queues() == {
        "queues": [
            {"name": "maintenance", "depth": 0, "scheduled": 0, "failed": 0},
            {"name": "default", "depth": 1, "scheduled": 0, "failed": 0},
        ],
        "workers": 0,
        "calls": {"callers": 0, "in_flight": 0, "waiting": 0},
    }


def test_it_counts_live_callers_and_their_calls(client_for, staff, redis_conn):
    from generator.caller import calls

    calls.announce("caller-a", 3, ttl_s=30)
    calls.announce("caller-b", 0, ttl_s=30)
    html = client_for(staff).get(URL).content.decode()
    assert 'id="callers">2<' in html
    assert 'id="calls-in-flight">3<' in html
    assert 'id="no-callers"' not in html
    calls.retire("caller-a")
    calls.retire("caller-b")
    assert sources.queues()["calls"] == {"callers": 0, "in_flight": 0, "waiting": 0}


def test_it_warns_when_calls_wait_and_no_caller_runs(client_for, staff, redis_conn):
    from generator.caller import calls

    redis_conn.rpush(calls.CALLS_KEY, b"{}")
    html = client_for(staff).get(URL).content.decode()
    assert 'id="calls-waiting">1<' in html
    notice = re.search(r'<p [^>]*id="no-callers">.*?</p>', html, re.S).group(0)
    assert "no caller is running" in notice


def test_it_stops_counting_a_caller_whose_heartbeat_stopped(redis_conn):
    from generator.caller import calls

    calls.announce("caller-live", 2, ttl_s=30)
    calls.announce("caller-gone", 5, ttl_s=-1)  # its last beat ran out a second ago
    assert sources.queues()["calls"] == {"callers": 1, "in_flight": 2, "waiting": 0}
    # The reader dropped the dead one's entry.
    assert redis_conn.hkeys(calls.CALLERS_KEY) == [b"caller-live"]
