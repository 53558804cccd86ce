"""The gallery's prompt search on Postgres: served by the trigram index of migration 0007
(req_prompt_trgm) on a team with many requests, with the results a plain scan gives."""

import json

import pytest
from django.db import connection

from generator.models import GenerationRequest, QuotaState, Status

pytestmark = pytest.mark.django_db

ROWS = 30_000
NEEDLE = "zeppelin"  # in one prompt of 2,000


@pytest.fixture
def many(alice, team, charlie):
    """ROWS requests of alice's team and as many of another team's, copied in SQL from one
    row made by the ORM (seconds, not minutes), then analysed as autovacuum would."""
    if connection.vendor != "postgresql":
        pytest.skip(
            "The trigram index is Postgres-only (SQLite scans, and keeps its meaning): "
            "set DATABASE_URL to a Postgres database to run this test."
        )
    model = GenerationRequest
    template = model.objects.create(
        user=alice, team=team, prompt="template", strategy="quality-first",
        chain=["gemini-3-pro-image-preview"], status=Status.FAILED,
        quota_state=QuotaState.REFUNDED,
    )  # fmt: skip
    columns = [f.column for f in model._meta.concrete_fields]
    made = {
        "id": "gen_random_uuid()",
        "batch": "gen_random_uuid()",
        "prompt": (
            "'a watercolour of a ' || (ARRAY['cat','dog','robot','teapot'])[1 + n %% 4] "
            f"|| CASE WHEN n %% 2000 = 1000 THEN ' and a {NEEDLE}' ELSE '' END || ', number ' || n"
        ),
        "created": "now() - n * interval '1 minute'",
        "team_id": "%(team)s",
        "user_id": "%(user)s",
    }
    quote = connection.ops.quote_name
    select = ", ".join(made.get(c, quote(c)) for c in columns)
    # Names from the model, values as parameters.
    table, names = model._meta.db_table, ", ".join(quote(c) for c in columns)
    sql = f"INSERT INTO {table} ({names}) SELECT {select} FROM {table}, "  # noqa: S608
    sql += "generate_series(1, %(rows)s) AS n WHERE id = %(template)s"
    with connection.cursor() as cursor:
        for owner, owners_team in ((alice, team), (charlie, charlie.active_team)):
            params = {
                "team": owners_team.pk,
                "user": owner.pk,
                "rows": ROWS,
                "template": template.pk,
            }
            cursor.execute(sql, params)
        cursor.execute(f"ANALYZE {model._meta.db_table}")
    template.delete()
    return alice, team


def _gallery_search(user, team, q):
    """The gallery view's page query for a search (generator.views.gallery)."""
    rows = GenerationRequest.objects.visible_to(user).filter(team=team)
    return rows.filtered(user, {"q": q}).order_by("-created", "-id")[:25]


def _plan_nodes(plan: dict):
    yield plan
    for child in plan.get("Plans", []):
        yield from _plan_nodes(child)


def test_it_serves_the_gallerys_prompt_search_from_the_trigram_index(many):
    user, team = many
    for q in (NEEDLE, "ZEPPELIN", "no such prompt"):
        plan = json.loads(_gallery_search(user, team, q).explain(format="json"))[0]["Plan"]
        used = {node.get("Index Name") for node in _plan_nodes(plan)}
        assert "req_prompt_trgm" in used, (q, used)


def test_it_finds_the_same_requests_with_the_index_as_without(many):
    user, team = many
    with connection.cursor() as cursor:
        cursor.execute("SET enable_bitmapscan = off")
        cursor.execute("SET enable_indexscan = off")
        scanned = {q: list(_gallery_search(user, team, q)) for q in (NEEDLE, "CAT", "o, n")}
        cursor.execute("RESET enable_bitmapscan")
        cursor.execute("RESET enable_indexscan")
    for q, rows in scanned.items():
        assert list(_gallery_search(user, team, q)) == rows, q
    assert len(scanned[NEEDLE]) == ROWS // 2000
    assert all(NEEDLE in r.prompt for r in scanned[NEEDLE])
