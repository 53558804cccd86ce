from django.contrib import admin
from django.urls import include, path

from config import views
from generator.api import api

urlpatterns = [
    path("", views.home, name="home"),
    path("healthz", views.healthz, name="healthz"),
    path("readyz", views.readyz, name="readyz"),
    path("", include("accounts.urls")),
    path("", include("quotas.urls")),
    path("", include("generator.urls")),
    path("admin/rq/", include("django_rq.urls")),
    path("admin/", admin.site.urls),
    # For programs: the JSON API (/api/v1/, its docs at /api/docs) and the
    # OpenAI-compatible Images endpoint (/v1/images/generations): generator/api/.
    path("", api.urls),
    # Staff monitoring and the Prometheus scrape endpoint (/metrics).
    path("monitoring/", include("monitoring.urls")),
    path("", include("monitoring.root_urls")),
]

handler400 = "config.views.bad_request"
handler403 = "config.views.permission_denied"
handler404 = "config.views.page_not_found"
handler500 = "config.views.server_error"
