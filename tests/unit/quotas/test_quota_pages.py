"""The quota pages: who sees what, the owner's limits form, the partial the prompt page
includes, and the API's answer over quota."""

import json
from decimal import Decimal

import pytest
from django.template.loader import render_to_string
from django.urls import reverse

from accounts.models import ApiToken, Team
from generator.admission import Submission, submit
from generator.models import GenerationRequest
from quotas import selectors, services
from quotas.periods import format_reset, periods

pytestmark = pytest.mark.django_db


def _submit(user, team, count=1):
    return submit(user, team, Submission(prompt="a lighthouse at dusk", count=count))


def _limit(team, **limits):
    Team.objects.filter(pk=team.pk).update(**limits)
    team.refresh_from_db()


def _page(team):
    return reverse("quotas:team_quota", args=[team.id])


def _edit(team):
    return reverse("quotas:team_quota_edit", args=[team.id])


# --- The quota page ---------------------------------------------------------------------


def test_it_the_owner_sees_each_members_use(client_for, alice, bob, team):
    _limit(team, images_per_day=10)
    _submit(alice, team, count=1)
    (delivered, _, _) = _submit(bob, team, count=3)
    services.charge(delivered, Decimal("0.039"), model="gemini-2.5-flash-image")

    response = client_for(alice).get(_page(team))
    assert response.status_code == 200
    members = {row["user"].email: row for row in response.context["members"]}
    assert members["bob@example.com"]["images_today"] == 3
    assert members["bob@example.com"]["in_flight"] == 2
    assert members["alice@example.com"]["images_today"] == 1
    body = response.content.decode()
    assert "bob@example.com" in body
    assert "Change limits" in body
    assert 'data-label="Model">Nano Banana<' in body  # the ledger's charge row


def test_it_a_member_sees_the_team_totals_and_their_own_use_only(client_for, alice, bob, team):
    _limit(team, images_per_day=10)
    _submit(alice, team, count=2)
    _submit(bob, team, count=1)

    response = client_for(bob).get(_page(team))
    assert response.status_code == 200
    assert response.context["members"] is None
    day = response.context["quota"].lines[0]
    assert (day.code, day.total, day.limit) == ("images_per_day", 3, 10)
    assert response.context["quota"].mine.images_today == 1
    assert [e.user for e in response.context["entries"]] == [bob]
    body = response.content.decode()
    assert "alice@example.com" not in body
    assert "Change limits" not in body


def test_it_the_page_warns_at_80_percent_and_says_when_a_limit_is_reached(client_for, alice, team):
    _limit(team, images_per_day=5)
    _submit(alice, team, count=4)
    body = client_for(alice).get(_page(team)).content.decode()
    assert "Over 80 % of a limit is used." in body
    _submit(alice, team, count=1)
    body = client_for(alice).get(_page(team)).content.decode()
    resets = format_reset(periods().day_end)
    assert f"new images are refused until {resets}" in body


def test_it_quota_redirects_to_the_active_teams_page(client_for, bob, team):
    response = client_for(bob).get(reverse("quotas:quota"))
    assert response.status_code == 302
    assert response["Location"] == _page(team)


def test_it_outsiders_get_404(client_for, charlie, team):
    client = client_for(charlie)
    assert client.get(_page(team)).status_code == 404
    assert client.get(_edit(team)).status_code == 404
    assert client.post(_edit(team), {"images_per_day": "1"}).status_code == 404
    team.refresh_from_db()
    assert team.images_per_day is None


def test_it_anonymous_visitors_are_sent_to_log_in(client, team):
    for url in (_page(team), _edit(team), reverse("quotas:quota")):
        response = client.get(url)
        assert response.status_code == 302
        assert response["Location"].startswith(reverse("accounts:login"))


def test_it_wrong_methods_are_refused(client_for, alice, team):
    client = client_for(alice)
    assert client.post(_page(team)).status_code == 405
    assert client.post(reverse("quotas:quota")).status_code == 405
    assert client.put(_edit(team)).status_code == 405


def test_it_staff_see_any_teams_quota(client_for, staff, alice, team):
    response = client_for(staff).get(_page(team))
    assert response.status_code == 200
    assert response.context["members"] is not None


def test_it_the_team_page_and_the_menu_link_to_the_quota(client_for, alice, team):
    body = client_for(alice).get(reverse("accounts:team", args=[team.id])).content.decode()
    assert _page(team) in body
    assert reverse("quotas:quota") in body


# --- The limits form ----------------------------------------------------------------------


def test_it_the_owner_sets_the_limits(client_for, alice, team):
    response = client_for(alice).post(
        _edit(team),
        {
            "images_per_day": "20",
            "images_per_month": "300",
            "monthly_budget_usd": "25.50",
            "member_daily_cap": "",
        },
    )
    assert response.status_code == 302
    assert response["Location"] == _page(team)
    team.refresh_from_db()
    assert (team.images_per_day, team.images_per_month) == (20, 300)
    assert team.monthly_budget_usd == Decimal("25.50")
    assert team.member_daily_cap is None


