"""The JSON API: submit, then poll (docs/api.md).

    POST /api/v1/generations              submit (202, one request per image asked for)
    GET  /api/v1/generations              the caller's active team's requests, newest first
    GET  /api/v1/generations/{id}         one request: status, served model, attempts
    POST /api/v1/generations/{id}/cancel  stop further attempts
    GET  /api/v1/generations/{id}/image   the delivered image (original bytes)

An over-quota submission is a 429 with `Retry-After`, saying which limit, the current
use and when it resets. Nothing is queued when a submission is refused.
"""

from datetime import datetime
from uuid import UUID

from django.http import Http404, HttpRequest
from django.utils import timezone
from ninja import Query, Router, Schema
from ninja import Status as Answer
from ninja.params import Path

from accounts.models import Team
from generator import files
from generator.admission import AdmissionError, Submission, submit
from generator.api import rules
from generator.api.auth import TokenAuth
from generator.api.errors import ApiError
from generator.api.schemas import (
    ErrorOut,
    GenerationDetailOut,
    GenerationOut,
    PageOut,
    SubmitIn,
    SubmittedOut,
)
from generator.models import GenerationRequest, Status
from generator.resilience.catalogue import get_catalogue
from quotas.errors import QuotaExceeded

router = Router(auth=TokenAuth(), tags=["generations"])

ERRORS = {code: ErrorOut for code in (400, 401, 404, 413, 429)}
RequestId = Path(..., description="A generation id (a UUID).")


def accept(user, body: SubmitIn) -> list[GenerationRequest]:
    """Admit a submission for `user` (the JSON API's and the OpenAI endpoint's way in), or
    raise ApiError having created and queued nothing."""
    team = _team_for(user, body.team)
    try:
        return submit(user, team, Submission(**body.model_dump(exclude={"team"})))
    except AdmissionError as exc:
        raise ApiError(400, "invalid", exc.message, field=exc.field) from None
    except QuotaExceeded as exc:
        raise quota_error(exc) from None


def quota_error(exc: QuotaExceeded) -> ApiError:
    details = exc.to_dict()
    details.pop("code")  # the envelope's `code` is the error's kind; `quota` names the limit
    return ApiError(
        429,
        "quota_exceeded",
        str(exc),
        headers={"Retry-After": str(max(1, int(exc.retry_after_s())))},
        extra=details,
    )


def _team_for(user, team_id: UUID | None) -> Team:
    """The team named in the body, or the caller's active team."""
    if team_id is None:
        return user.current_team()
    team = user.teams().filter(pk=team_id).first()
    if team is None:
        raise ApiError(404, "not_found", "You are not a member of that team.", field="team")
    return team


def _one(user, request_id: str) -> GenerationRequest:
    try:
        pk = UUID(request_id)
    except ValueError:
        raise ApiError(404, "not_found", "No such generation.") from None
    found = GenerationRequest.objects.visible_to(user).filter(pk=pk).first()
    if found is None:
        raise ApiError(404, "not_found", "No such generation in your teams.")
    return found


