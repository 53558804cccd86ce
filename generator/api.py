"""The JSON API, for programs: a personal token (`Authorization: Bearer sst_…`), the same
admission, quotas and chain as the web form.

    POST /api/v1/generations              submit (202, one request per image asked for)
    GET  /api/v1/generations              the caller's team's requests, newest first
    GET  /api/v1/generations/<id>         one request: status, served model, attempts
    POST /api/v1/generations/<id>/cancel  stop further attempts
    GET  /api/v1/generations/<id>/image   the delivered image (original bytes)

    POST /v1/images/generations           OpenAI-compatible: waits for the image and
                                          answers with `b64_json`, as the Images API does

Every error is JSON: `{"error": {"code", "message", "field"?}}` with the matching status;
an over-quota submission is a 429 with `Retry-After`, saying which limit, the current use
and when it resets. Nothing is queued when a submission is refused.
"""

import base64
import json
import time
from collections.abc import Callable
from datetime import datetime
from functools import wraps
from uuid import UUID

from django.conf import settings
from django.http import FileResponse, HttpRequest, JsonResponse
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.views.decorators.csrf import csrf_exempt

from accounts.models import ApiToken, Team
from generator.admission import MAX_COUNT, AdmissionError, Submission, submit
from generator.models import FINAL_STATUSES, GenerationRequest, Status
from generator.resilience.catalogue import get_catalogue
from quotas.errors import QuotaExceeded

MAX_BODY_BYTES = 64 * 1024
PAGE_SIZE = 50


def error(status: int, code: str, message: str, *, field: str = "", headers=None) -> JsonResponse:
    body = {"code": code, "message": message}
    if field:
        body["field"] = field
    return JsonResponse({"error": body}, status=status, headers=headers)


def _bearer_token(request: HttpRequest) -> str:
    """The token of an `Authorization: Bearer <token>` header, or ""."""
    scheme, _, raw = request.headers.get("Authorization", "").partition(" ")
    return raw.strip() if scheme.lower() == "bearer" else ""


def token_required(view: Callable) -> Callable:
    """Authenticate by bearer token; sessions and cookies play no part (so no CSRF)."""

    @csrf_exempt
    @wraps(view)
    def wrapper(request: HttpRequest, *args, **kwargs):
        raw = _bearer_token(request)
        if not raw:
            return error(
                401,
                "unauthenticated",
                "Send your API token as 'Authorization: Bearer <token>'. "
                "Create one on your account's API tokens page.",
                headers={"WWW-Authenticate": "Bearer"},
            )
        user = ApiToken.authenticate(raw)
        if user is None:
            return error(
                401,
                "invalid_token",
                "This API token is unknown or was revoked. Create a new one on your "
                "account's API tokens page.",
                headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
            )
        request.user = user
        return view(request, *args, **kwargs)

    return wrapper


def _json_body(request: HttpRequest) -> dict | JsonResponse:
    if len(request.body) > MAX_BODY_BYTES:
        return error(413, "too_large", f"The body is over {MAX_BODY_BYTES // 1024} KiB.")
    try:
        body = json.loads(request.body or b"{}")
    except (ValueError, UnicodeDecodeError):
        return error(400, "invalid_json", "The body is not valid JSON.")
    if not isinstance(body, dict):
        return error(400, "invalid_json", "The body must be a JSON object.")
    return body


def _team_for(request: HttpRequest, value) -> Team | JsonResponse:
    """The team named in the body, or the caller's active team."""
    if value in (None, ""):
        return request.user.current_team()
    try:
        team_id = UUID(str(value))
    except ValueError:
        return error(400, "invalid", "“team” must be a team id (a UUID).", field="team")
    team = request.user.teams().filter(pk=team_id).first()
    if team is None:
        return error(404, "not_found", "You are not a member of that team.", field="team")
    return team


