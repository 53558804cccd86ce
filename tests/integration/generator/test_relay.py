"""Nano Banana Pro behind an OpenAI-compatible relay's chat completions, end to end: a
catalogue that routes it there, real workers and caller, the sandbox answering as a relay."""

import pytest

from generator.models import Attempt, Image, Status
from generator.resilience.catalogue import get_catalogue
from tests.integration.generator.test_chain import failures, submit_many, wait_for_all

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

PRO = "gemini-3-pro-image-preview"


@pytest.fixture
def relayed(settings, tmp_path, sandbox_settings, monkeypatch):
    catalogue = tmp_path / "catalogue.toml"
    catalogue.write_text(f'[models."{PRO}"]\nprovider = "openai-chat"\n')
    # The workers and the caller read it from their environment, this process (admission)
    # from its settings.
    monkeypatch.setenv("MODEL_CATALOGUE_FILE", str(catalogue))
    settings.MODEL_CATALOGUE_FILE = str(catalogue)
    get_catalogue.cache_clear()
    settings.TIME_SCALE = 0.01
    monkeypatch.setenv("POLICY_REQUEST_BUDGET_S", "100000")
    settings.MEDIA_ROOT = tmp_path / "media"
    sandbox_settings.reset()
    sandbox_settings.set_relay_shape("markdown")
    yield sandbox_settings
    get_catalogue.cache_clear()


def test_it_delivers_pro_through_a_relays_chat_completions(
    relayed, workers, alice, team, settings
):
    assert workers.env["MODEL_CATALOGUE_FILE"] == settings.MODEL_CATALOGUE_FILE
    workers.start(1)
    rows = wait_for_all(submit_many(alice, team, 3, image_size="2K"), timeout=120)

    assert all(r.status == Status.SUCCEEDED for r in rows), failures(rows)
    assert {r.served_model for r in rows} == {PRO}
    assert {a.provider for a in Attempt.objects.filter(request__in=rows)} == {"openai-chat"}
    calls = [c for c in relayed.calls() if c["outcome"] == "success"]
    assert len(calls) == 3
    assert {(c["protocol"], c["image_size"]) for c in calls} == {("openai-chat", "2K")}
    images = Image.objects.filter(request__in=rows)
    assert {(i.mime, i.width, i.height) for i in images} == {("image/jpeg", 2048, 2048)}
