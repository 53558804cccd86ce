"""The gallery's prompt search (a case-insensitive substring, whatever index serves it)
and its live cards' status, counted for the whole page at once (issue 17)."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from generator.models import Attempt, GenerationRequest, Status
from generator.status import status_view, status_views
from tests.media import private_media
from tests.unit.generator.test_views import make_request


@pytest.fixture(autouse=True)
def _media(settings, tmp_path):
    private_media(settings, tmp_path)


PROMPTS = [
    "A Red Fox in the snow",
    "two red foxes",
    "FOXGLOVE flowers",
    "a wolf",
    "100% cotton shirt",
    "100 cotton shirts",
    "snake_case sign",
    "snakecase sign",
    "Éclair au café",
]


def _search(user, team, q):
    rows = GenerationRequest.objects.visible_to(user).filter(team=team)
    return sorted(rows.filtered(user, {"q": q}).values_list("prompt", flat=True))


@pytest.mark.parametrize(
    ("q", "expected"),
    [
        ("fox", ["A Red Fox in the snow", "FOXGLOVE flowers", "two red foxes"]),
        ("RED FOX", ["A Red Fox in the snow", "two red foxes"]),
        ("oxg", ["FOXGLOVE flowers"]),
        # % and _ are the user's characters, not wildcards.
        ("100%", ["100% cotton shirt"]),
        ("e_c", ["snake_case sign"]),
        ("no such thing", []),
        # Letters beyond ASCII fold too, on SQLite as on Postgres.
        ("CAFÉ", ["Éclair au café"]),
        ("éclair", ["Éclair au café"]),
    ],
)
def test_it_finds_prompts_by_case_insensitive_substring(alice, team, q, expected):
    for prompt in PROMPTS:
        make_request(alice, team, status=Status.FAILED, prompt=prompt)
    assert _search(alice, team, q) == expected


def test_it_searches_only_the_teams_own_prompts(alice, charlie, team):
    make_request(alice, team, status=Status.FAILED, prompt="a red fox")
    make_request(charlie, charlie.active_team, status=Status.FAILED, prompt="a red fox too")
    assert _search(alice, team, "fox") == ["a red fox"]


def test_it_leaves_sqlite_without_a_trigram_index(db):
    if connection.vendor != "sqlite":
        pytest.skip("The trigram index exists on Postgres only (tests/integration checks it).")
    with connection.cursor() as cursor:
        indexes = connection.introspection.get_constraints(
            cursor, GenerationRequest._meta.db_table
        )
    assert "req_prompt_trgm" not in indexes


def _gallery_queries(client, page="generator:gallery") -> tuple[int, str]:
    with CaptureQueriesContext(connection) as queries:
        body = client.get(reverse(page)).content.decode()
    return len(queries), body


def test_it_renders_a_page_of_live_cards_in_as_many_queries_as_one(client_for, alice, team):
    client = client_for(alice)
    first = make_request(alice, team, status=Status.QUEUED, prompt="queued 0")
    Attempt.objects.create(request=first, number=1, model="m", provider="p", outcome="overloaded")
    make_request(alice, team, status=Status.FAILED, prompt="done")
    one, _ = _gallery_queries(client)
    for n in range(1, 6):
        make_request(alice, team, status=Status.QUEUED, prompt=f"queued {n}")
    six, body = _gallery_queries(client)
    assert six == one
    assert "next in line" in body and "5 ahead of you" in body


def test_it_renders_the_start_pages_live_cards_in_as_many_queries_as_one(client_for, alice, team):
    client = client_for(alice)
    make_request(alice, team, status=Status.QUEUED, prompt="queued 0")
    one, _ = _gallery_queries(client, "home")
    for n in range(1, 4):
        make_request(alice, team, status=Status.QUEUED, prompt=f"queued {n}")
    four, body = _gallery_queries(client, "home")
    assert four == one
    assert "3 ahead of you" in body


def test_it_gives_each_card_the_status_its_own_page_shows(alice, charlie, team):
    make_request(charlie, charlie.active_team, status=Status.QUEUED)
    rows = [
        make_request(alice, team, status=Status.QUEUED, prompt="first"),
        make_request(
            alice, team, status=Status.WAITING, prompt="retry due", waiting_until=timezone.now()
        ),
        make_request(alice, team, prompt="delivered"),
        make_request(alice, team, status=Status.QUEUED, prompt="last"),
    ]
    Attempt.objects.create(
        request=rows[1], number=1, model="m", provider="p", outcome="overloaded"
    )
    for row in rows:
        row.refresh_from_db()
    together = status_views(rows)
    assert [together[r.pk] for r in rows] == [status_view(r) for r in rows]
    assert [together[r.pk].ahead for r in rows] == [1, 2, None, 3]
