"""The bodies and answers of the JSON API, as pydantic schemas: ninja validates what comes
in against them and writes the OpenAPI document (docs/openapi.json) from them.

Types are strict (a count of "2" or true is refused, not converted); the rules on values
stay in generator.admission, which the web form shares. Times go out as the strings they
always were (Python's isoformat), so the wire format is unchanged."""

from datetime import UTC, datetime
from typing import Annotated, Literal
from uuid import UUID

from django.utils import timezone
from django.utils.dateparse import parse_datetime
from ninja import Field, Schema
from pydantic import BaseModel, BeforeValidator, ConfigDict

from generator.api import rules
from generator.resilience.catalogue import ASPECT_RATIOS, IMAGE_SIZES
from generator.resilience.strategies import DEFAULT_STRATEGY, STRATEGIES


def _deadline(value):
    """An aware datetime, or ValueError for anything that is not a real date and time:
    Django's parser raises ValueError on a well-formed impossible one (month 13, hour
    25, offset +99:00) and converting an offset near year 1 or 9999 overflows."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(rules.wrong("deadline"))
    try:
        parsed = parse_datetime(value)
        if parsed is None:
            raise ValueError(value)
        if timezone.is_naive(parsed):
            parsed = timezone.make_aware(parsed, timezone.get_default_timezone())
        return parsed.astimezone(UTC)
    except (ValueError, OverflowError):
        raise ValueError(rules.wrong("deadline")) from None


def _uuid(value):
    if value is None or isinstance(value, UUID):
        return value
    if not isinstance(value, str):
        raise ValueError(value)
    return UUID(value)  # ValueError for anything else


Deadline = Annotated[datetime | None, BeforeValidator(_deadline)]
TeamId = Annotated[UUID | None, BeforeValidator(_uuid)]
Strategy = Literal[STRATEGIES]
AspectRatio = Literal[ASPECT_RATIOS]
ImageSize = Literal[IMAGE_SIZES]


class SubmitIn(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")

    prompt: str = Field(description=rules.describe("prompt"))
    strategy: Strategy = Field(DEFAULT_STRATEGY.value, description=rules.describe("strategy"))
    aspect_ratio: AspectRatio = Field("1:1", description=rules.describe("aspect_ratio"))
    image_size: ImageSize = Field("1K", description=rules.describe("image_size"))
    count: int = Field(1, description=rules.describe("count", "One request per image, one batch."))
    deadline: Deadline = Field(
        None,
        description=rules.describe(
            "deadline", "Deliver by: quality-first waits for its first model until then "
            "(instead of the default wait limit) and falls back in time to deliver by it; "
            "economy needs one at least ECONOMY_MIN_LEAD_S (3 hours) away. "
            "Without an offset, the server's time zone."
        ),
        json_schema_extra={"type": "string", "format": "date-time"},
    )  # fmt: skip
    team: TeamId = Field(
        None,
        description=rules.describe("team", "Default: your active team."),
        json_schema_extra={"type": "string", "format": "uuid"},
    )


class Requested(Schema):
    aspect_ratio: str
    image_size: str
    chain: list[str] = Field(description="The model ids planned, in order.")
    deadline: str | None
    wait_up_to: str | None = Field(
        description="Quality-first: until when the first model (Nano Banana Pro) is waited "
        "for and retried before falling back: the deadline when given, else the submission "
        "plus the default wait limit. Null for stability-first."
    )


class Delivered(Schema):
    width: int
    height: int


class UpstreamBatchOut(Schema):
    name: str = Field(description="The provider's batch, `batches/…`; empty until sent.")
    state: str = Field(
        description="closed, pending, running, succeeded, failed, expired or cancelled."
    )


class GenerationError(Schema):
    code: str
    message: str


class GenerationOut(Schema):
    id: str
    batch: str
    team: str = Field(description="The team it belongs to (and whose quota it uses).")
    status: str = Field(description=rules.describe("status"))
    status_reason: str
    prompt: str
    strategy: str
    requested: Requested
    current_model: str | None
    waiting_until: str | None
    served_model: str | None
    served_model_name: str | None
    fell_back: bool = Field(description="Delivered by a later model of its chain than the first.")
    falling_back: bool = Field(
        description="Still active, on a later model of its chain than the first."
    )
    fallback_reason: str | None
    cancel_requested: bool = Field(
        description="A cancel was asked for. A running request stops after the call "
        "already made: if that call returns an image, the image is delivered and charged."
    )
    route: str = Field(
        description="How it is served: direct (the chain), batch (Gemini's Batch mode, "
        "economy) or off_peak (economy, at the calmest hour before its deadline)."
    )
    upstream_batch: UpstreamBatchOut | None = Field(
        description="Economy: the Batch mode batch that carries (or carried) it."
    )
    left_batch_reason: str | None = Field(
        description="Economy: why it left Batch mode for the chain, if it did."
    )
    delivered: Delivered | None = Field(description="The pixel size of the image delivered.")
    attempt_count: int
    cost_usd: str | None
    error: GenerationError | None
    created: str
    finished: str | None
    image_url: str | None


class AttemptOut(Schema):
    number: int
    model: str
    outcome: str
    http_status: int | None
    latency_ms: int | None
    started: str
    decision: str | None
    decision_reason: str | None


class GenerationDetailOut(GenerationOut):
    attempts: list[AttemptOut]


class SubmittedOut(Schema):
    data: list[GenerationOut] = Field(description="The requests, one per image asked for.")


class PageOut(Schema):
    data: list[GenerationOut]
    next_before: str | None = Field(description="The `before` of the next page; null at the end.")


class ErrorBody(Schema):
    code: str = Field(description="What went wrong, for programs (docs/api.md lists them).")
    message: str = Field(description="What went wrong and what to do, for people.")
    field: str | None = Field(None, description="The input at fault, when one is.")
    # A quota refusal (429) says which limit, the use and when it resets.
    limit: str | None = None
    quota: str | None = None
    unit: str | None = None
    used: str | None = None
    allowed: str | None = None
    requested: str | None = None
    resets_at: str | None = None


class ErrorOut(Schema):
    error: ErrorBody
