"""One exception type for every refusal of the API, and the two wire formats it is written in.

Code raises `ApiError(status, code, message, field=...)`; ninja's own refusals (a body
that is not JSON, a field of the wrong type, a body too large) are turned into one here.
The JSON API writes it as `{"error": {"code", "message", "field"?}}` (docs/api.md); the
OpenAI-compatible endpoint, which owns the paths under OPENAI_PREFIX, as the Images API
does: `{"error": {"message", "type", "param", "code"}}`. Either way it is JSON with the
error's status: no refusal becomes an HTML page or a 500.
"""

import logging

from django.core.exceptions import RequestDataTooBig
from django.db import InterfaceError, OperationalError
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from ninja.errors import AuthenticationError, HttpError, ValidationError

from generator.api import rules

log = logging.getLogger("steadyshot.api")

# The OpenAI-compatible endpoint's paths: its errors are written in OpenAI's format.
OPENAI_PREFIX = "/v1/"


class ApiError(Exception):
    """A refusal: `status` and `code` for programs, `message` for people (what happened
    and what to do), `field` the input at fault. `code` may be None for the OpenAI
    format, whose `code` is null for a malformed request."""

    def __init__(
        self,
        status: int,
        code: str | None,
        message: str,
        *,
        field: str = "",
        headers: dict | None = None,
        extra: dict | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.headers = headers or {}
        # More members of the error object (a quota refusal's limit, use and reset).
        self.extra = extra or {}


class BodyTooLarge(Exception):
    """Raised by the parser before decoding a body over rules.MAX_BODY_BYTES."""


def too_large() -> ApiError:
    return ApiError(
        413,
        "too_large",
        f"The body is over {rules.MAX_BODY_BYTES // 1024} KiB. Send a shorter prompt.",
    )


def database_unavailable(request: HttpRequest, exc: Exception) -> HttpResponse:
    log.error("%s %s: the database is out of reach: %s", request.method, request.path, exc)
    error = ApiError(
        503,
        "unavailable",
        "The database did not answer (it may be restarting). Try again in a few seconds; "
        "a submission that was accepted shows in GET /api/v1/generations.",
        headers={"Retry-After": "5"},
    )
    return render(request, error)


def render(request: HttpRequest, error: ApiError) -> HttpResponse:
    if request.path.startswith(OPENAI_PREFIX):
        body = {"error": _openai_body(error)}
    else:
        body = {"error": {"code": error.code, "message": error.message}}
        if error.field:
            body["error"]["field"] = error.field
        body["error"].update(error.extra)
    return JsonResponse(body, status=error.status, headers=error.headers)


def _openai_body(error: ApiError) -> dict:
    if error.status == 429:
        type_ = "rate_limit_error"
    elif error.status == 504:
        type_ = "timeout"
    elif error.status >= 500:
        type_ = "server_error"
    else:
        type_ = "invalid_request_error"
    return {"message": error.message, "type": type_, "param": None, "code": error.code}


def from_validation(request: HttpRequest, exc: ValidationError) -> ApiError:
    """The first thing wrong with the input, said as docs/api.md promises: an unknown
    field before a wrong one, and the rule of the field at fault."""
    errors = sorted(exc.errors, key=lambda e: e["type"] != "extra_forbidden")
    first = errors[0]
    # ninja's loc is (source, [param name,] field...): ("body", "body", "count"),
    # ("query", "status"). The field is the first name after the source and param.
    source, *path = first["loc"]
    if source == "body" and path and path[0] == "body":
        path = path[1:]
    name = str(path[0]) if path else ""
    openai = request.path.startswith(OPENAI_PREFIX)
    if not name:
        return ApiError(400, None if openai else "invalid_json", "The body must be a JSON object.")
    if first["type"] == "extra_forbidden":
        return ApiError(400, "unknown_field", f"Unknown field “{name}”.", field=name)
    if first["type"] == "missing":
        return ApiError(400, None if openai else "required", f"“{name}” is required.", field=name)
    return ApiError(400, None if openai else "invalid", rules.wrong(name), field=name)


def from_http_error(request: HttpRequest, exc: HttpError) -> ApiError:
    # ninja wraps whatever the body parser raised into a 400 HttpError; the cause tells a
    # body too large apart from one that is not JSON (deeply nested JSON included).
    if isinstance(exc.__cause__, BodyTooLarge | RequestDataTooBig):
        return malformed(request, too_large())
    if isinstance(exc, AuthenticationError):
        return ApiError(401, "unauthenticated", str(exc))
    if exc.status_code == 400:
        return malformed(request, ApiError(400, "invalid_json", "The body is not valid JSON."))
    return ApiError(exc.status_code, "error", str(exc))


def malformed(request: HttpRequest, error: ApiError) -> ApiError:
    """The OpenAI format's `code` is null for a malformed request, as it always was."""
    if request.path.startswith(OPENAI_PREFIX):
        error.code = None
    return error


def install(api) -> None:
    """Route every refusal of `api` through ApiError. Anything else is a bug: it is left
    to Django, which logs it and answers 500."""
    api.add_exception_handler(ApiError, render)
    api.add_exception_handler(
        Http404, lambda request, exc: render(request, ApiError(404, "not_found", "Not found."))
    )
    api.add_exception_handler(
        ValidationError, lambda request, exc: render(request, from_validation(request, exc))
    )
    api.add_exception_handler(
        HttpError, lambda request, exc: render(request, from_http_error(request, exc))
    )
    # The database out of reach (a failover, a restart) past what admission retries
    # itself: say so, and when to try again, instead of a bare 500.
    api.add_exception_handler(OperationalError, database_unavailable)
    api.add_exception_handler(InterfaceError, database_unavailable)
    # Django refuses to read a body over DATA_UPLOAD_MAX_MEMORY_SIZE before our parser
    # sees it: the same 413 as for a body over our own, smaller limit.
    api.add_exception_handler(
        RequestDataTooBig, lambda request, exc: render(request, malformed(request, too_large()))
    )
