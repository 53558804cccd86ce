import logging

from django.core.files.storage import default_storage
from django.db import connection
from django.http import JsonResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from generator.api.errors import OPENAI_PREFIX, ApiError
from generator.api.errors import render as api_error
from generator.forms import PromptForm
from generator.models import GenerationRequest
from generator.status import status_views
from quotas.selectors import quota_summary

log = logging.getLogger("steadyshot.health")

HOME_RECENT = 6  # the member's latest requests on the signed-in start page


@require_GET
def home(request):
    """Visitors read what Steadyshot does; a signed-in member starts working: a prompt
    box, their latest requests with live status, and what the team may still generate."""
    if not request.user.is_authenticated:
        return render(request, "home.html")
    team = request.user.current_team()
    recent = list(
        GenerationRequest.objects.visible_to(request.user)
        .filter(team=team, user=request.user)
        .select_related("user")
        .prefetch_related("images")
        .order_by("-created", "-id")[:HOME_RECENT]
    )
    # The cards' status in two queries, not two a live card (as the gallery does).
    views = status_views(recent)
    for row in recent:
        row.status_now = views[row.pk]
    context = {
        "team": team,
        "form": PromptForm(),
        "recent": recent,
        "active": any(r.is_active for r in recent),
        "quota": quota_summary(team, request.user),
    }
    return render(request, "start.html", context)


@require_GET
def healthz(request):
    """Liveness for load balancers: the process answers and the database is reachable."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return JsonResponse({"status": "ok"})


# A name no file field writes (they write under references/, images/, thumbnails/).
READINESS_PROBE = "readiness-probe"


@require_GET
def readyz(request):
    """Readiness: this process can do its work, because the database, Redis and the image
    storage all answer. 503 names what does not, so a load balancer stops sending
    traffic here (and an operator sees why) until it does; it never restarts us."""
    checks = {"database": _check_database, "redis": _check_redis, "storage": _check_storage}
    failed = []
    for name, check in checks.items():
        try:
            check()
        except Exception:
            log.warning("readiness: %s does not answer", name, exc_info=True)
            failed.append(name)
    if failed:
        return JsonResponse({"status": "unavailable", "failed": failed}, status=503)
    return JsonResponse({"status": "ready"})


def _check_database():
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


def _check_redis():
    import redis
    from django.conf import settings

    # Its own short timeouts: a Redis that hangs must make us unready, not hang the probe.
    client = redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=2, socket_timeout=2)
    try:
        client.ping()
    finally:
        client.close()


def _check_storage():
    # A HEAD on one name: proves the bucket answers and accepts our keys (an error other
    # than "not found" raises), or that the file system is readable.
    default_storage.exists(READINESS_PROBE)


def _error(request, status, title, text):
    return render(
        request, "error.html", {"title": title, "text": text, "status": status}, status=status
    )


def bad_request(request, exception=None):
    return _error(
        request, 400, "Bad request", "The request could not be understood. Go back and try again."
    )


def permission_denied(request, exception=None):
    text = str(exception) if exception and str(exception) else "You are not allowed to do this."
    return _error(request, 403, "Not allowed", text)


def _for_programs(request) -> bool:
    """A path of the JSON API or the OpenAI-compatible endpoint: its errors are JSON in
    the API's own envelope (docs/api.md), even where no endpoint answers."""
    return request.path.startswith(("/api/", OPENAI_PREFIX))


def page_not_found(request, exception=None):
    if _for_programs(request):
        return api_error(
            request,
            ApiError(404, "not_found", "No such endpoint. The endpoints are listed at /api/docs."),
        )
    return _error(
        request,
        404,
        "Not found",
        "There is nothing here, or it belongs to a team you are not part of.",
    )


def server_error(request):
    if _for_programs(request):
        return api_error(
            request,
            ApiError(
                500,
                "server_error",
                "Something broke on our side and it was logged. Try again; if it keeps "
                "failing, tell the operators the time of the call.",
            ),
        )
    # No context processors that touch the database: the error may be the database.
    from django.http import HttpResponseServerError
    from django.template import loader

    template = loader.get_template("500.html")
    return HttpResponseServerError(template.render())
