from datetime import timedelta

import pytest
from django.utils import timezone

from accounts.models import ApiToken
from drills.run import orphan_files
from generator import queue
from generator.admission import AdmissionError, Submission, submit
from generator.models import GenerationRequest, QuotaState, Status
from quotas.models import UsageEntry
from tests.media import picture, private_media

pytestmark = pytest.mark.django_db(transaction=True)


def test_it_creates_one_request_per_image_in_one_batch_and_queues_them(alice, team, redis_conn):
    requests = submit(alice, team, Submission(prompt=" a red apple ", count=3))
    assert len({r.batch for r in requests}) == 1
    for request in requests:
        request.refresh_from_db()
        assert request.prompt == "a red apple"
        assert request.status == Status.QUEUED
        assert request.chain[0] == "gemini-3-pro-image-preview"
        assert request.quota_state == QuotaState.RESERVED
        assert request.reserved_usd > 0
    jobs = queue.get_queue().get_jobs()
    assert sorted(j.args[0] for j in jobs) == sorted(str(r.id) for r in requests)
    assert all(j.func_name == queue.JOB and j.args[1] == 1 for j in jobs)


def test_it_stability_first_starts_on_flash(alice, team, redis_conn):
    (request,) = submit(alice, team, Submission(prompt="x", strategy="stability-first"))
    assert request.chain[0] == "gemini-2.5-flash-image"


@pytest.mark.parametrize(
    ("change", "field", "text"),
    [
        ({"prompt": "   "}, "prompt", "Write a prompt"),
        ({"prompt": "x" * 4001}, "prompt", "4001 characters"),
        # What a JSON body can carry and no database column can hold (issue 13, 4 and 7).
        ({"prompt": "\x00"}, "prompt", "NUL character"),
        ({"prompt": "a lighthouse \ud800"}, "prompt", "lone UTF-16 surrogate"),
        ({"strategy": "fastest"}, "strategy", "quality-first or stability-first"),
        ({"aspect_ratio": "7:3"}, "aspect_ratio", "16:9"),
        ({"strategy": "stability-first", "image_size": "4K"}, "image_size", "delivers 1K"),
        ({"count": 5}, "count", "between 1 and 4"),
        ({"count": 0}, "count", "between 1 and 4"),
        ({"deadline": "past"}, "deadline", "in the future"),
    ],
)
def test_it_refuses_bad_submissions_and_queues_nothing(
    alice, team, redis_conn, change, field, text
):
    if change.get("deadline") == "past":
        change["deadline"] = timezone.now() - timedelta(minutes=1)
    with pytest.raises(AdmissionError) as error:
        submit(alice, team, Submission(**{"prompt": "x", **change}))
    assert error.value.field == field
    assert text in error.value.message
    assert not GenerationRequest.objects.exists()
    assert queue.get_queue().count == 0


@pytest.fixture
def connection_drops():
    """connection_drops(n, table=requests'): the session inserting into `table` is
    terminated by Postgres (`pg_terminate_backend`, as in a failover) at each of the
    next n inserts, mid-admission."""
    from django.db import connection

    if connection.vendor != "postgresql":
        pytest.skip("terminates a Postgres session")
    tables = []
    with connection.cursor() as cursor:
        cursor.execute("CREATE SEQUENCE IF NOT EXISTS test_drops")
        cursor.execute(
            "CREATE OR REPLACE FUNCTION test_drop() RETURNS trigger AS $$ BEGIN"
            " IF nextval('test_drops') <= current_setting('test.drops', true)::int THEN"
            "  PERFORM pg_terminate_backend(pg_backend_pid()); END IF;"
            " RETURN NEW; END $$ LANGUAGE plpgsql"
        )

    def drops(n: int, table: str = GenerationRequest._meta.db_table) -> None:
        with connection.cursor() as cursor:
            if table not in tables:
                cursor.execute(
                    f"CREATE TRIGGER test_drop BEFORE INSERT ON {table} "
                    "FOR EACH ROW EXECUTE FUNCTION test_drop()"
                )
                tables.append(table)
            cursor.execute("SELECT setval('test_drops', 1, false)")
            cursor.execute(
                f"ALTER DATABASE {connection.settings_dict['NAME']} SET test.drops = {n}"
            )
        connection.close()  # the setting applies to new sessions

    yield drops
    connection.close()
    with connection.cursor() as cursor:
        for table in tables:
            cursor.execute(f"DROP TRIGGER test_drop ON {table}")
        cursor.execute("DROP FUNCTION test_drop()")
        cursor.execute("DROP SEQUENCE test_drops")
        cursor.execute(f"ALTER DATABASE {connection.settings_dict['NAME']} RESET test.drops")


def test_it_admits_again_on_a_new_connection_when_postgres_drops_it(
    alice, team, redis_conn, connection_drops
):
    connection_drops(1)
    requests = submit(alice, team, Submission(prompt="a red apple", count=2))
    rows = GenerationRequest.objects.filter(batch=requests[0].batch)
    assert sorted(r.pk for r in rows) == sorted(r.pk for r in requests)
    assert GenerationRequest.objects.count() == 2  # nothing of the lost try is left
    assert UsageEntry.objects.filter(kind=UsageEntry.Kind.RESERVE).get().images == 2
    jobs = queue.get_queue().get_jobs()
    assert sorted(j.args[0] for j in jobs) == sorted(str(r.pk) for r in requests)


def test_it_leaves_no_upload_behind_when_postgres_drops_the_admission(
    alice, team, redis_conn, connection_drops, settings, tmp_path
):
    private_media(settings, tmp_path)
    # The session ends when the request is tied to its upload: after the file is written.
    connection_drops(1, table=GenerationRequest.references.through._meta.db_table)

    (request,) = submit(
        alice, team, Submission(prompt="make it blue", uploads=[(picture(), "image/png")])
    )

    (reference,) = request.references.all()
    assert reference.file.storage.exists(reference.file.name)
    assert orphan_files() == []  # the lost try's copy is gone
    assert len(list((tmp_path / "media").rglob("*.png"))) == 1


def test_it_answers_503_with_what_to_do_when_the_database_stays_away(
    client, alice, team, redis_conn, connection_drops
):
    _, token = ApiToken.issue(alice, "ci")
    connection_drops(2)
    response = client.post(
        "/api/v1/generations",
        data={"prompt": "a red apple"},
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {token}",
    )
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "unavailable"
    assert "Try again in a few seconds" in response.json()["error"]["message"]
    assert response["Retry-After"] == "5"
    assert not GenerationRequest.objects.exists()
    assert queue.get_queue().count == 0
