"""What each API field accepts, said once: the OpenAPI document describes a field with its
rule, and an error about the field quotes it. The rules on values (prompt length,
sizes per model, the deadline in the future) live in generator.admission, shared with
the web form."""

from generator.admission import MAX_COUNT, PROMPT_MAX_CHARS
from generator.models import Status
from generator.resilience.catalogue import ASPECT_RATIOS, IMAGE_SIZES
from generator.resilience.strategies import STRATEGIES

# A submission is a few hundred bytes; anything far larger is a mistake or an attack.
MAX_BODY_BYTES = 64 * 1024
PAGE_SIZE = 50

RULES = {
    # The JSON API.
    "prompt": f"a string describing the image, at most {PROMPT_MAX_CHARS} characters",
    "strategy": " or ".join(STRATEGIES),
    "aspect_ratio": f"one of {', '.join(ASPECT_RATIOS)}",
    "image_size": f"one of {', '.join(IMAGE_SIZES)} that the strategy's first model delivers",
    "count": f"a whole number between 1 and {MAX_COUNT}",
    "deadline": "an ISO 8601 date and time, e.g. 2026-12-01T17:00:00Z",
    "team": "a team id (a UUID) of one of your teams",
    "status": f"one of {', '.join(Status.values)}",
    "before": "a generation id: the next_before of the page before",
    # The OpenAI-compatible endpoint.
    "model": "quality-first, stability-first, or the id of a model that starts a chain",
    "size": "auto or WxH in pixels, e.g. 1024x1024",
    "n": f"a whole number between 1 and {MAX_COUNT}",
    "response_format": "b64_json",
}


def wrong(name: str) -> str:
    """The message for a field that is not what it must be."""
    return f"“{name}” must be {RULES.get(name, 'as documented in docs/api.md')}."


def describe(name: str, more: str = "") -> str:
    """The OpenAPI description of a field: its rule, then what else a caller should know."""
    rule = RULES[name]
    return f"{rule[0].upper()}{rule[1:]}." + (f" {more}" if more else "")
