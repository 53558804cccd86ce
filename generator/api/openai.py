"""`POST /v1/images/generations`: OpenAI's Images API, served through our chain, so any
OpenAI SDK gets the resilience for free (docs/api.md). Its wire format is OpenAI's, errors
included (generator.api.errors writes them for every path under /v1/).

The call is synchronous for the caller: it waits up to OPENAI_COMPAT_WAIT_SECONDS for the
images. The view is async, served by Django's ASGI handler (config/asgi.py), so a waiting
call holds no thread of the web server's pool and no database connection: every database
step runs in the event loop's shared threads and polls once per POLL_SECONDS. A chain
slower than the wait answers 504 naming the JSON API URLs to poll; nothing is lost.
"""

import asyncio
import base64
import re
import time

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import close_old_connections
from django.http import HttpRequest
from ninja import Field, Router, Schema
from pydantic import BaseModel, ConfigDict

from accounts.bearer import bearer
from accounts.models import ApiToken
from generator import economy, files
from generator.api import rules
from generator.api.auth import OpenAITokenAuth, count_failure, refuse_if_guessing
from generator.api.errors import ApiError
from generator.api.generations import accept
from generator.api.schemas import SubmitIn
from generator.models import FINAL_STATUSES, GenerationRequest, Status
from generator.reasons import duration_words
from generator.resilience.catalogue import ASPECT_RATIOS, get_catalogue
from generator.resilience.strategies import DEFAULT_STRATEGY, STRATEGIES, StrategyName

POLL_SECONDS = 0.5
# `WxH` in ASCII digits: str.isdigit() also takes "²", which int() refuses, and the cap
# keeps int() far from its 4300-digit limit.
SIZE = re.compile(r"([0-9]{1,5})x([0-9]{1,5})", re.ASCII)


def in_thread(function):
    """`function` as a coroutine run in the event loop's shared threads, not in a thread
    of this request's own, with the connection checks Django makes around a request (a
    thread of the pool keeps its connection between calls, as a worker does)."""

    def run(*args, **kwargs):
        close_old_connections()
        try:
            return function(*args, **kwargs)
        finally:
            close_old_connections()

    return sync_to_async(run, thread_sensitive=False)


class AsyncTokenAuth(OpenAITokenAuth):
    @staticmethod
    def _check(request: HttpRequest, raw: str):
        """The token's user, or None; throttled as the JSON API's (auth.py)."""
        refuse_if_guessing(request)
        user = ApiToken.authenticate(raw)
        if user is None:
            count_failure(request)
        return user

    async def __call__(self, request: HttpRequest):
        raw = bearer(request)
        if not raw:
            raise self.missing()
        user = await in_thread(self._check)(request, raw)
        if user is None:
            raise self.unknown()
        request.user = user
        return user


router = Router(auth=AsyncTokenAuth(), tags=["openai-compatible"])


class ImagesIn(BaseModel):
    # OpenAI's SDKs may send parameters we do not serve (quality, style, user...): they are
    # ignored, as the Images API ignores what a model does not use.
    model_config = ConfigDict(strict=True, extra="ignore")

    prompt: str = Field(description=rules.describe("prompt"))
    model: str | None = Field(
        None,
        description=rules.describe(
            "model", "Default quality-first; gemini-2.5-flash-image means stability-first."
        ),
    )
    size: str | None = Field(
        None, description=rules.describe("size", "Mapped to the nearest aspect ratio, at 1K.")
    )
    n: int | None = Field(None, description=rules.describe("n"))
    response_format: str | None = Field(
        None, description=rules.describe("response_format", "Images are never public URLs.")
    )


class ImageData(Schema):
    b64_json: str
    revised_prompt: str | None


class ImagesOut(Schema):
    created: int
    data: list[ImageData]
    model: str = Field(description="The model that actually served.")


class OpenAIErrorBody(Schema):
    message: str
    type: str
    param: str | None
    code: str | None


class OpenAIErrorOut(Schema):
    error: OpenAIErrorBody


