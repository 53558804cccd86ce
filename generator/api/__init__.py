"""The API for programs, on django-ninja: a personal token (`Authorization: Bearer sst_…`),
the same admission, quotas and chain as the web form.

- generations.py: the JSON API under /api/v1/ (submit, then poll);
- openai.py: the OpenAI-compatible Images endpoint, POST /v1/images/generations;
- schemas.py and rules.py: what goes in and out; errors.py: the one error type.

The OpenAPI document is the contract: served at /api/openapi.json (browsable at
/api/docs) and checked in as docs/openapi.json (`make openapi` writes it; a test fails
when the two differ).
"""

import json

from ninja import NinjaAPI
from ninja.parser import Parser

from generator.api import errors, generations, openai, rules
from generator.api.errors import ApiError, BodyTooLarge

# Every method of HTTP (RFC 9110) and QUERY: any other name still gets ninja's plain 405.
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT", "QUERY")


class LimitedParser(Parser):
    """JSON bodies up to rules.MAX_BODY_BYTES. Python's decoder raises RecursionError on
    deeply nested input; ninja turns any parser error into a 400, which errors.py words."""

    def parse_body(self, request):
        if len(request.body) > rules.MAX_BODY_BYTES:
            raise BodyTooLarge
        return json.loads(request.body)


def refuse_other_methods(router) -> None:
    """Answer a method a path does not serve with a 405 in the path's error format (ninja's
    own 405 is a bare text response)."""
    for path, view in list(router.path_operations.items()):
        allowed = sorted({m for op in view.operations for m in op.methods})
        others = [m for m in METHODS if m not in allowed]
        refuse = _refusal(allowed, with_id="{request_id}" in path)
        router.add_api_operation(path, others, refuse, auth=None, include_in_schema=False)


def _refusal(allowed: list[str], *, with_id: bool):
    def refuse(request):
        error = ApiError(
            405,
            "method_not_allowed",
            f"This URL answers {' and '.join(allowed)}.",
            headers={"Allow": ", ".join(allowed)},
        )
        raise errors.malformed(request, error)

    def refuse_with_id(request, request_id: str):  # ninja wants the path's parameter
        refuse(request)

    return refuse_with_id if with_id else refuse


api = NinjaAPI(
    title="Steadyshot API",
    version="1",
    description=(
        "Generate images with Gemini's image models through Steadyshot's retry and "
        "fallback chain. See docs/api.md for the whole story."
    ),
    # Mounted at the site's root (config/urls.py): the JSON API lives under /api/, the
    # OpenAI-compatible endpoint under /v1/, as OpenAI's SDKs expect.
    openapi_url="api/openapi.json",
    docs_url="api/docs",
    urls_namespace="api",
    parser=LimitedParser(),
)
errors.install(api)
for router in (generations.router, openai.router):
    refuse_other_methods(router)
api.add_router("api/v1", generations.router)
api.add_router("v1", openai.router)
