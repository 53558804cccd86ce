"""Throttles against password guessing, token guessing and floods (docs/decisions.md).

- Log-ins: django-axes counts failed log-ins by account and by address (settings
  AXES_*); past LOGIN_FAILURE_LIMIT either is refused, even with the right password,
  for LOGIN_COOLOFF_MINUTES. `login_locked` is the page it then shows. Resetting the
  password by e-mail unlocks the account at once (views.PasswordResetConfirmView); an
  operator can too (`manage.py axes_reset_username EMAIL`, `axes_reset_ip ADDRESS`).
- Sign-ups, password reset mails and bad API tokens: django-ratelimit's fixed windows,
  counted in Redis (the "throttle" cache) so that every web process and host shares
  them. `wait()` says how long a caller must wait, 0 when it may go on.

A throttle whose Redis does not answer lets requests through (and logs it): it guards
against abuse, and must not turn an outage of the counters into one of log-ins.
"""

import logging
from datetime import timedelta

from django.conf import settings
from django.shortcuts import render
from django_ratelimit.core import get_usage
from redis.exceptions import RedisError

from accounts.forms import LoginForm

log = logging.getLogger("steadyshot.throttle")


def address(group: str, request) -> str:
    """The caller's address as the server saw it (uvicorn already replaced a trusted
    local proxy's address with the X-Forwarded-For client, as axes reads it too)."""
    return request.META.get("REMOTE_ADDR", "")


def posted_email(group: str, request) -> str:
    return request.POST.get("email", "").strip().lower()


def login_name(request, credentials) -> str | None:
    """The account axes counts a log-in against: the e-mail address as the log-in form
    reads it (case and spaces aside), so "Alice@x" and "alice@x " are one account."""
    source = credentials or getattr(request, "POST", None) or {}
    return str(source.get("username") or "").strip().lower() or None


def wait(request, group: str, rate: str, key=address, *, count: bool = True) -> int:
    """Seconds before the caller may do `group` again under `rate` ("10/h"), 0 if now.
    `count` counts this request; without it, the request only looks (the bad-token
    throttle looks before checking a token and counts only a failure)."""
    try:
        usage = get_usage(request, group=group, key=key, rate=rate, increment=count)
    except (RedisError, OSError):
        log.warning("throttle %s: its counters do not answer; letting through", group)
        return 0
    if usage is None:  # the counters failed quietly: RATELIMIT_FAIL_OPEN
        return 0
    over = usage["count"] > usage["limit"] if count else usage["count"] >= usage["limit"]
    return max(1, usage["time_left"]) if over else 0


def words(seconds: float) -> str:
    minutes = max(1, round(seconds / 60))
    return f"{minutes} minute{'s' if minutes != 1 else ''}"


def too_many(what: str, seconds: float) -> str:
    return f"Too many {what} from your address. Try again in {words(seconds)}."


def login_locked(request, original_response=None, credentials=None):
    """axes' answer to a locked log-in (AXES_LOCKOUT_CALLABLE): the log-in page again,
    429, saying why, for how long, and how to get in sooner."""
    cool_off = timedelta(minutes=settings.LOGIN_COOLOFF_MINUTES)
    # Unbound: binding would check the password again, which is not even tried now.
    form = LoginForm(request, initial={"username": request.POST.get("username", "")})
    refused = (
        f"Too many failed log-ins for this account or from your address, so log-ins are "
        f"paused for {words(cool_off.total_seconds())}. Try again then, or reset your "
        "password by e-mail to unlock the account now."
    )
    context = {"form": form, "refused": refused, "next": request.POST.get("next", "")}
    response = render(request, "registration/login.html", context, status=429)
    response["Retry-After"] = str(int(cool_off.total_seconds()))
    return response
