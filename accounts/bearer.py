"""The credentials of an `Authorization: Bearer <credentials>` header, read one way for
every caller that takes them: the APIs' personal tokens and the metrics scrape token."""

from django.http import HttpRequest


def bearer(request: HttpRequest) -> str:
    """The credentials, or "" for another scheme or no header. The scheme is matched in
    any case (RFC 9110: "bearer" and "BEARER" are "Bearer")."""
    scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
    return credentials.strip() if scheme.lower() == "bearer" else ""
