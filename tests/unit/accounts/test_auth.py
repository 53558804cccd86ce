import pytest
from django.contrib.auth.forms import PasswordChangeForm, PasswordResetForm, SetPasswordForm
from django.contrib.auth.tokens import default_token_generator
from django.core import mail
from django.core.exceptions import ValidationError
from django.urls import reverse
from django.utils.encoding import force_bytes
from django.utils.http import urlsafe_base64_encode

from accounts.forms import LoginForm, SignupForm
from accounts.models import Membership, User
from tests.conftest import PASSWORD

pytestmark = pytest.mark.django_db

GOOD = {
    "email": "dora@example.com",
    "name": "Dora",
    "password1": "a long and unusual phrase",
    "password2": "a long and unusual phrase",
}


def test_it_signs_up_logs_in_and_gives_a_personal_team(client):
    response = client.post(reverse("accounts:signup"), GOOD)
    assert response.status_code == 302
    user = User.objects.get(email="dora@example.com")
    membership = Membership.objects.get(user=user)
    assert membership.is_owner and membership.team.is_personal
    assert user.active_team == membership.team
    assert client.get(reverse("accounts:teams")).status_code == 200


def test_it_follows_next_after_signup(client):
    response = client.post(reverse("accounts:signup"), {**GOOD, "next": "/teams/"})
    assert response["Location"] == "/teams/"


def test_it_ignores_an_offsite_next(client):
    response = client.post(reverse("accounts:signup"), {**GOOD, "next": "https://evil.example/"})
    assert response["Location"] == reverse("home")


@pytest.mark.parametrize(
    ("change", "field", "text"),
    [
        ({"email": ""}, "email", "This field is required"),
        ({"email": "not-an-address"}, "email", "valid email"),
        ({"password2": "something else entirely"}, "password2", "didn’t match"),
        ({"password1": "short", "password2": "short"}, "password2", "too short"),
        (
            {"password1": "12345678901", "password2": "12345678901"},
            "password2",
            "entirely numeric",
        ),
        ({"password1": "password123", "password2": "password123"}, "password2", "too common"),
    ],
)
def test_it_explains_signup_errors_and_keeps_the_input(client, change, field, text):
    response = client.post(reverse("accounts:signup"), {**GOOD, **change})
    assert response.status_code == 200
    assert text in " ".join(response.context["form"].errors[field])
    assert not User.objects.exists()
    if change.get("email", GOOD["email"]):
        assert change.get("email", GOOD["email"]) in response.content.decode()


def test_it_refuses_an_existing_email_whatever_its_case(client, alice):
    response = client.post(reverse("accounts:signup"), {**GOOD, "email": "ALICE@example.com"})
    assert "already exists" in " ".join(response.context["form"].errors["email"])
    assert User.objects.count() == 1


def test_it_logs_in_with_email_in_any_case(client, alice):
    response = client.post(
        reverse("accounts:login"), {"username": "Alice@Example.com", "password": PASSWORD}
    )
    assert response.status_code == 302
    assert client.get(reverse("accounts:teams")).context["user"] == alice


def test_it_says_why_a_login_failed(client, alice):
    response = client.post(reverse("accounts:login"), {"username": alice.email, "password": "x"})
    assert response.status_code == 200
    assert "do not match an account" in response.content.decode()


def test_it_logs_out_only_by_post(client_for, alice):
    client = client_for(alice)
    assert client.get(reverse("accounts:logout")).status_code == 405
    assert client.post(reverse("accounts:logout")).status_code == 302
    assert client.get(reverse("accounts:teams")).status_code == 302


def test_it_sends_a_password_reset_link_that_works(client, alice):
    client.post(reverse("accounts:password_reset"), {"email": alice.email})
    assert len(mail.outbox) == 1
    link = next(line for line in mail.outbox[0].body.splitlines() if "/password/reset/" in line)
    path = link.split("://", 1)[1].split("/", 1)[1]
    response = client.get("/" + path, follow=True)
    new = "a fresh and unusual phrase"
    response = client.post(
        response.redirect_chain[-1][0], {"new_password1": new, "new_password2": new}
    )
    assert response.status_code == 302
    alice.refresh_from_db()
    assert alice.check_password(new)


def test_it_changes_the_password(client_for, alice):
    client = client_for(alice)
    new = "another unusual phrase"
    response = client.post(
        reverse("accounts:password_change"),
        {"old_password": PASSWORD, "new_password1": new, "new_password2": new},
    )
    assert response.status_code == 302
    alice.refresh_from_db()
    assert alice.check_password(new)


def test_it_sends_anonymous_visitors_of_account_pages_to_log_in(client):
    for name in ["accounts:password_change", "accounts:teams", "accounts:tokens"]:
        response = client.get(reverse(name))
        assert response.status_code == 302
        assert response["Location"].startswith(reverse("accounts:login"))


def test_it_shows_why_a_login_failed_once(client, alice):
    response = client.post(reverse("accounts:login"), {"username": alice.email, "password": "x"})
    assert response.content.decode().count("do not match an account") == 1


def _reset_link_page(client, user) -> str:
    """The page a reset link leads to (Django's moves the token into the session)."""
    uid = urlsafe_base64_encode(force_bytes(user.pk))
    link = reverse(
        "accounts:password_reset_confirm", args=[uid, default_token_generator.make_token(user)]
    )
    return client.get(link, follow=True).redirect_chain[-1][0]


@pytest.mark.parametrize(
    ("page", "form_class"),
    [
        ("login", LoginForm),
        ("signup", SignupForm),
        ("password_reset", PasswordResetForm),
        ("password_change", PasswordChangeForm),
        ("password_reset_confirm", SetPasswordForm),
    ],
)
def test_it_shows_an_error_about_the_whole_form_once(client, alice, monkeypatch, page, form_class):
    def refuse(form):
        raise ValidationError("Nothing was saved: try again in a minute.")

    monkeypatch.setattr(form_class, "clean", refuse)
    if page == "password_change":
        client.force_login(alice)
    url = (
        _reset_link_page(client, alice)
        if page == "password_reset_confirm"
        else reverse(f"accounts:{page}")
    )
    response = client.post(url, {"email": alice.email, "username": alice.email})
    assert response.status_code == 200
    assert response.content.decode().count("Nothing was saved: try again in a minute.") == 1
