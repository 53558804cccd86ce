"""The staff monitoring page: who may see it, and that its numbers are the data's."""

import re
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from generator.models import Attempt, GenerationRequest
from monitoring import rollups
from tests.factories import FLASH, PRO, make_request

URL = reverse("monitoring:dashboard")


@pytest.fixture
def no_redis(settings, tmp_path):
    settings.REDIS_URL = f"unix://{tmp_path}/absent.sock?db=0"


@pytest.fixture
def scenario(alice, charlie):
    """In the last hour: 7 delivered (2 after falling back), 2 failed, 1 canceled, 1 still
    running; older ones that the 1 h window must leave out."""
    now = timezone.now()
    for i in range(7):
        fell_back = i < 2
        attempts = [(PRO, "overloaded", 1, 1500, 503)] if fell_back else []
        attempts.append((FLASH if fell_back else PRO, "success", 5, 12_000 + i * 1000, 200))
        make_request(
            alice if i % 2 else charlie,
            created=now - timedelta(minutes=40 - i),
            served_model=FLASH if fell_back else PRO,
            fell_back=fell_back,
            attempts=attempts,
        )
    for i in range(2):
        make_request(
            alice,
            created=now - timedelta(minutes=30 - i),
            status="failed",
            attempts=[(PRO, "rate_limited", 1, 300, 429), (FLASH, "timeout", 4, 120_000, None)],
        )
    make_request(alice, created=now - timedelta(minutes=20), status="canceled")
    make_request(alice, created=now - timedelta(minutes=3), status="queued")
    # Outside the window: three hours ago.
    for i in range(4):
        make_request(
            alice,
            created=now - timedelta(hours=3, minutes=i),
            status="failed",
            attempts=[(PRO, "auth", 1, 200, 403)],
        )
    return now


def _cell(html: str, table_id: str) -> str:
    return re.search(rf'<table id="{table_id}".*?</table>', html, re.S).group(0)


def test_it_sends_anonymous_users_to_log_in(client, db):
    response = client.get(URL)
    assert response.status_code == 302
    assert reverse("accounts:login") in response["Location"]


def test_it_hides_the_page_from_members(client_for, bob):
    assert client_for(bob).get(URL).status_code == 404


def test_it_refuses_other_methods(client_for, staff):
    assert client_for(staff).post(URL).status_code == 405


def test_it_explains_an_unknown_window(client_for, staff, no_redis):
    response = client_for(staff).get(URL, {"window": "2y"})
    assert response.status_code == 400
    assert "must be one of 15m, 1h, 24h, 7d" in response.content.decode()


def test_it_refuses_two_windows_at_once(client_for, staff, no_redis):
    response = client_for(staff).get(URL + "?window=7d&window=15m")
    assert response.status_code == 400
    assert "given once; got &#x27;7d&#x27; and &#x27;15m&#x27;" in response.content.decode()


@pytest.fixture
def operator(staff):
    """Staff who may read the request log in the admin, as the demo operator may."""
    from accounts.management.commands.ensure_demo import grant_demo_permissions

    grant_demo_permissions(staff)
    return staff


@pytest.mark.parametrize("rolled_up", [False, True])
def test_it_shows_the_datas_own_numbers(client_for, operator, scenario, no_redis, rolled_up):
    if rolled_up:
        rollups.roll_up()
    start = scenario - timedelta(hours=1)
    final = GenerationRequest.objects.filter(
        finished__gte=start, status__in=["succeeded", "failed", "canceled"]
    )
    delivered = final.filter(status="succeeded")
    attempts = Attempt.objects.filter(started__gte=start)

    html = client_for(operator).get(URL, {"window": "1h"}).content.decode()

    assert final.count() == 10 and delivered.count() == 7
    assert 'href="/admin/generator/generationrequest/?' in html
    tiles = re.search(r'id="tile-requests".*?</div>', html, re.S).group(0)
    assert f">{final.count()}</a>" in tiles
    assert f"{delivered.count()} of {final.count()}" in html
    assert "70.0 %" in html  # 7 of 10 delivered
    assert f"{delivered.filter(fell_back=True).count()} of {delivered.count()}" in html
    failed = attempts.exclude(outcome="success").count()
    assert f"{failed} of {attempts.count()}" in html
    per_model = _cell(html, "per-model")
    for model, name in ((PRO, "Nano Banana Pro"), (FLASH, "Nano Banana")):
        n = attempts.filter(model=model).count()
        assert re.search(
            rf'>{name}</a></th>\s*<td class="num" data-label="Attempts">{n}</td>', per_model
        )
    # The auth failures of three hours ago are outside the window.
    assert "Authentication (401/403)</th>" not in _cell(html, "mix-time")
    served = _cell(html, "served")
    assert re.search(
        r">Quality first</th><td [^>]*>5</td><td [^>]*>2</td>", served
    )  # Nano Banana Pro, then Nano Banana
    pro_share = _cell(html, "pro-share")
    assert re.search(r'data-label="By Nano Banana Pro">5</td>', pro_share)
    assert "71.4 %" in pro_share  # 5 of 7 quality-first deliveries got Pro


