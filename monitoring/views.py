from functools import wraps

from django.contrib.auth.views import redirect_to_login
from django.http import Http404
from django.shortcuts import render
from django.views.decorators.http import require_GET

from monitoring import dashboard
from monitoring.stats import WINDOW_LABELS, WINDOWS


def staff_required(view):
    """Anonymous users are sent to log in; signed-in non-staff get a 404, so the page's
    existence is not advertised to members."""

    @wraps(view)
    def wrapper(request, *args, **kwargs):
        if not request.user.is_authenticated:
            return redirect_to_login(request.get_full_path())
        if not request.user.is_staff:
            raise Http404("Not found")
        return view(request, *args, **kwargs)

    return wrapper


@require_GET
@staff_required
def dashboard_view(request):
    given = request.GET.getlist("window")
    key = given[0] if given else "1h"
    if len(given) > 1 or key not in WINDOWS:
        got = " and ".join(map(repr, given))  # the default is a window: given is not empty
        return render(
            request,
            "error.html",
            {
                "status": 400,
                "title": "Unknown window",
                "text": f"The window must be one of {', '.join(WINDOWS)}, given once; got {got}.",
            },
            status=400,
        )
    context = dashboard.build(
        key, sort=request.GET.get("sort", ""), user_sort=request.GET.get("usort", "")
    )
    context["windows"] = [(k, WINDOW_LABELS[k]) for k in WINDOWS]
    context["min_requests"] = dashboard.MIN_REQUESTS
    return render(request, "monitoring/dashboard.html", context)