def _submission(body: dict) -> Submission | JsonResponse:
    unknown = set(body) - {
        "prompt",
        "strategy",
        "aspect_ratio",
        "image_size",
        "count",
        "deadline",
        "team",
    }
    if unknown:
        name = sorted(unknown)[0]
        return error(400, "unknown_field", f"Unknown field “{name}”.", field=name)
    text_fields = {}
    for name in ("prompt", "strategy", "aspect_ratio", "image_size"):
        value = body.get(name)
        if value is not None and not isinstance(value, str):
            return error(400, "invalid", f"“{name}” must be a string.", field=name)
        text_fields[name] = value
    if text_fields["prompt"] is None:
        return error(400, "required", "“prompt” is required.", field="prompt")
    count = body.get("count", 1)
    if isinstance(count, bool) or not isinstance(count, int):
        return error(
            400, "invalid", f"“count” must be a whole number 1-{MAX_COUNT}.", field="count"
        )
    deadline = body.get("deadline")
    if deadline is not None:
        parsed = parse_datetime(deadline) if isinstance(deadline, str) else None
        if parsed is None:
            return error(
                400,
                "invalid",
                "“deadline” must be an ISO 8601 date and time, e.g. 2026-12-01T17:00:00Z.",
                field="deadline",
            )
        if timezone.is_naive(parsed):
            parsed = timezone.make_aware(parsed, timezone.get_default_timezone())
        deadline = parsed
    return Submission(
        prompt=text_fields["prompt"],
        strategy=text_fields["strategy"] or "quality-first",
        aspect_ratio=text_fields["aspect_ratio"] or "1:1",
        image_size=text_fields["image_size"] or "1K",
        count=count,
        deadline=deadline,
    )


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def serialize(request: GenerationRequest, *, attempts: bool = False) -> dict:
    catalogue = get_catalogue()
    data = {
        "id": str(request.id),
        "batch": str(request.batch),
        "status": request.status,
        "status_reason": request.status_reason,
        "prompt": request.prompt,
        "strategy": request.strategy,
        "requested": {
            "aspect_ratio": request.aspect_ratio,
            "image_size": request.image_size,
            "chain": list(request.chain),
            "deadline": _iso(request.deadline),
            # Quality-first: until when Nano Banana Pro is waited for and retried.
            "wait_up_to": _iso(request.wait_up_to),
        },
        "current_model": request.current_model or None,
        "waiting_until": _iso(request.waiting_until),
        "served_model": request.served_model or None,
        "served_model_name": (
            catalogue[request.served_model].display_name
            if request.served_model in catalogue.models
            else None
        ),
        "fell_back": request.fell_back,
        "fallback_reason": request.fallback_reason or None,
        "delivered": (
            {"width": request.delivered_width, "height": request.delivered_height}
            if request.delivered_width
            else None
        ),
        "attempt_count": request.attempt_count,
        "cost_usd": str(request.cost_usd) if request.cost_usd is not None else None,
        "error": (
            {"code": request.error_code, "message": request.error_message}
            if request.status in (Status.FAILED, Status.CANCELED)
            else None
        ),
        "created": _iso(request.created),
        "finished": _iso(request.finished),
        "image_url": (
            f"/api/v1/generations/{request.id}/image"
            if request.status == Status.SUCCEEDED
            else None
        ),
    }
    if attempts:
        data["attempts"] = [
            {
                "number": a.number,
                "model": a.model,
                "outcome": a.outcome,
                "http_status": a.http_status,
                "latency_ms": a.latency_ms,
                "started": _iso(a.started),
                "decision": a.decision or None,
                "decision_reason": a.decision_reason or None,
            }
            for a in request.attempts.order_by("number")
        ]
    return data


def _quota_error(exc: QuotaExceeded) -> JsonResponse:
    retry = max(1, int(exc.retry_after_s()))
    body = {"code": "quota_exceeded", "message": str(exc), **exc.to_dict()}
    body["code"] = "quota_exceeded"
    return JsonResponse({"error": body}, status=429, headers={"Retry-After": str(retry)})


def _accept(request: HttpRequest, body: dict) -> list[GenerationRequest] | JsonResponse:
    team = _team_for(request, body.get("team"))
    if isinstance(team, JsonResponse):
        return team
    submission = _submission(body)
    if isinstance(submission, JsonResponse):
        return submission
    try:
        return submit(request.user, team, submission)
    except AdmissionError as exc:
        return error(400, "invalid", exc.message, field=exc.field)
    except QuotaExceeded as exc:
        return _quota_error(exc)


def _visible(request: HttpRequest):
    return GenerationRequest.objects.visible_to(request.user)


