import pytest
from django.urls import path, reverse

pytestmark = pytest.mark.django_db


def test_it_serves_the_home_page_to_everyone(client, client_for, alice):
    assert "Create an account" in client.get(reverse("home")).content.decode()
    # Signed in, the start page is for work, not the marketing text (tests/unit/test_start.py).
    body = client_for(alice).get(reverse("home")).content.decode()
    assert "Create an account" not in body
    assert f'action="{reverse("generator:prompt")}"' in body


def test_it_sends_a_strict_content_security_policy(client):
    policy = client.get(reverse("home"))["Content-Security-Policy"]
    assert "script-src 'self'" in policy
    assert "unsafe-inline" not in policy
    assert "frame-ancestors 'none'" in policy


def test_it_answers_health_checks(client):
    assert client.get(reverse("healthz")).json() == {"status": "ok"}


def test_it_is_not_ready_while_redis_does_not_answer(client):
    # The unit tier's queues point at a closed port (tests/unit/conftest.py).
    response = client.get(reverse("readyz"))
    assert response.status_code == 503
    assert response.json() == {"status": "unavailable", "failed": ["redis"]}


def test_it_renders_a_friendly_404(client, settings):
    settings.DEBUG = False
    response = client.get("/no/such/page/")
    assert response.status_code == 404
    assert "There is nothing here" in response.content.decode()


def test_it_serves_static_files(client):
    response = client.get("/static/css/app.css")
    assert response.status_code == 200


def _boom(request):
    raise RuntimeError("a bug")


urlpatterns = [path("boom/", _boom), path("api/v1/boom", _boom)]
handler500 = "config.views.server_error"


@pytest.mark.urls("tests.unit.test_site")
def test_it_renders_its_own_500_page_without_settings(client, settings):
    # Issue 13, item 12: with DEBUG on a 500 dumped the settings.
    settings.DEBUG = False
    client.raise_request_exception = False
    response = client.get("/boom/")
    assert response.status_code == 500
    body = response.content.decode()
    assert "Something broke on our side" in body
    assert "SECRET_KEY" not in body and "Traceback" not in body


@pytest.mark.urls("tests.unit.test_site")
def test_it_answers_a_programs_500_in_json(client, settings):
    settings.DEBUG = False
    client.raise_request_exception = False
    response = client.get("/api/v1/boom")
    assert response.status_code == 500
    assert response.json()["error"]["code"] == "server_error"
    assert "Try again" in response.json()["error"]["message"]


def test_it_answers_an_unknown_api_path_in_json(client, settings):
    settings.DEBUG = False
    response = client.get("/api/v1/no-such-thing")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
    assert "/api/docs" in response.json()["error"]["message"]
    openai = client.post("/v1/no-such-thing", {}, content_type="application/json")
    assert openai.status_code == 404
    assert openai.json()["error"]["type"] == "invalid_request_error"  # OpenAI's envelope


def test_it_lists_no_url_patterns_on_a_404(client, settings):
    settings.DEBUG = False
    body = client.get("/no/such/page/").content.decode()
    assert "URLconf" not in body and "admin/" not in body
