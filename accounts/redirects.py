"""Following a `next` parameter without an open redirect, for every view that does."""

from django.utils.http import url_has_allowed_host_and_scheme


def safe_next(request, default: str) -> str:
    """The request's `next` (POST, else GET) if it is a path of this site, else `default`.
    Django's check, not a prefix test: `/\\evil.com` and `//evil.com` are other sites to a
    browser, and are refused; so is anything not a path ("0" would be taken for a URL
    name by redirect())."""
    target = request.POST.get("next") or request.GET.get("next") or ""
    if target.startswith("/") and url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return target
    return default