def _ahead(value: datetime | None) -> bool:
    return value is not None and value > timezone.now()


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def serialize(row: GenerationRequest, *, attempts: bool = False) -> dict:
    catalogue = get_catalogue()
    data = {
        "id": str(row.id),
        "batch": str(row.batch),
        "team": str(row.team_id),
        "status": row.status,
        "status_reason": row.status_reason,
        "prompt": row.prompt,
        "strategy": row.strategy,
        "requested": {
            "aspect_ratio": row.aspect_ratio,
            "image_size": row.image_size,
            "chain": list(row.chain),
            "deadline": _iso(row.deadline),
            "wait_up_to": _iso(row.wait_up_to),
        },
        "current_model": row.current_model or None,
        # Only a time ahead: a batched request keeps the time it was put in a batch.
        "waiting_until": _iso(row.waiting_until) if _ahead(row.waiting_until) else None,
        "served_model": row.served_model or None,
        "served_model_name": (
            catalogue[row.served_model].display_name
            if row.served_model in catalogue.models
            else None
        ),
        "fell_back": row.fell_back,
        "falling_back": row.is_falling_back,
        "fallback_reason": row.fallback_reason or None,
        "cancel_requested": row.cancel_requested,
        "route": row.route,
        "upstream_batch": (
            {"name": row.upstream_batch.name, "state": row.upstream_batch.state}
            if row.upstream_batch
            else None
        ),
        "left_batch_reason": row.left_batch_reason or None,
        "delivered": (
            {"width": row.delivered_width, "height": row.delivered_height}
            if row.delivered_width
            else None
        ),
        "attempt_count": row.attempt_count,
        "cost_usd": str(row.cost_usd) if row.cost_usd is not None else None,
        "error": (
            {"code": row.error_code, "message": row.error_message}
            if row.status in (Status.FAILED, Status.CANCELED)
            else None
        ),
        "created": _iso(row.created),
        "finished": _iso(row.finished),
        "image_url": (
            f"/api/v1/generations/{row.id}/image" if row.status == Status.SUCCEEDED else None
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
            for a in row.attempts.order_by("number")
        ]
    return data


@router.post(
    "/generations",
    response={202: SubmittedOut, **ERRORS},
    summary="Submit a prompt",
)
def submit_generations(request: HttpRequest, body: SubmitIn):
    accepted = accept(request.auth, body)
    return Answer(202, {"data": [serialize(r) for r in accepted]})


class ListQuery(Schema):
    status: Status | None = None
    before: str | None = None
    team: UUID | None = None


@router.get("/generations", response={200: PageOut, **ERRORS}, summary="List your team's")
def list_generations(request: HttpRequest, query: Query[ListQuery]):
    for name in ("status", "before", "team"):
        if len(request.GET.getlist(name)) > 1:
            # Read as the last one alone, it would quietly drop the others.
            raise ApiError(400, "invalid", f"Give “{name}” once.", field=name)
    team = _team_for(request.auth, query.team)
    rows = (
        GenerationRequest.objects.visible_to(request.auth)
        .filter(team=team)
        .select_related("upstream_batch")
    )
    if query.status:
        rows = rows.filter(status=query.status)
    try:
        page = rows.page(
            UUID(query.before) if query.before else None,
            rules.PAGE_SIZE,
            # The last row of the previous page may have been deleted or changed status.
            anchors=GenerationRequest.objects.filter(team=team),
        )
    except ValueError:
        page = None
    if page is None or not page.anchor_found:
        # The id of a row of this listing (the `next_before` of the previous page).
        raise ApiError(400, "invalid", rules.wrong("before"), field="before")
    return {
        "data": [serialize(r) for r in page.rows],
        "next_before": str(page.next_before) if page.next_before else None,
    }


@router.get(
    "/generations/{request_id}",
    response={200: GenerationDetailOut, **ERRORS},
    summary="One request, with its attempts",
)
def get_generation(request: HttpRequest, request_id: str = RequestId):
    return serialize(_one(request.auth, request_id), attempts=True)


@router.post(
    "/generations/{request_id}/cancel",
    response={202: GenerationOut, 403: ErrorOut, 409: ErrorOut, **ERRORS},
    summary="Stop further attempts",
)
def cancel_generation(request: HttpRequest, request_id: str = RequestId):
    found = _one(request.auth, request_id)
    if not found.may_be_changed_by(request.auth):
        raise ApiError(403, "forbidden", GenerationRequest.CHANGE_REFUSED)
    # One implementation for the web page and the API: the model's, which says (from its
    # filtered UPDATE, so without a race) whether the request had already ended.
    if not found.cancel(request.auth):
        raise ApiError(
            409, "already_final", f"This generation is already {found.get_status_display()}."
        )
    return Answer(202, serialize(found))


@router.get(
    "/generations/{request_id}/image",
    response={200: None, **ERRORS},
    summary="The delivered image's bytes",
    openapi_extra={
        "responses": {
            200: {
                "description": "The image as delivered (PNG, JPEG or WebP).",
                "content": {"image/*": {"schema": {"type": "string", "format": "binary"}}},
            }
        }
    },
)
def get_image(request: HttpRequest, request_id: str = RequestId):
    found = _one(request.auth, request_id)
    delivered = found.images.first()
    if delivered is None:
        raise ApiError(
            404, "no_image", f"No image yet: the generation is {found.get_status_display()}."
        )
    try:
        return files.stream(delivered.file, delivered.mime)
    except Http404:
        raise ApiError(
            404, "file_missing", "The image file is missing from storage; generate it again."
        ) from None