def _one(request: HttpRequest, request_id) -> GenerationRequest | JsonResponse:
    try:
        UUID(str(request_id))
    except ValueError:
        return error(404, "not_found", "No such generation.")
    found = _visible(request).filter(pk=request_id).first()
    if found is None:
        return error(404, "not_found", "No such generation in your teams.")
    return found


@token_required
def generations(request: HttpRequest) -> JsonResponse:
    if request.method == "POST":
        body = _json_body(request)
        if isinstance(body, JsonResponse):
            return body
        accepted = _accept(request, body)
        if isinstance(accepted, JsonResponse):
            return accepted
        return JsonResponse({"data": [serialize(r) for r in accepted]}, status=202)
    if request.method != "GET":
        return error(405, "method_not_allowed", "Use GET to list or POST to submit.")
    rows = _visible(request).filter(team=request.user.current_team())
    status = request.GET.get("status")
    if status:
        if status not in Status.values:
            return error(
                400, "invalid", f"“status” is one of {', '.join(Status.values)}.", field="status"
            )
        rows = rows.filter(status=status)
    before = request.GET.get("before")
    try:
        page = rows.page(UUID(before) if before else None, PAGE_SIZE)
    except ValueError:
        page = None
    if page is None or not page.anchor_found:
        # The id of a row of this listing (the `next_before` of the previous page).
        return error(400, "invalid", "“before” must be a generation id.", field="before")
    return JsonResponse(
        {
            "data": [serialize(r) for r in page.rows],
            "next_before": str(page.next_before) if page.next_before else None,
        }
    )


@token_required
def generation(request: HttpRequest, request_id) -> JsonResponse:
    if request.method != "GET":
        return error(405, "method_not_allowed", "Use GET.")
    found = _one(request, request_id)
    if isinstance(found, JsonResponse):
        return found
    return JsonResponse(serialize(found, attempts=True))


@token_required
def cancel(request: HttpRequest, request_id) -> JsonResponse:
    if request.method != "POST":
        return error(405, "method_not_allowed", "Use POST to cancel.")
    found = _one(request, request_id)
    if isinstance(found, JsonResponse):
        return found
    if not found.may_be_changed_by(request.user):
        return error(403, "forbidden", GenerationRequest.CHANGE_REFUSED)
    # One implementation for the web page and the API: the model's, which says (from its
    # filtered UPDATE, so without a race) whether the request had already ended.
    if not found.cancel(request.user):
        return error(
            409, "already_final", f"This generation is already {found.get_status_display()}."
        )
    return JsonResponse(serialize(found), status=202)


@token_required
def image(request: HttpRequest, request_id):
    if request.method != "GET":
        return error(405, "method_not_allowed", "Use GET.")
    found = _one(request, request_id)
    if isinstance(found, JsonResponse):
        return found
    delivered = found.images.first()
    if delivered is None:
        return error(
            404, "no_image", f"No image yet: the generation is {found.get_status_display()}."
        )
    response = FileResponse(delivered.file.open("rb"), content_type=delivered.mime)
    response["Cache-Control"] = "private, max-age=3600"
    return response


# --- OpenAI-compatible --------------------------------------------------------------------

# OpenAI's `size` values mapped to our aspect ratios; any "WxH" is matched to the nearest.
_SIZE_WORDS = {"auto": "1:1"}
_MODEL_STRATEGY = {"quality-first": "quality-first", "stability-first": "stability-first"}


def _openai_error(status: int, message: str, type_: str, code: str | None = None, headers=None):
    body = {"error": {"message": message, "type": type_, "param": None, "code": code}}
    return JsonResponse(body, status=status, headers=headers)


def _ratio_for(size: str) -> str | None:
    from generator.resilience.catalogue import ASPECT_RATIOS

    if size in _SIZE_WORDS:
        return _SIZE_WORDS[size]
    width, _, height = size.partition("x")
    if not (width.isdigit() and height.isdigit()) or not int(width) or not int(height):
        return None
    wanted = int(width) / int(height)

    def distance(ratio: str) -> float:
        w, h = ratio.split(":")
        return abs(int(w) / int(h) - wanted)

    return min(ASPECT_RATIOS, key=distance)


