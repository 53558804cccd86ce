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


@pytest.mark.parametrize("rolled_up", [False, True])
def test_it_shows_the_datas_own_numbers(client_for, staff, scenario, no_redis, rolled_up):
    if rolled_up:
        rollups.roll_up()
    start = scenario - timedelta(hours=1)
    final = GenerationRequest.objects.filter(
        finished__gte=start, status__in=["succeeded", "failed", "canceled"]
    )
    delivered = final.filter(status="succeeded")
    attempts = Attempt.objects.filter(started__gte=start)

    html = client_for(staff).get(URL, {"window": "1h"}).content.decode()

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
    for model in (PRO, FLASH):
        n = attempts.filter(model=model).count()
        assert re.search(rf">{model}</a></td><td class=\"num\">{n}</td>", per_model)
    # The auth failures of three hours ago are outside the window.
    assert "Authentication (401/403)</th>" not in _cell(html, "mix-time")
    served = _cell(html, "served")
    assert re.search(
        r">quality-first</a></td><td class=\"num\">2</td><td class=\"num\">5</td>", served
    )


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


def test_its_links_open_the_filtered_request_log(client, staff, scenario, no_redis):
    staff.is_superuser = True
    staff.save()
    client.force_login(staff)
    html = client.get(URL, {"window": "1h"}).content.decode()
    links = set(re.findall(r'href="(/admin/generator/[^"]+)"', html))
    assert links
    for link in links:
        response = client.get(link.replace("&amp;", "&"))
        assert response.status_code == 200, link
        assert "?e=1" not in response.get("Location", "")