def test_it_says_when_live_sources_are_not_available(client_for, staff, no_redis):
    html = client_for(staff).get(URL).content.decode()
    # Breakers and queues live in Redis; quota use comes from the database and stays.
    assert "Queue depth is not available" in html
    assert "Breaker state is not available" in html
    assert "Quota use is not available" not in html


def test_it_links_staff_to_the_page_in_the_nav(client_for, staff, bob, no_redis):
    assert f'href="{URL}"' in client_for(staff).get(reverse("home")).content.decode()
    assert f'href="{URL}"' not in client_for(bob).get(reverse("home")).content.decode()


@pytest.mark.parametrize("window", ["15m", "24h", "7d"])
def test_it_renders_every_window(client_for, staff, scenario, no_redis, window):
    response = client_for(staff).get(URL, {"window": window})
    assert response.status_code == 200
    assert "<svg" in response.content.decode()
    assert 'style="' not in response.content.decode()


def test_it_its_links_open_the_filtered_request_log(client, operator, scenario, no_redis):
    # The read-only operator (the demo account's permissions) can open every link.
    client.force_login(operator)
    html = client.get(URL, {"window": "1h"}).content.decode()
    links = set(re.findall(r'href="(/admin/generator/[^"]+)"', html))
    assert links
    for link in links:
        response = client.get(link.replace("&amp;", "&"))
        assert response.status_code == 200, link
        assert "?e=1" not in response.get("Location", "")


def _text(html: str) -> str:
    """What a person reads: the page without its tags (and so without its links)."""
    return re.sub(r"<[^>]+>", " ", html)


def test_it_names_models_as_people_know_them(client_for, staff, scenario, no_redis):
    html = client_for(staff).get(URL, {"window": "1h"}).content.decode()
    for model_id in (PRO, FLASH):
        assert model_id not in _text(html)
    assert "Nano Banana Pro" in _cell(html, "per-model")


def test_it_labels_every_chart_and_gives_it_a_legend(client_for, staff, scenario, no_redis):
    html = client_for(staff).get(URL, {"window": "1h"}).content.decode()
    charts = re.findall(r"<figure class=\"chart-box[^\"]*\">(.*?)</figure>", html, re.S)
    assert len(charts) == len(re.findall(r'<svg class="chart', html)) >= 6
    for chart in charts:
        title = re.search(r"<title id=\"chart-t\d+\">([^<]+)</title>", chart)[1]
        assert "<text" in chart, f"{title}: no axis or bar labels"
        caption = re.search(r"<figcaption>([^<]+)</figcaption>", chart)
        assert caption or "heatmap" in chart, f"{title}: no caption"
    # Each chart's legend, or the one legend of the three lines, names its colours.
    trends = re.search(r'id="trends-h".*?</section>', html, re.S)[0]
    assert "This window" in trends and "Previous window" in trends
    served = re.search(r'id="served-h".*?</section>', html, re.S)[0]
    assert re.search(
        r'<ul class="legend"><li><span class="key m-0"></span>Nano Banana Pro', served
    )


def test_it_draws_the_request_rates_over_time_beside_the_previous_window(
    client_for, staff, alice, no_redis
):
    now = timezone.now()
    # Now: 6 delivered 10-20 minutes ago, 2 of them after falling back. The hour before:
    # 5 delivered and 5 failed at the same offset into the window.
    for i in range(6):
        make_request(
            alice, created=now - timedelta(minutes=20, seconds=i), fell_back=i < 2, tti_s=40
        )
    for i in range(10):
        make_request(
            alice,
            created=now - timedelta(hours=1, minutes=20, seconds=i),
            status="succeeded" if i < 5 else "failed",
            tti_s=40,
        )
    html = client_for(staff).get(URL, {"window": "1h"}).content.decode()
    table = _cell(html, "series")
    assert re.search(
        r'data-label="Delivered">100.0 % <span class="muted">\(50.0 %\)</span>', table
    )
    assert re.search(r'data-label="Fell back">33.3 % <span class="muted">\(0.0 %\)</span>', table)
    delivered = re.search(r"<figcaption>Delivered rate</figcaption>(.*?)</svg>", html, re.S)[1]
    assert "this window: 100%" in delivered and "previous window: 50%" in delivered
    assert re.search(r"<figcaption>Time to image, p95</figcaption>", html)


