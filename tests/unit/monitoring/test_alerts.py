"""Alerts fire once, clear, keep their history, and reach ADMINS and the webhook."""

import json
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from django.core import mail
from django.urls import reverse
from django.utils import timezone

from monitoring import alerts, sources
from monitoring.models import Alert
from tests.factories import FLASH, PRO, make_request


@pytest.fixture
def webhook():
    """A local HTTP server that records the JSON bodies posted to it."""
    received = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook", received
    server.shutdown()
    server.server_close()


@pytest.fixture
def quiet_sources(monkeypatch):
    # The live sources belong to other modules; these tests are about the SQL rules.
    monkeypatch.setattr(sources, "breakers", lambda: None)
    monkeypatch.setattr(sources, "quota_usage", lambda: None)


@pytest.fixture
def alerting(settings, webhook, quiet_sources, monkeypatch):
    # The webhook's retries wait in real time; these tests count tries, not seconds.
    monkeypatch.setattr(alerts._post_with_retries.retry, "sleep", lambda seconds: None)
    settings.ADMINS = ["ops@example.com"]
    settings.ALERT_WEBHOOK_URL = webhook[0]
    settings.ALERT_MIN_REQUESTS = 10
    settings.ALERT_MIN_ERRORS = 5
    return webhook[1]


def _bad_quarter_hour(user, now, delivered=5, failed=7):
    for i in range(delivered):
        make_request(
            user,
            created=now - timedelta(minutes=10, seconds=i),
            attempts=[(FLASH, "success", 1, 9000, 200)],
        )
    for i in range(failed):
        make_request(
            user,
            created=now - timedelta(minutes=9, seconds=i),
            status="failed",
            attempts=[(PRO, "overloaded", 1, 900, 503)],
        )


def test_it_fires_once_and_clears(alice, alerting):
    now = timezone.now()
    _bad_quarter_hour(alice, now)

    first = alerts.evaluate(now=now)
    assert first["opened"] == 2  # delivered rate 5/12, and 503s are every error
    rules = set(Alert.objects.filter(resolved=None).values_list("rule", flat=True))
    assert rules == {"delivered_rate", "errors_503"}
    assert len(mail.outbox) == 2
    assert mail.outbox[0].to == ["ops@example.com"]
    delivered_mail = next(m for m in mail.outbox if "delivered" in m.subject)
    assert "[firing] Only 42% of requests delivered" in delivered_mail.subject
    assert {p["rule"] for p in alerting} == {"delivered_rate", "errors_503"}
    assert all(p["state"] == "firing" for p in alerting)

    # Still bad a minute later: no new row, no new notice.
    assert alerts.evaluate(now=now + timedelta(minutes=1))["opened"] == 0
    assert Alert.objects.count() == 2
    assert len(mail.outbox) == 2 and len(alerting) == 2

    # Half an hour later the window is empty (below the minimum): the alerts clear.
    cleared = alerts.evaluate(now=now + timedelta(minutes=30))
    assert cleared["resolved"] == 2
    assert not Alert.objects.filter(resolved=None).exists()
    assert Alert.objects.count() == 2  # history kept
    assert len(mail.outbox) == 4
    assert {p["state"] for p in alerting[2:]} == {"resolved"}


def test_it_opens_a_new_episode_when_it_fires_again(alice, alerting):
    now = timezone.now()
    _bad_quarter_hour(alice, now)
    alerts.evaluate(now=now)
    alerts.evaluate(now=now + timedelta(minutes=30))
    _bad_quarter_hour(alice, now + timedelta(hours=1))
    alerts.evaluate(now=now + timedelta(hours=1))
    episodes = Alert.objects.filter(rule="delivered_rate")
    assert episodes.count() == 2
    assert episodes.filter(resolved=None).count() == 1


def test_it_stays_quiet_below_the_minimum_count(alice, alerting):
    now = timezone.now()
    _bad_quarter_hour(alice, now, delivered=1, failed=3)
    assert alerts.evaluate(now=now)["opened"] == 0
    assert mail.outbox == []


