"""Bearer-token authentication: `Authorization: Bearer sst_…`, a personal token from the
account's API tokens page. Sessions and cookies play no part, so there is no CSRF.

Guessing is throttled: after API_TOKEN_FAILURE_RATE unknown tokens from one address,
every call from it is a 429 with Retry-After until the window ends (accounts.throttle)."""

from django.conf import settings
from django.http import HttpRequest
from ninja.security import HttpBearer

from accounts import throttle
from accounts.bearer import bearer
from accounts.models import ApiToken
from generator.api.errors import ApiError

GROUP = "api-token-failures"


def refuse_if_guessing(request: HttpRequest) -> None:
    """429 while the caller's address is over its budget of unknown tokens."""
    seconds = throttle.wait(request, GROUP, settings.API_TOKEN_FAILURE_RATE, count=False)
    if seconds:
        raise ApiError(
            429,
            "too_many_failures",
            throttle.too_many("calls with an unknown API token", seconds)
            + " Check the token you send.",
            headers={"Retry-After": str(seconds)},
        )


def count_failure(request: HttpRequest) -> None:
    throttle.wait(request, GROUP, settings.API_TOKEN_FAILURE_RATE)


class TokenAuth(HttpBearer):
    """The JSON API's: a missing and an unknown token are told apart, with the
    WWW-Authenticate header of RFC 6750."""

    def __call__(self, request: HttpRequest):
        # HttpBearer answers None for a missing header; we say what to send instead.
        raw = bearer(request)
        if not raw:
            raise self.missing()
        return self.authenticate(request, raw)

    def authenticate(self, request: HttpRequest, token: str):
        refuse_if_guessing(request)
        user = ApiToken.authenticate(token)
        if user is None:
            count_failure(request)
            raise self.unknown()
        # Views and admission read the caller as request.user, as on the web.
        request.user = user
        return user

    def missing(self) -> ApiError:
        return ApiError(
            401,
            "unauthenticated",
            "Send your API token as 'Authorization: Bearer <token>'. "
            "Create one on your account's API tokens page.",
            headers={"WWW-Authenticate": "Bearer"},
        )

    def unknown(self) -> ApiError:
        return ApiError(
            401,
            "invalid_token",
            "This API token is unknown or was revoked, or its account is deactivated. "
            "Create a new one on your account's API tokens page; if you cannot sign in, "
            "ask an operator to reactivate your account.",
            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
        )


class OpenAITokenAuth(TokenAuth):
    """The OpenAI-compatible endpoint's: one error, as the Images API answers it."""

    def missing(self) -> ApiError:
        return ApiError(401, "invalid_api_key", "Invalid or missing API token (Bearer sst_…).")

    unknown = missing
