"""Following a `next` parameter without an open redirect, for every view that does."""

from django.utils.http import url_has_allowed_host_and_scheme


def safe_next(request, default: str) -> str:
    """The request's `next` (POST, else GET) if it stays on this site, else `default`.
    Django's check, not a prefix test: `/\\evil.com` and `//evil.com` are other sites to a
    browser, and are refused."""
    target = request.POST.get("next") or request.GET.get("next") or ""
    if url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return target
    return default
