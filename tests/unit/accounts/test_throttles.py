"""Throttles (issue 13, item 10): log-ins by account and by address (django-axes), and
sign-ups, password reset mails and unknown API tokens per address (django-ratelimit).
Time moves by moving the recorded failures back (axes) or the clock forward
(ratelimit's windows), never by sleeping."""

import time
from datetime import timedelta

import pytest
from axes.models import AccessAttempt
from django.core import mail
from django.core.management import call_command
from django.db.models import F
from django.urls import reverse

from accounts.models import ApiToken
from tests.conftest import PASSWORD
from tests.unit.accounts.test_auth import GOOD

pytestmark = pytest.mark.django_db

LOCKED = "Too many failed log-ins for this account or from your address"


def log_in(client, email, password, address="10.0.0.1"):
    return client.post(
        reverse("accounts:login"), {"username": email, "password": password}, REMOTE_ADDR=address
    )


def fail(client, email, times, *, addresses=("10.0.0.1",)):
    """`times` wrong passwords: refused as wrong until the last, which locks."""
    for n in range(times):
        response = log_in(client, email, "wrong", addresses[n % len(addresses)])
        assert response.status_code == (429 if n == times - 1 else 200), n


def travel_past_cool_off(settings):
    AccessAttempt.objects.update(
        attempt_time=F("attempt_time") - timedelta(minutes=settings.LOGIN_COOLOFF_MINUTES + 1)
    )


def test_it_refuses_the_right_password_after_too_many_wrong_ones_until_the_cool_off(
    client, alice, settings
):
    fail(client, alice.email, settings.LOGIN_FAILURE_LIMIT)

    response = log_in(client, alice.email, PASSWORD)
    assert response.status_code == 429
    body = response.content.decode()
    assert LOCKED in body and "paused for 15 minutes" in body
    assert "reset your password by e-mail" in body
    assert response["Retry-After"] == str(settings.LOGIN_COOLOFF_MINUTES * 60)
    assert client.get(reverse("accounts:teams")).status_code == 302  # not logged in

    travel_past_cool_off(settings)
    response = log_in(client, alice.email, PASSWORD)
    assert response.status_code == 302
    assert client.get(reverse("accounts:teams")).context["user"] == alice


def test_it_locks_an_account_whatever_address_the_guesses_come_from(client, alice, settings):
    addresses = [f"10.0.1.{n}" for n in range(settings.LOGIN_FAILURE_LIMIT)]
    fail(client, "ALICE@example.com ", settings.LOGIN_FAILURE_LIMIT, addresses=addresses)
    response = log_in(client, alice.email, PASSWORD, "192.0.2.7")
    assert response.status_code == 429 and LOCKED in response.content.decode()


def test_it_locks_an_address_whatever_accounts_it_guesses(client, alice, bob, settings):
    for n in range(settings.LOGIN_FAILURE_LIMIT):
        log_in(client, f"someone{n}@example.com", "wrong", "10.0.2.1")
    assert log_in(client, bob.email, PASSWORD, "10.0.2.1").status_code == 429
    # Another address is not concerned.
    assert log_in(client, bob.email, PASSWORD, "10.0.2.2").status_code == 302


def test_it_unlocks_an_account_whose_password_was_reset_by_email(client, alice, settings):
    fail(client, alice.email, settings.LOGIN_FAILURE_LIMIT)
    client.post(reverse("accounts:password_reset"), {"email": alice.email})
    link = next(line for line in mail.outbox[0].body.splitlines() if "/password/reset/" in line)
    form = client.get("/" + link.split("://", 1)[1].split("/", 1)[1], follow=True)
    new = "a fresh and unusual phrase"
    client.post(form.redirect_chain[-1][0], {"new_password1": new, "new_password2": new})

    assert log_in(client, alice.email, new, "10.0.3.1").status_code == 302


def test_it_lets_an_operator_unlock_an_account(client, alice, settings):
    fail(client, alice.email, settings.LOGIN_FAILURE_LIMIT)
    call_command("axes_reset_username", alice.email)
    assert log_in(client, alice.email, PASSWORD).status_code == 302


def _signup(client, n):
    return client.post(
        reverse("accounts:signup"),
        {**GOOD, "email": f"new{n}@example.com"},
        REMOTE_ADDR="10.1.0.1",
    )


def test_it_throttles_sign_ups_per_address_until_the_window_ends(client, settings, monkeypatch):
    settings.SIGNUP_RATE = "3/h"
    for n in range(3):
        assert _signup(client, n).status_code == 302
        client.logout()

    response = _signup(client, 3)
    assert response.status_code == 429
    assert "Too many sign-ups from your address. Try again in" in response.content.decode()
    assert 0 < int(response["Retry-After"]) <= 3600

    later = time.time() + 3600
    monkeypatch.setattr(time, "time", lambda: later)
    assert _signup(client, 4).status_code == 302


def test_it_throttles_password_reset_mails_per_address_and_per_email(client, alice, settings):
    settings.PASSWORD_RESET_RATE = "2/h"
    reset = reverse("accounts:password_reset")
    for n in range(2):
        assert client.post(reset, {"email": alice.email}, REMOTE_ADDR=f"10.2.0.{n}").status_code
    # The same address again, and the same e-mail address from a new one.
    for address in ("10.2.0.0", "10.2.0.9"):
        client.post(reset, {"email": alice.email}, REMOTE_ADDR=address)
    response = client.post(reset, {"email": alice.email}, REMOTE_ADDR="10.2.0.10")
    assert response.status_code == 429
    assert "Too many password reset requests" in response.content.decode()
    assert len(mail.outbox) == 2


def _list(client, token, address="10.3.0.1"):
    return client.get(
        "/api/v1/generations", HTTP_AUTHORIZATION=f"Bearer {token}", REMOTE_ADDR=address
    )


def test_it_answers_429_after_too_many_unknown_api_tokens_until_the_window_ends(
    client, alice, settings, monkeypatch
):
    settings.API_TOKEN_FAILURE_RATE = "5/10m"
    _, good = ApiToken.issue(alice, "ci")
    for n in range(5):
        assert _list(client, f"sst_guess{n}").status_code == 401

    for token in ("sst_guess5", good):  # while over, even a good token waits
        response = _list(client, token)
        assert response.status_code == 429
        error = response.json()["error"]
        assert error["code"] == "too_many_failures"
        assert "unknown API token" in error["message"]
        assert 0 < int(response["Retry-After"]) <= 600
    assert _list(client, good, "10.3.0.2").status_code == 200  # another address

    later = time.time() + 600
    monkeypatch.setattr(time, "time", lambda: later)
    assert _list(client, good).status_code == 200
