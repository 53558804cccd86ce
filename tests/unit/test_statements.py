"""The hot statements written once (config/statements.py) find and return what the ORM's
querysets they replace would: every field as the ORM reads it, on SQLite (the unit tier)
and on Postgres (CI)."""

import uuid
from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from accounts.models import ApiToken, Membership, Team, _member_team
from config import statements
from generator.admission import Submission, submit
from generator.models import Attempt, GenerationRequest, Status

pytestmark = pytest.mark.django_db


def _fields(instance) -> dict:
    return {f.attname: getattr(instance, f.attname) for f in type(instance)._meta.concrete_fields}


@pytest.fixture
def request_row(alice, team):
    (request,) = submit(alice, team, Submission(prompt="a lighthouse", count=1))
    return request


def test_it_returns_the_updated_row_as_the_orm_reads_it(request_row, django_assert_num_queries):
    lease = timezone.now() + timedelta(seconds=30)
    with django_assert_num_queries(1):
        row = statements.update_returning(
            GenerationRequest,
            "default",
            set={"status": Status.RUNNING, "claimed_by": "w1", "lease_until": lease},
            where={"id": str(request_row.pk), "status": (Status.QUEUED, Status.WAITING)},
        )

    stored = GenerationRequest.objects.get(pk=request_row.pk)
    assert _fields(row) == _fields(stored)
    # Every kind of column came back typed: a UUID, a list from JSON, a Decimal, datetimes.
    assert (row.pk, row.chain, row.reserved_usd) == (
        request_row.pk,
        request_row.chain,
        request_row.reserved_usd,
    )
    assert (row.status, row.claimed_by, row.lease_until) == (Status.RUNNING, "w1", lease)
    assert row._state.adding is False and row._state.db == "default"


def test_it_changes_nothing_and_returns_none_when_no_row_matches(request_row):
    row = statements.update_returning(
        GenerationRequest,
        "default",
        set={"claimed_by": "w2"},
        where={"id": request_row.pk, "status": Status.RUNNING},
    )
    assert row is None
    assert GenerationRequest.objects.get(pk=request_row.pk).claimed_by == ""


def test_it_keeps_a_value_already_set_and_fills_an_empty_one(request_row):
    first, later = timezone.now(), timezone.now() + timedelta(minutes=5)
    filled = statements.update_returning(
        GenerationRequest, "default", set={}, keep={"started": first}, where={"id": request_row.pk}
    )
    kept = statements.update_returning(
        GenerationRequest, "default", set={}, keep={"started": later}, where={"id": request_row.pk}
    )
    assert filled.started == first and kept.started == first


def test_it_finds_a_live_token_with_its_user_in_one_query(alice, django_assert_num_queries):
    token, raw = ApiToken.issue(alice, "laptop")
    expected = ApiToken.objects.select_related("user").get(pk=token.pk)

    with django_assert_num_queries(1):
        found = ApiToken._live(ApiToken.hash(raw))
        assert found.user.email == alice.email  # read with the token: no second query
    assert _fields(found) == _fields(expected)
    assert _fields(found.user) == _fields(expected.user)


def test_it_finds_no_token_that_is_revoked_unknown_or_of_an_inactive_user(alice, bob):
    revoked, raw_revoked = ApiToken.issue(alice, "old")
    ApiToken.objects.filter(pk=revoked.pk).update(revoked=timezone.now())
    _, raw_bob = ApiToken.issue(bob, "bob's")
    bob.is_active = False
    bob.save(update_fields=["is_active"])
    _, raw_live = ApiToken.issue(alice, "live")

    assert ApiToken.authenticate(raw_revoked) is None
    assert ApiToken.authenticate(raw_bob) is None
    assert ApiToken.authenticate("sst_not-a-token") is None
    assert ApiToken.authenticate(raw_live) == alice


def test_it_stores_plain_values_as_the_orm_would_and_counts_the_rows(request_row):
    finished = timezone.now()
    values = {
        "status": Status.SUCCEEDED,
        "finished": finished,
        "fell_back": True,
        "cost_usd": Decimal("0.1340"),
        "delivered_width": 1024,
        "lease_until": None,
    }
    where = {"id": request_row.pk, "status": (Status.QUEUED,), "step": request_row.step}

    assert statements.update(GenerationRequest, "default", set=values, where=where) == 1
    assert statements.update(GenerationRequest, "default", set=values, where=where) == 0

    stored = GenerationRequest.objects.get(pk=request_row.pk)
    assert {name: getattr(stored, name) for name in values} == values


def test_it_inserts_a_row_as_save_would_and_reads_back_its_key(request_row):
    fields = {
        "request": request_row,
        "number": 1,
        "model": "gemini-3-pro-image-preview",
        "provider": "gemini",
        "started": timezone.now(),
        "latency_ms": 900,
        "outcome": "success",
        "http_status": 200,
        "retry_after_ms": None,
    }
    created = statements.create(Attempt, "default", **fields)
    stored = Attempt.objects.get(pk=created.pk)

    assert created.pk is not None and created._state.adding is False
    assert _fields(created) == _fields(stored)
    assert Attempt.objects.filter(request=request_row).count() == 1


def test_it_reads_values_by_key_as_values_list_does(team):
    Team.objects.filter(pk=team.pk).update(monthly_budget_usd=Decimal("12.50"), images_per_day=7)
    names = ("images_per_day", "images_per_month", "monthly_budget_usd", "member_daily_cap")

    found = statements.values_by_pk(Team, "default", team.pk, names)

    assert found == Team.objects.filter(pk=team.pk).values_list(*names).get()
    assert found[0] == 7 and found[2] == Decimal("12.50")
    assert statements.values_by_pk(Team, "default", uuid.uuid4(), names) is None


def test_it_finds_the_active_team_only_while_its_user_is_a_member(alice, bob, team):
    other = Team.create_with_owner("Elsewhere", bob)

    assert _fields(_member_team(team.pk, bob.pk)) == _fields(Team.objects.get(pk=team.pk))
    assert _member_team(other.pk, alice.pk) is None
    Membership.objects.filter(team=team, user=bob).delete()
    assert _member_team(team.pk, bob.pk) is None
    assert bob.current_team() == other
