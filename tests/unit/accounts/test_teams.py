import re
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from accounts.models import ApiToken, Invite, Membership, Team

pytestmark = pytest.mark.django_db


def _member_urls(team, membership):
    """Every team URL with the method it accepts."""
    return [
        ("get", reverse("accounts:team", args=[team.id])),
        ("post", reverse("accounts:team_switch", args=[team.id])),
        ("post", reverse("accounts:member_remove", args=[team.id, membership.id])),
    ]


def _owner_urls(team, membership, invite):
    return [
        ("post", reverse("accounts:team_rename", args=[team.id])),
        ("post", reverse("accounts:invite_create", args=[team.id])),
        ("post", reverse("accounts:invite_revoke", args=[team.id, invite.id])),
        ("post", reverse("accounts:member_role", args=[team.id, membership.id])),
    ]


@pytest.fixture
def invite(team, alice):
    return Invite.objects.create(team=team, created_by=alice)


def test_it_lists_the_users_teams(client_for, alice, bob, team):
    response = client_for(bob).get(reverse("accounts:teams"))
    assert response.status_code == 200
    assert "Acme" in response.content.decode()


def test_it_creates_a_team_with_the_creator_as_owner(client_for, alice):
    response = client_for(alice).post(reverse("accounts:team_create"), {"name": "  Studio  "})
    team = Team.objects.get(name="Studio")
    assert response["Location"] == reverse("accounts:team", args=[team.id])
    assert alice.membership_in(team).is_owner
    alice.refresh_from_db()
    assert alice.active_team == team


def test_it_explains_an_empty_team_name(client_for, alice):
    response = client_for(alice).post(reverse("accounts:team_create"), {"name": "   "})
    assert response.status_code == 400
    assert "Give the team a name." in response.content.decode()
    assert Team.objects.count() == 1


def test_it_shows_the_team_to_its_members(client_for, alice, bob, team):
    response = client_for(bob).get(reverse("accounts:team", args=[team.id]))
    assert response.status_code == 200
    body = response.content.decode()
    assert "alice@example.com" in body and "bob@example.com" in body
    assert "Create an invite link" not in body  # members do not manage invites


def test_it_hides_every_team_url_from_outsiders(client_for, team, bob, charlie, invite):
    membership = bob.membership_in(team)
    client = client_for(charlie)
    for method, url in _member_urls(team, membership) + _owner_urls(team, membership, invite):
        assert getattr(client, method)(url).status_code == 404, url
    assert bob.membership_in(team) is not None


def test_it_sends_anonymous_visitors_to_log_in(client, team, bob, invite):
    membership = bob.membership_in(team)
    for method, url in _member_urls(team, membership) + _owner_urls(team, membership, invite):
        response = getattr(client, method)(url)
        assert response.status_code == 302, url
        assert response["Location"].startswith(reverse("accounts:login"))


def test_it_refuses_wrong_methods(client_for, alice, team, bob, invite):
    membership = bob.membership_in(team)
    client = client_for(alice)
    for method, url in _member_urls(team, membership) + _owner_urls(team, membership, invite):
        wrong = "post" if method == "get" else "get"
        assert getattr(client, wrong)(url).status_code == 405, url
    assert client.put(reverse("accounts:teams")).status_code == 405
    assert client.get(reverse("accounts:team_create")).status_code == 405


def test_it_refuses_owner_actions_to_members(client_for, alice, bob, team, invite):
    membership = alice.membership_in(team)
    client = client_for(bob)
    for _, url in _owner_urls(team, membership, invite):
        assert client.post(url, {"role": "member", "name": "Hijacked"}).status_code == 403, url
    team.refresh_from_db()
    assert team.name == "Acme"
    assert alice.membership_in(team).is_owner


def test_it_switches_the_active_team(client_for, alice, bob, team):
    other = Team.create_personal(bob)
    client = client_for(bob)
    client.post(reverse("accounts:team_switch", args=[other.id]), {"next": "/teams/"})
    bob.refresh_from_db()
    assert bob.active_team == other