def _refused(alice, model, at, http_status=403):
    """A request failed by an unauthorised answer from `model`."""
    make_request(
        alice, created=at, status="failed", attempts=[(model, "auth", 1, 100, http_status)]
    )


def test_it_alerts_on_auth_errors_per_model(alice, alerting):
    now = timezone.now()
    _refused(alice, PRO, now - timedelta(minutes=2))
    alerts.evaluate(now=now)
    alert = Alert.objects.get()
    assert (alert.rule, alert.subject, alert.severity) == ("auth", PRO, "critical")


def test_it_counts_auth_errors_in_words_and_names_the_model_as_people_know_it(alice, alerting):
    now = timezone.now()
    _refused(alice, PRO, now - timedelta(minutes=2))
    for i in range(2):
        _refused(alice, FLASH, now - timedelta(minutes=3, seconds=i), http_status=401)
    alerts.evaluate(now=now)
    messages = {a.subject: a.message for a in Alert.objects.all()}
    assert messages[PRO].startswith(
        "1 attempt on Nano Banana Pro was refused as unauthorised (401/403) in the last 15 min"
    )
    assert messages[FLASH].startswith("2 attempts on Nano Banana were refused as unauthorised")
    assert any("[firing] 1 attempt on Nano Banana Pro was" in m.subject for m in mail.outbox)


def test_it_alerts_when_a_breaker_opens(db, alerting, monkeypatch):
    state = {"breaker": "open"}
    # sources.breakers() tells an open breaker's reason (its latest transition) as "why".
    monkeypatch.setattr(
        sources,
        "breakers",
        lambda: [
            {
                "model": PRO,
                "breaker": state["breaker"],
                "open_until": None,
                "why": "6 of 10 calls failed",
            }
        ],
    )
    alerts.evaluate()
    alert = Alert.objects.get(resolved=None)
    assert alert.rule == "breaker_open" and "6 of 10 calls failed" in alert.message
    assert alert.message.startswith("The circuit breaker for Nano Banana Pro is open")
    state["breaker"] = "closed"
    alerts.evaluate()
    assert not Alert.objects.filter(resolved=None).exists()


def test_it_alerts_when_a_team_nears_its_quota(team, alerting, monkeypatch):
    monkeypatch.setattr(
        sources,
        "quota_usage",
        lambda: {"teams": [{"team_id": team.pk, "team": team.name, "percent": 93.0}], "users": []},
    )
    alerts.evaluate()
    alert = Alert.objects.get()
    assert alert.rule == "team_quota" and alert.subject == str(team.pk)


def test_it_shows_open_alerts_to_staff_only(client_for, staff, bob, alice):
    Alert.objects.create(rule="auth", subject=PRO, message="Access to the provider refused.")
    assert (
        "Access to the provider refused."
        in client_for(staff).get(reverse("home")).content.decode()
    )
    assert (
        "Access to the provider refused."
        not in client_for(bob).get(reverse("home")).content.decode()
    )


def test_it_survives_a_webhook_that_is_down(alice, alerting, settings):
    settings.ALERT_WEBHOOK_URL = "http://127.0.0.1:9/unreachable"
    now = timezone.now()
    _bad_quarter_hour(alice, now)
    assert alerts.evaluate(now=now)["opened"] == 2
    assert len(mail.outbox) == 2


def test_it_tries_a_restarting_webhook_again(monkeypatch):
    """A receiver that answers 503 (restarting) gets the alert on a later try; one that
    answers 400 is not asked again."""
    answers, received = [503, 204], []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(answers.pop(0) if answers else 400)
            self.end_headers()

        def log_message(self, *args):
            pass

    monkeypatch.setattr(alerts._post_with_retries.retry, "sleep", lambda seconds: None)
    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/hook"
        assert alerts.post_webhook(url, {"alert": "x"})
        assert received == [{"alert": "x"}, {"alert": "x"}]
        assert not alerts.post_webhook(url, {"alert": "y"})  # 400: once, not retried
        assert len(received) == 3
    finally:
        server.shutdown()
        server.server_close()
