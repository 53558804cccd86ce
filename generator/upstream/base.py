"""What a provider takes and gives: one call in, one typed result or one typed error out.

Providers (gemini.py, openai_images.py, openai_chat.py) map every response to the
taxonomy and never retry: retrying is the policy's job. transport.py, which they share,
is the only module that imports httpx.
"""

from dataclasses import dataclass, field

from generator.image_check import ImageRejected, PreparedImage, prepare_generated_image
from generator.resilience.catalogue import ModelSpec
from generator.resilience.taxonomy import Outcome


@dataclass(frozen=True)
class InputImage:
    data: bytes
    mime: str  # image/png, image/jpeg, image/webp


@dataclass(frozen=True)
class GenerationCall:
    model: ModelSpec
    prompt: str
    aspect_ratio: str | None = None  # one of catalogue.ASPECT_RATIOS; None: model's default
    image_size: str | None = None  # "1K" / "2K" / "4K"; sent only where the model supports it
    references: tuple[InputImage, ...] = ()
    request_id: str = ""  # for logs only

    def image_size_to_send(self) -> str | None:
        """The size to ask for, only from a model that offers a choice: Flash is 1K only
        and whether it rejects the field is unconfirmed, so it never gets it."""
        sizes = self.model.sizes
        if self.image_size and len(sizes) > 1 and self.image_size in sizes:
            return self.image_size
        return None


@dataclass(frozen=True)
class GenerationResult:
    data: bytes  # the final image (thought images skipped)
    mime: str  # as the upstream said (Pro answers JPEG, Flash PNG)
    latency_ms: int
    model_version: str = ""
    usage: dict = field(default_factory=dict)  # usageMetadata / usage as sent
    text: str = ""  # any non-thought text the model sent with the image
    # The image decoded whole, checked and thumbnailed by the provider (whole_image()):
    # a success is only ever a readable image, and the worker does not decode it twice.
    prepared: PreparedImage | None = None

    def image(self) -> PreparedImage:
        """The image decoded, checked and thumbnailed: as the provider prepared it, or
        now for a result built without it (ImageRejected if it is not an image)."""
        return self.prepared or prepare_generated_image(self.data)


class UpstreamError(Exception):
    """A call that did not produce an image. `message` is safe to log and to show to
    operators: it never contains an API key."""

    def __init__(
        self,
        outcome: Outcome,
        message: str,
        *,
        http_status: int | None = None,
        retry_after_s: float | None = None,
        quota_id: str = "",
        quota_scope: str = "",  # "minute", "day" or "" (unknown)
        quota_limit: int | None = None,  # the per-minute call quota a 429 states
        block_reason: str = "",  # for BLOCKED: the finishReason / blockReason
        latency_ms: int = 0,
    ):
        super().__init__(message)
        self.outcome = outcome
        self.message = message
        self.http_status = http_status
        self.retry_after_s = retry_after_s
        self.quota_id = quota_id
        self.quota_scope = quota_scope
        self.quota_limit = quota_limit
        self.block_reason = block_reason
        self.latency_ms = latency_ms

    def __repr__(self):
        return f"UpstreamError({self.outcome}, {self.http_status}, {self.message!r})"


def whole_image(data: bytes, fail) -> PreparedImage:
    """`data` decoded whole, or `fail`'s MALFORMED error: an answer whose header says PNG
    but whose pixels are garbage or cut short is the provider's failure, classified
    before any success is recorded (not a worker's crash after it, issue 13)."""
    if not data:
        raise fail(Outcome.MALFORMED, "the image data is empty")
    try:
        # The thumbnail too, from the same pixels: the worker that delivers the image
        # only stores it (a second decode cost more than the thumbnail itself).
        return prepare_generated_image(data)
    except ImageRejected as exc:
        raise fail(Outcome.MALFORMED, f"the image is not readable: {exc}") from None