def _strategy_for(model: str) -> str | None:
    """`quality-first` / `stability-first`, or a catalogue model id whose strategy has it
    first (so `gemini-2.5-flash-image` means stability-first)."""
    if not model:
        return "quality-first"
    if model in _MODEL_STRATEGY:
        return _MODEL_STRATEGY[model]
    catalogue = get_catalogue()
    for strategy in ("quality-first", "stability-first"):
        chain = catalogue.chain(strategy)
        if chain and chain[0].id == model:
            return strategy
    return None


@csrf_exempt
def openai_images(request: HttpRequest):
    """`POST /v1/images/generations`: the Images API, served through our chain. Waits up to
    OPENAI_COMPAT_WAIT_SECONDS for the images; a slow chain answers 504 with the ids to
    poll on the JSON API, so nothing the caller paid for is lost."""
    if request.method != "POST":
        return _openai_error(405, "Use POST.", "invalid_request_error")
    raw = _bearer_token(request)
    user = ApiToken.authenticate(raw) if raw else None
    if user is None:
        return _openai_error(
            401, "Invalid or missing API token (Bearer sst_…).", "invalid_request_error",
            "invalid_api_key",
        )  # fmt: skip
    request.user = user
    body = _json_body(request)
    if isinstance(body, JsonResponse):
        return _openai_error(
            400, json.loads(body.content)["error"]["message"], "invalid_request_error"
        )
    prompt = body.get("prompt")
    if not isinstance(prompt, str):
        return _openai_error(400, "“prompt” is required.", "invalid_request_error")
    strategy = _strategy_for(body.get("model") or "")
    if strategy is None:
        return _openai_error(
            400,
            "Unknown model: use quality-first, stability-first or a model id that starts a chain.",
            "invalid_request_error",
            "model_not_found",
        )
    ratio = _ratio_for(str(body.get("size") or "auto"))
    if ratio is None:
        return _openai_error(
            400, "“size” must be like 1024x1024 or auto.", "invalid_request_error"
        )
    n = body.get("n", 1)
    if isinstance(n, bool) or not isinstance(n, int):
        return _openai_error(400, f"“n” must be 1-{MAX_COUNT}.", "invalid_request_error")
    if body.get("response_format", "b64_json") != "b64_json":
        return _openai_error(
            400, "Only response_format b64_json is served.", "invalid_request_error"
        )
    accepted = _accept(
        request,
        {"prompt": prompt, "strategy": strategy, "aspect_ratio": ratio, "count": n},
    )
    if isinstance(accepted, JsonResponse):
        payload = json.loads(accepted.content)["error"]
        type_ = "rate_limit_error" if accepted.status_code == 429 else "invalid_request_error"
        headers = (
            {"Retry-After": accepted["Retry-After"]}
            if accepted.has_header("Retry-After")
            else None
        )
        return _openai_error(
            accepted.status_code, payload["message"], type_, payload["code"], headers
        )
    ids = [r.pk for r in accepted]
    deadline = time.monotonic() + settings.OPENAI_COMPAT_WAIT_SECONDS
    while True:
        rows = list(GenerationRequest.objects.filter(pk__in=ids).order_by("created", "id"))
        if all(r.status in FINAL_STATUSES for r in rows):
            break
        if time.monotonic() > deadline:
            return _openai_error(
                504,
                "The images are still being generated; poll "
                + ", ".join(f"/api/v1/generations/{i}" for i in ids),
                "timeout",
            )
        time.sleep(0.25)
    data = []
    for row in rows:
        delivered = row.images.first() if row.status == Status.SUCCEEDED else None
        if delivered is None:
            continue
        with delivered.file.open("rb") as handle:
            data.append(
                {
                    "b64_json": base64.b64encode(handle.read()).decode(),
                    "revised_prompt": None,
                }
            )
    if not data:
        failed = rows[0]
        blocked = failed.error_code == "blocked"
        return _openai_error(
            400 if blocked else 503,
            failed.error_message or "No image could be generated.",
            "invalid_request_error" if blocked else "server_error",
            failed.error_code or None,
        )
    return JsonResponse(
        {
            "created": int(rows[0].created.timestamp()),
            "data": data,
            "model": rows[0].served_model,
        }
    )