def test_it_invites_by_link_and_the_invitee_joins(client_for, client, alice, team, charlie):
    response = client_for(alice).post(reverse("accounts:invite_create", args=[team.id]))
    invite = Invite.objects.get(team=team)
    page = client_for(alice).get(response["Location"]).content.decode()
    link = reverse("accounts:invite", args=[invite.token])
    assert link in page

    client.logout()
    joiner = client_for(charlie)
    assert "Join “Acme”" in joiner.get(link).content.decode()
    response = joiner.post(link)
    assert response["Location"] == reverse("accounts:team", args=[team.id])
    assert charlie.membership_in(team).role == Membership.Role.MEMBER
    charlie.refresh_from_db()
    assert charlie.active_team == team
    assert joiner.get(reverse("accounts:team", args=[team.id])).status_code == 200


def test_it_offers_anonymous_invitees_to_sign_up_and_come_back(client, team, invite):
    link = reverse("accounts:invite", args=[invite.token])
    body = client.get(link).content.decode()
    assert f"?next={link}" in body
    assert client.post(link)["Location"].startswith(reverse("accounts:login"))


def test_it_uses_an_invite_only_once(client_for, team, invite, charlie, django_user_model):
    client_for(charlie).post(reverse("accounts:invite", args=[invite.token]))
    dora = django_user_model.objects.create_user("dora@example.com", "x")
    client = client_for(dora)
    response = client.get(reverse("accounts:invite", args=[invite.token]))
    assert response.status_code == 410
    assert "already been used" in response.content.decode()
    client.post(reverse("accounts:invite", args=[invite.token]))
    assert dora.membership_in(team) is None


def test_it_tells_a_member_who_opens_an_invite_that_nothing_changed(client_for, bob, team, invite):
    personal = Team.create_personal(bob)
    bob.switch_team(personal)
    response = client_for(bob).post(reverse("accounts:invite", args=[invite.token]), follow=True)
    body = response.content.decode()
    assert f"You are already a member of “{team.name}”." in body
    assert "You joined" not in body
    bob.refresh_from_db()
    assert bob.active_team == personal  # not switched
    invite.refresh_from_db()
    assert invite.accepted is None  # still there for the one it was meant for


def test_it_refuses_expired_and_withdrawn_invites(client_for, alice, team, charlie):
    expired = Invite.objects.create(team=team, expires=timezone.now() - timedelta(minutes=1))
    withdrawn = Invite.objects.create(team=team)
    client_for(alice).post(reverse("accounts:invite_revoke", args=[team.id, withdrawn.id]))
    client = client_for(charlie)
    for invite, text in [(expired, "expired"), (withdrawn, "withdrawn")]:
        response = client.get(reverse("accounts:invite", args=[invite.token]))
        assert response.status_code == 410 and text in response.content.decode()
        client.post(reverse("accounts:invite", args=[invite.token]))
    assert charlie.membership_in(team) is None


def test_it_gives_404_for_an_unknown_invite(client):
    assert client.get(reverse("accounts:invite", args=["nope"])).status_code == 404


def test_it_lets_the_owner_remove_a_member(client_for, alice, bob, team):
    membership = bob.membership_in(team)
    client_for(alice).post(reverse("accounts:member_remove", args=[team.id, membership.id]))
    assert bob.membership_in(team) is None
    # Bob falls back to a team of his own and can no longer open Acme.
    client = client_for(bob)
    assert client.get(reverse("accounts:team", args=[team.id])).status_code == 404
    bob.refresh_from_db()
    assert bob.current_team() != team


def test_it_lets_a_member_leave(client_for, bob, team):
    membership = bob.membership_in(team)
    response = client_for(bob).post(
        reverse("accounts:member_remove", args=[team.id, membership.id])
    )
    assert response["Location"] == reverse("accounts:teams")
    assert bob.membership_in(team) is None


def test_it_keeps_the_last_owner(client_for, alice, team):
    membership = alice.membership_in(team)
    client = client_for(alice)
    client.post(reverse("accounts:member_remove", args=[team.id, membership.id]))
    client.post(reverse("accounts:member_role", args=[team.id, membership.id]), {"role": "member"})
    assert alice.membership_in(team).is_owner


def test_it_promotes_a_member_to_owner(client_for, alice, bob, team):
    membership = bob.membership_in(team)
    client_for(alice).post(
        reverse("accounts:member_role", args=[team.id, membership.id]), {"role": "owner"}
    )
    assert bob.membership_in(team).is_owner