def test_it_the_form_shows_the_current_limits(client_for, alice, team):
    _limit(team, images_per_month=42)
    response = client_for(alice).get(_edit(team))
    assert response.status_code == 200
    assert 'value="42"' in response.content.decode()


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("images_per_day", "-1", "Enter 0 or more, or leave it empty for no limit."),
        ("images_per_month", "-5", "Enter 0 or more, or leave it empty for no limit."),
        ("monthly_budget_usd", "-0.01", "Enter 0 or more, or leave it empty for no limit."),
        ("member_daily_cap", "-2", "Enter 0 or more, or leave it empty for no limit."),
        ("images_per_day", "ten", "Enter a whole number."),
        ("monthly_budget_usd", "1.234", "no more than 2 decimal places"),
    ],
)
def test_it_the_form_explains_bad_values(client_for, alice, team, field, value, message):
    response = client_for(alice).post(_edit(team), {field: value})
    assert response.status_code == 400
    assert message in " ".join(response.context["form"].errors[field])
    team.refresh_from_db()
    assert getattr(team, field) is None


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        (
            "images_per_day",
            "9223372036854775807",
            "Images per day can be at most 10 000 000. Leave it empty for no limit.",
        ),
        (
            "images_per_month",
            "10000001",
            "Images per month can be at most 10 000 000. Leave it empty for no limit.",
        ),
        (
            "member_daily_cap",
            "99999999999999999999999",
            "Images per member per day can be at most 10 000 000. Leave it empty for no limit.",
        ),
        (
            "monthly_budget_usd",
            "10000000.01",
            "The monthly budget can be at most 10 000 000 USD. Leave it empty for no limit.",
        ),
        (  # one message, not also "no more than 8 digits before the decimal point"
            "monthly_budget_usd",
            "100000000",
            "The monthly budget can be at most 10 000 000 USD. Leave it empty for no limit.",
        ),
    ],
)
def test_it_explains_a_limit_above_the_maximum(client_for, alice, team, field, value, message):
    response = client_for(alice).post(_edit(team), {field: value})
    assert response.status_code == 400
    assert response.context["form"].errors[field] == [message]
    assert message in response.content.decode()
    team.refresh_from_db()
    assert getattr(team, field) is None


def test_it_accepts_the_maximum_limits(client_for, alice, team):
    most = "10000000"
    response = client_for(alice).post(
        _edit(team),
        {
            "images_per_day": most,
            "images_per_month": most,
            "monthly_budget_usd": most,
            "member_daily_cap": most,
        },
    )
    assert response.status_code == 302
    team.refresh_from_db()
    assert (team.images_per_day, team.images_per_month, team.member_daily_cap) == (10**7,) * 3
    assert team.monthly_budget_usd == Decimal(10**7)


def test_it_a_daily_limit_above_the_monthly_one_is_refused(client_for, alice, team):
    response = client_for(alice).post(
        _edit(team), {"images_per_day": "50", "images_per_month": "10"}
    )
    assert response.status_code == 400
    assert "cannot be above the monthly limit (10 images)" in response.content.decode()


def test_it_members_may_not_change_the_limits(client_for, bob, team):
    client = client_for(bob)
    assert client.get(_edit(team)).status_code == 403
    assert client.post(_edit(team), {"images_per_day": "1000"}).status_code == 403
    team.refresh_from_db()
    assert team.images_per_day is None


def test_it_staff_may_change_any_teams_limits(client_for, staff, team):
    response = client_for(staff).post(_edit(team), {"images_per_day": "3"})
    assert response.status_code == 302
    team.refresh_from_db()
    assert team.images_per_day == 3


# --- The partial and the API ---------------------------------------------------------------


def test_it_the_partial_says_what_is_left_and_when_it_resets(alice, team):
    _limit(team, images_per_day=5, member_daily_cap=4)
    _submit(alice, team, count=1)
    html = render_to_string(
        "quotas/partials/quota_remaining.html",
        {"quota": selectors.quota_summary(team, alice)},
    )
    resets = format_reset(periods().day_end)
    assert f"Images today: 4 left of 5, resets {resets}" in html
    assert "Your images today: 3 left of 4" in html
    assert _page(team) in html


def test_it_the_partial_says_when_the_limit_is_reached(alice, team):
    _limit(team, images_per_month=2)
    _submit(alice, team, count=2)
    html = render_to_string(
        "quotas/partials/quota_remaining.html",
        {"quota": selectors.quota_summary(team, alice)},
    )
    assert 'role="alert"' in html
    assert "Images this month: limit reached" in html
    assert format_reset(periods().month_end) in html


def test_it_the_partial_without_limits(alice, team):
    html = render_to_string(
        "quotas/partials/quota_remaining.html",
        {"quota": selectors.quota_summary(team, alice)},
    )
    assert "No quota limits for Acme." in html


def test_it_the_api_answers_429_with_the_limit_use_and_reset(client, alice, team):
    _limit(team, images_per_day=0)
    _, raw = ApiToken.issue(alice, "ci")
    response = client.post(
        "/api/v1/generations",
        data=json.dumps({"prompt": "a lighthouse"}),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {raw}",
    )
    assert response.status_code == 429
    error = response.json()["error"]
    assert error["code"] == "quota_exceeded"
    assert error["quota"] == "images_per_day"
    assert (error["used"], error["allowed"]) == ("0", "0")
    day_end = periods().day_end
    assert error["resets_at"] == day_end.isoformat()
    assert "images per day quota is used up (0 of 0 images)" in error["message"]
    assert 1 <= int(response["Retry-After"]) <= 86400
    assert not GenerationRequest.objects.exists()
