"""The OpenAPI document is the API's contract: what the server serves is what is checked
in (docs/openapi.json), and the browsable docs are served from our own static files."""

import json
from pathlib import Path

DOCUMENT = Path(__file__).resolve().parents[3] / "docs" / "openapi.json"


def test_it_serves_the_document_that_is_checked_in(client):
    response = client.get("/api/openapi.json")
    assert response.status_code == 200
    assert response.json() == json.loads(DOCUMENT.read_text()), (
        "docs/openapi.json differs from the API: run `make openapi` and commit the file"
    )


def test_it_documents_every_route_of_both_apis(client):
    paths = client.get("/api/openapi.json").json()["paths"]
    assert set(paths) == {
        "/api/v1/generations",
        "/api/v1/generations/{request_id}",
        "/api/v1/generations/{request_id}/cancel",
        "/api/v1/generations/{request_id}/image",
        "/v1/images/generations",
    }


def test_it_serves_the_browsable_docs_without_a_cdn(client):
    response = client.get("/api/docs")
    assert response.status_code == 200
    page = response.content.decode()
    assert "/static/ninja/swagger-ui-bundle.js" in page
    assert "cdn" not in page.lower()
