"""Which profile the sandbox upstream is playing, for the pages that say so.

Read from the running sandbox (`GET /_sandbox/health`), not from settings: the profile
can be switched on a running sandbox. Cached for a few seconds per process, with a short
timeout, so a page never waits long on it and a busy page does not ask every time.
"""

import json
import urllib.request

from django.conf import settings
from django.core.cache import cache

CACHE_KEY = "steadyshot:sandbox-profile"
CACHE_SECONDS = 5
TIMEOUT_SECONDS = 0.5


def sandbox_profile() -> dict:
    """{"name", "description"} while the sandbox is the upstream; {"name": ""} when it
    should be but does not answer; {} when the real upstream is in use."""
    if not settings.UPSTREAM_SANDBOX:
        return {}
    found = cache.get(CACHE_KEY)
    if found is None:
        found = _ask()
        cache.set(CACHE_KEY, found, CACHE_SECONDS)
    return found


def _ask() -> dict:
    # The standard library rather than httpx: a new httpx client loads the system's CA
    # bundle (~30 ms) for this one plain-HTTP loopback call.
    url = f"{settings.SANDBOX_URL}/_sandbox/health"
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_SECONDS) as response:  # noqa: S310
            data = json.load(response)
        return {"name": str(data["profile"]), "description": str(data.get("description", ""))}
    except (OSError, ValueError, KeyError, TypeError):
        return {"name": "", "description": ""}
