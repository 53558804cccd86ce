"""The error taxonomy: one place, used everywhere (providers, policy, monitoring, UI).

Pure: no Django, no httpx. Every upstream call ends in exactly one Outcome.
"""

from enum import StrEnum


class Outcome(StrEnum):
    SUCCESS = "success"
    OVERLOADED = "overloaded"  # 503 UNAVAILABLE, model overloaded / high demand
    UNAVAILABLE = "unavailable"  # 503 other: outage or maintenance
    RATE_LIMITED = "rate_limited"  # 429; keep the server's retryDelay and quota id
    SERVER_ERROR = "server_error"  # 500 / 502 / 504
    TIMEOUT = "timeout"  # no answer within the connect or read timeout
    NETWORK = "network"  # connection refused, reset, DNS...
    BLOCKED = "blocked"  # safety: not retried, not downgraded, the user is told why
    NO_IMAGE = "no_image"  # 200 without an image part
    BAD_REQUEST = "bad_request"  # 400: not retried
    AUTH = "auth"  # 401 / 403: not retried, operator alerted
    NOT_FOUND = "not_found"  # 404: model missing; downgrade
    MALFORMED = "malformed"  # unparseable body

    @property
    def label(self) -> str:
        return LABELS[self]

    @property
    def is_failure(self) -> bool:
        return self is not Outcome.SUCCESS


LABELS = {
    Outcome.SUCCESS: "Success",
    Outcome.OVERLOADED: "Overloaded (503)",
    Outcome.UNAVAILABLE: "Unavailable (503)",
    Outcome.RATE_LIMITED: "Rate limited (429)",
    Outcome.SERVER_ERROR: "Server error (5xx)",
    Outcome.TIMEOUT: "Timeout",
    Outcome.NETWORK: "Network error",
    Outcome.BLOCKED: "Blocked by safety filters",
    Outcome.NO_IMAGE: "No image returned",
    Outcome.BAD_REQUEST: "Bad request (400)",
    Outcome.AUTH: "Authentication (401/403)",
    Outcome.NOT_FOUND: "Model not found (404)",
    Outcome.MALFORMED: "Malformed response",
}

# What a person reads when a request ends on this outcome, and what to do about it.
USER_MESSAGES = {
    Outcome.OVERLOADED: "The image models are overloaded right now. Try again in a few minutes, "
    "or choose stability-first to prefer the steadier model.",
    Outcome.UNAVAILABLE: "The image models are unavailable (an outage on the provider's side). "
    "Try again later.",
    Outcome.RATE_LIMITED: "The provider's quota for the image models is used up for now. "
    "Try again later.",
    Outcome.SERVER_ERROR: "The provider kept failing with server errors. Try again in a few minutes.",
    Outcome.TIMEOUT: "The image models did not answer in time. Try again, or use stability-first.",
    Outcome.NETWORK: "Steadyshot could not reach the image provider. The operators have been "
    "told; try again later.",
    Outcome.BLOCKED: "The provider's safety filters refused this prompt or its result. "
    "Rephrase the prompt and submit it again.",
    Outcome.NO_IMAGE: "The models answered without an image. Rephrase the prompt, "
    "e.g. say explicitly that you want an image.",
    Outcome.BAD_REQUEST: "The provider rejected the request as invalid (often an unsupported "
    "reference image or option). Change the options or references and try again.",
    Outcome.AUTH: "Steadyshot's access to the image provider was refused. The operators have "
    "been told; nothing you can change fixes this.",
    Outcome.NOT_FOUND: "None of the models in the chain is available any more. The operators "
    "have been told.",
    Outcome.MALFORMED: "The provider sent answers Steadyshot could not read. Try again later.",
}
