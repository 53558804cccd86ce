"""/metrics: refused without the token, parseable, and equal to the database's counts."""

from collections import Counter
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from accounts.models import Team
from generator.models import Attempt
from monitoring import rollups
from tests.factories import FLASH, PRO, make_request

URL = reverse("metrics")
TOKEN = "s3cret-scrape-token"


@pytest.fixture
def token(settings, tmp_path):
    settings.METRICS_TOKEN = TOKEN
    settings.REDIS_URL = f"unix://{tmp_path}/absent.sock?db=0"


@pytest.fixture
def scenario(alice):
    now = timezone.now()
    for i in range(6):
        make_request(
            alice,
            created=now - timedelta(hours=i * 5, minutes=7),
            served_model=FLASH if i % 2 else PRO,
            fell_back=bool(i % 2),
            attempts=[(PRO, "overloaded", 1, 2_000, 503), (FLASH, "success", 3, 11_000, 200)]
            if i % 2
            else [(PRO, "success", 1, 25_000, 200)],
        )
    make_request(
        alice,
        created=now - timedelta(minutes=2),
        status="failed",
        attempts=[(PRO, "auth", 1, 100, 403)],
    )


def _scrape(client):
    response = client.get(URL, HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert response.status_code == 200
    return {f.name: f for f in text_string_to_metric_families(response.content.decode())}


def test_it_refuses_scrapes_when_no_token_is_configured(client, db, settings):
    settings.METRICS_TOKEN = ""
    response = client.get(URL, HTTP_AUTHORIZATION="Bearer ")
    assert response.status_code == 403


def test_it_refuses_scrapes_without_the_token(client, db, token):
    assert client.get(URL).status_code == 401
    assert client.get(URL, HTTP_AUTHORIZATION="Bearer wrong").status_code == 401
    assert client.get(URL, HTTP_AUTHORIZATION=TOKEN).status_code == 401
    # The scheme's case does not matter; the token's does.
    assert client.get(URL, HTTP_AUTHORIZATION=f"bearer {TOKEN}").status_code == 200
    assert client.get(URL, HTTP_AUTHORIZATION=f"Bearer {TOKEN.upper()}").status_code == 401


def test_it_tells_apart_teams_that_share_a_name(client, token, alice):
    other = Team.create_with_owner("Acme", alice)
    Team.objects.filter(pk__in=[alice.active_team.pk, other.pk]).update(images_per_day=10)
    series = {
        (s.labels["team_id"], s.labels["team"])
        for s in _scrape(client)["steadyshot_team_images_month"].samples
    }
    assert series == {(str(alice.active_team.pk), "Acme"), (str(other.pk), "Acme")}


@pytest.mark.parametrize("rolled_up", [False, True])
def test_it_counts_what_the_database_holds(client, token, scenario, rolled_up):
    if rolled_up:
        rollups.roll_up()
    families = _scrape(client)
    attempts = {
        (s.labels["model"], s.labels["outcome"]): s.value
        for s in families["steadyshot_attempts"].samples
        if s.name == "steadyshot_attempts_total"
    }
    assert attempts == Counter(Attempt.objects.values_list("model", "outcome"))
    latency = families["steadyshot_attempt_latency_seconds"].samples
    pro_count = next(
        s.value for s in latency if s.name.endswith("_count") and s.labels["model"] == PRO
    )
    assert pro_count == Attempt.objects.filter(model=PRO).count()
    inf = next(
        s.value
        for s in latency
        if s.name.endswith("_bucket") and s.labels == {"model": PRO, "le": "+Inf"}
    )
    assert inf == pro_count
    finished = Counter()
    for s in families["steadyshot_requests_finished"].samples:
        if s.name.endswith("_total"):
            finished[s.labels["status"]] += s.value
    assert finished == {"succeeded": 6, "failed": 1}
    falls = [
        s.value for s in families["steadyshot_fallbacks"].samples if s.name.endswith("_total")
    ]
    assert sum(falls) == 3
    up = {s.labels["source"]: s.value for s in families["steadyshot_source_up"].samples}
    assert up["redis"] == 0
