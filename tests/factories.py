"""A seeded scenario: requests with their attempts at chosen times, written directly."""

from datetime import timedelta

from generator.models import Attempt, GenerationRequest

PRO = "gemini-3-pro-image-preview"
FLASH = "gemini-2.5-flash-image"


def make_request(
    user,
    *,
    created,
    status="succeeded",
    strategy="quality-first",
    served_model=FLASH,
    fell_back=False,
    wait_s=2,
    tti_s=30,
    attempts=(),
):
    """attempts: (model, outcome, offset_s from created, latency_ms, http_status)."""
    finished = created + timedelta(seconds=tti_s) if status != "queued" else None
    req = GenerationRequest.objects.create(
        user=user,
        team=user.active_team,
        prompt="a lighthouse",
        strategy=strategy,
        chain=[PRO, FLASH],
        status=status,
        served_model=served_model if status == "succeeded" else "",
        fell_back=fell_back,
        created=created,
        started=created + timedelta(seconds=wait_s),
        finished=finished,
        attempt_count=len(attempts),
    )
    for number, (model, outcome, offset, latency, http) in enumerate(attempts, 1):
        Attempt.objects.create(
            request=req,
            number=number,
            model=model,
            provider="gemini",
            started=created + timedelta(seconds=offset),
            latency_ms=latency,
            outcome=outcome,
            http_status=http,
        )
    return req