def strategy_for(model: str | None) -> str:
    """`quality-first` / `stability-first`, or a catalogue model id whose strategy has it
    first (so `gemini-2.5-flash-image` means stability-first)."""
    if not model:
        return DEFAULT_STRATEGY
    if model == StrategyName.ECONOMY:
        # It needs a "deliver by" hours away, which this call has no field for, and this
        # call waits minutes at most.
        raise ApiError(
            400,
            "model_not_found",
            "Economy is served by the JSON API (POST /api/v1/generations with a deadline "
            f"at least {duration_words(economy.min_lead().total_seconds())} away), not "
            "here: this call waits minutes at most. Use quality-first or stability-first.",
        )
    if model in STRATEGIES:
        return model
    catalogue = get_catalogue()
    for strategy in STRATEGIES:
        chain = catalogue.chain(strategy)
        if chain and chain[0].id == model:
            return strategy
    raise ApiError(
        400,
        "model_not_found",
        "Unknown model: use quality-first, stability-first or a model id that starts a chain.",
    )


def ratio_for(size: str | None) -> str:
    """The aspect ratio nearest to OpenAI's `size` ("auto" is square)."""
    if not size or size == "auto":
        return "1:1"
    match = SIZE.fullmatch(size)
    if not match or not int(match[1]) or not int(match[2]):
        raise ApiError(400, None, "“size” must be like 1024x1024 or auto.")
    wanted = int(match[1]) / int(match[2])

    def distance(ratio: str) -> float:
        w, h = ratio.split(":")
        return abs(int(w) / int(h) - wanted)

    return min(ASPECT_RATIOS, key=distance)


# The official SDKs call again after a 5xx on their own (the openai SDK twice), and each
# call here is a new request: a 504 leaves the first one running and a 503 answers for
# requests that already ended. The SDKs honour this header and do not call again; a
# person or program that wants another try submits it knowingly.
NO_RETRY = {"x-should-retry": "false"}


def _unfinished(ids) -> bool:
    return GenerationRequest.objects.filter(pk__in=ids).exclude(status__in=FINAL_STATUSES).exists()


def _answer(ids) -> dict:
    """The Images API's answer for requests that all ended, or the error of the first."""
    rows = list(
        GenerationRequest.objects.filter(pk__in=ids)
        .prefetch_related("images")
        .order_by("created", "id")
    )
    data, served = [], []
    for row in rows:
        delivered = row.image if row.status == Status.SUCCEEDED else None
        if delivered is None:
            continue
        try:
            content = files.read(delivered.file)
        except (FileNotFoundError, ValueError, *files.STORAGE_ERRORS):
            continue  # storage lost it or is down: answered as no image, not as a 500
        data.append({"b64_json": base64.b64encode(content).decode(), "revised_prompt": None})
        served.append(row.served_model)
    if not data:
        failed = rows[0]
        # The prompt's own fault (refused for safety, or as a bad request by the
        # upstream) is the caller's 400; anything else is ours, a 503.
        theirs = failed.error_code in ("blocked", "bad_request")
        raise ApiError(
            400 if theirs else 503,
            failed.error_code or None,
            failed.error_message or "No image could be generated.",
            headers={} if theirs else NO_RETRY,
        )
    # With n > 1, the images that came are answered; one that failed is left out (and
    # refunded), as the Images API has no place for a failure beside an image.
    return {
        "created": int(rows[0].created.timestamp()),
        "data": data,
        "model": served[0],
    }


@router.post(
    "/images/generations",
    response={200: ImagesOut, **{code: OpenAIErrorOut for code in (400, 401, 413, 429, 503, 504)}},
    summary="Create images (OpenAI-compatible)",
)
async def create_images(request: HttpRequest, body: ImagesIn):
    if body.response_format not in (None, "b64_json"):
        raise ApiError(400, None, "Only response_format b64_json is served.")
    submission = SubmitIn(
        prompt=body.prompt,
        strategy=strategy_for(body.model),
        aspect_ratio=ratio_for(body.size),
        count=1 if body.n is None else body.n,
    )
    accepted = await in_thread(accept)(request.auth, submission)
    ids = [r.pk for r in accepted]
    give_up = time.monotonic() + settings.OPENAI_COMPAT_WAIT_SECONDS
    while await in_thread(_unfinished)(ids):
        if time.monotonic() > give_up:
            raise ApiError(
                504,
                None,
                "The images are still being generated; poll "
                + ", ".join(f"/api/v1/generations/{i}" for i in ids),
                headers=NO_RETRY,
            )
        await asyncio.sleep(POLL_SECONDS)
    return await in_thread(_answer)(ids)