def test_it_refuses_an_unknown_role(client_for, alice, bob, team):
    membership = bob.membership_in(team)
    response = client_for(alice).post(
        reverse("accounts:member_role", args=[team.id, membership.id]),
        {"role": "admin"},
        follow=True,
    )
    assert "Choose a role" in response.content.decode()
    assert bob.membership_in(team).role == Membership.Role.MEMBER


def test_it_renames_the_team(client_for, alice, team):
    client_for(alice).post(reverse("accounts:team_rename", args=[team.id]), {"name": "Acme Ltd"})
    team.refresh_from_db()
    assert team.name == "Acme Ltd"


@pytest.mark.parametrize(
    ("typed", "message"),
    [
        ("", "Give the team a name."),
        ("   ", "Give the team a name."),
        ("x" * 500, "Shorten the team name to 80 characters or fewer (it has 500)."),
    ],
)
def test_it_explains_a_refused_rename_beside_the_name_and_keeps_what_was_typed(
    client_for, alice, team, typed, message
):
    response = client_for(alice).post(
        reverse("accounts:team_rename", args=[team.id]), {"name": typed}
    )
    assert response.status_code == 400
    body = response.content.decode()
    field = re.search(r'<div>\s*<label for="id_name">Team name:</label>.*?</div>', body, re.S)
    assert message in field.group()
    assert body.count(message) == 1  # beside the field only, not also at the top
    name_input = re.search(r'<input[^>]* name="name"[^>]*>', body).group()
    assert 'aria-invalid="true"' in name_input
    assert 'value="Acme"' not in name_input  # what was typed, not the old name again
    if typed:
        assert f'value="{typed}"' in name_input
    assert "<h1>Acme</h1>" in body
    team.refresh_from_db()
    assert team.name == "Acme"


def test_it_issues_shows_once_and_revokes_api_tokens(client_for, alice, bob):
    client = client_for(alice)
    response = client.post(reverse("accounts:tokens"), {"name": "CI"})
    raw = response.context["created_raw"]
    assert raw.startswith("sst_") and raw in response.content.decode()
    assert ApiToken.authenticate(raw) == alice
    assert raw not in client.get(reverse("accounts:tokens")).content.decode()

    token = ApiToken.objects.get()
    assert (
        client_for(bob).post(reverse("accounts:token_revoke", args=[token.id])).status_code == 404
    )
    client_for(alice).post(reverse("accounts:token_revoke", args=[token.id]))
    assert ApiToken.authenticate(raw) is None


def test_it_explains_an_empty_token_name(client_for, alice):
    response = client_for(alice).post(reverse("accounts:tokens"), {"name": " "})
    assert response.status_code == 400
    body = response.content.decode()
    assert "Give the token a name so you can recognise it later." in body
    assert "This field is required." not in body
    assert not ApiToken.objects.exists()


def test_it_explains_a_token_name_too_long(client_for, alice):
    response = client_for(alice).post(reverse("accounts:tokens"), {"name": "x" * 81})
    assert response.status_code == 400
    body = response.content.decode()
    assert "Shorten the token name to 80 characters or fewer (it has 81)." in body
    assert not ApiToken.objects.exists()


@pytest.mark.parametrize("value", ["not-a-uuid", "00000000-0000-0000-0000-000000000000"])
def test_it_shows_the_team_page_when_the_invite_in_its_address_is_not_open(
    client_for, alice, team, invite, value
):
    # Issue 13, item 6: a value that is not a UUID was a 500 (ValidationError).
    response = client_for(alice).get(reverse("accounts:team", args=[team.id]) + f"?invite={value}")
    assert response.status_code == 200
    body = response.content.decode()
    assert "That invite link is not open any more; create a new one." in body
    assert invite.token not in body  # the page shows no link it was not asked for


def test_it_finds_the_current_team_in_one_query(django_assert_num_queries, bob, team):
    bob = type(bob).objects.get(pk=bob.pk)  # as a request loads its user
    with django_assert_num_queries(1):
        assert bob.current_team() == team
        assert bob.active_team.name == "Acme"  # loaded with it, no second query


def test_it_moves_a_removed_member_to_a_team_of_their_own(bob, team):
    bob.membership_in(team).delete()
    bob = type(bob).objects.get(pk=bob.pk)

    current = bob.current_team()

    assert current != team and current.is_personal
    assert type(bob).objects.get(pk=bob.pk).active_team == current
