"""Data migrations fill in what the rows admitted before them lack."""

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from generator.admission import Submission, submit
from generator.models import GenerationRequest
from tests.media import picture

pytestmark = pytest.mark.django_db(transaction=True)


def _migrate(target):
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate([target])


def test_it_counts_the_references_of_requests_admitted_before_the_count(
    settings, tmp_path, alice, team
):
    settings.MEDIA_ROOT = tmp_path / "media"
    (plain,) = submit(alice, team, Submission(prompt="a lighthouse"))
    uploads = [(picture("PNG"), "image/png"), (picture("JPEG"), "image/jpeg")]
    edits = submit(alice, team, Submission(prompt="make it blue", count=2, uploads=uploads))
    assert [r.reference_count for r in edits] == [2, 2]

    try:
        _migrate(("generator", "0007_prompt_trigram_index"))  # the column goes
        _migrate(("generator", "0008_request_reference_count"))  # back, at 0, then counted
    finally:
        _migrate(("generator", "0008_request_reference_count"))

    counts = dict(GenerationRequest.objects.values_list("pk", "reference_count"))
    assert counts == {plain.pk: 0, edits[0].pk: 2, edits[1].pk: 2}