def test_it_folds_the_models_that_were_not_called_in_the_window(
    client_for, staff, scenario, no_redis, monkeypatch
):
    from monitoring import sources

    rows = [
        {
            "model": m,
            "breaker": "closed",
            "open_until": None,
            "failure_rate": 0.0,
            "window_calls": 0,
            "p50_ms": None,
            "quota": {},
        }
        for m in ("gpt-image-1", FLASH, "gemini-3-pro-image", PRO)
    ]
    monkeypatch.setattr(sources, "breakers", lambda: rows)
    html = client_for(staff).get(URL, {"window": "1h"}).content.decode()
    shown = re.findall(r'<th scope="row">([^<]+)</th>', _cell(html, "breakers"))
    assert shown == ["Nano Banana Pro", "Nano Banana"]
    folded = re.search(r'<details id="breakers-idle-box">.*?</details>', html, re.S)[0]
    assert "2 models not called in this window" in folded
    assert "GPT Image (OpenAI-compatible)" in folded and "Nano Banana Pro (GA)" in folded


def test_it_says_the_breakers_figures_are_over_its_own_recent_calls(
    client_for, staff, scenario, no_redis, monkeypatch
):
    from monitoring import sources

    row = {
        "model": PRO,
        "breaker": "closed",
        "open_until": None,
        "failure_rate": 6 / 11,
        "window_calls": 11,
        "window_size": 20,
        "p50_ms": 14_000,
        "quota": {},
    }
    monkeypatch.setattr(sources, "breakers", lambda: [row])
    html = client_for(staff).get(URL, {"window": "1h"}).content.decode()
    breakers = _cell(html, "breakers")
    assert '<th class="num">Failed, of its recent calls</th>' in breakers
    assert re.search(
        r'data-label="Failed, of its recent calls">54.5 % '
        r'<span class="count">of its last 11 counted calls</span>',
        breakers,
    )
    note = " ".join(_text(re.search(r'<p [^>]*id="breakers-note">.*?</p>', html, re.S)[0]).split())
    assert "its own window of recent calls, not by this page's time window" in note
    assert "last counted calls (at most 20)" in note
    assert "not 429s" in note and "below, counts every attempt in the window" in note


def test_it_shows_a_model_whose_daily_quota_is_used_up(client_for, staff, no_redis, monkeypatch):
    from generator.resilience.breaker import BreakerConfig
    from generator.resilience.clock import VirtualClock
    from generator.resilience.health import Health
    from generator.resilience.limiter import LimiterConfig, Quotas
    from generator.resilience.stores import MemoryStore
    from generator.resilience.taxonomy import Outcome
    from monitoring import sources

    # 1 700 000 000 is 14 Nov 2023, 22:13 UTC: the upstream's day ends at midnight
    # Pacific, 08:00 UTC.
    quotas = {PRO: Quotas(rpm=20, ipm=20, rpd=1000), FLASH: Quotas(rpm=150)}
    health = Health(MemoryStore(), VirtualClock(), quotas, BreakerConfig(), LimiterConfig())
    assert health.acquire(PRO)[0]
    health.record(PRO, Outcome.RATE_LIMITED, 300, quota_scope="day")
    monkeypatch.setattr(sources, "_health", lambda: health)
    html = client_for(staff).get(URL, {"window": "15m"}).content.decode()
    # Not called in the window (it is skipped), yet not folded away: it is why requests
    # fall back.
    row = re.search(r">Nano Banana Pro</th>.*?</tr>", _cell(html, "breakers"), re.S)[0]
    assert 'class="badge ok">closed</span>' in row
    assert '<span class="badge danger">daily quota used up</span>' in row
    assert "until 15 Nov 08:00 UTC: skipped until then, requests fall back" in row
    assert "rpd 1/1000" in row
    idle = re.search(r">Nano Banana</th>.*?</tr>", _cell(html, "breakers-idle"), re.S)[0]
    assert "daily quota" not in idle
