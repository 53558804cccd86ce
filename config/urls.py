from django.contrib import admin
from django.urls import include, path

from config import views
from generator import api

urlpatterns = [
    path("", views.home, name="home"),
    path("healthz", views.healthz, name="healthz"),
    path("", include("accounts.urls")),
    path("", include("quotas.urls")),
    path("", include("generator.urls")),
    path("admin/rq/", include("django_rq.urls")),
    path("admin/", admin.site.urls),
    # For programs: the JSON API and the OpenAI-compatible Images endpoint.
    path("api/v1/generations", api.generations, name="api-generations"),
    path("api/v1/generations/<str:request_id>", api.generation, name="api-generation"),
    path("api/v1/generations/<str:request_id>/cancel", api.cancel, name="api-cancel"),
    path("api/v1/generations/<str:request_id>/image", api.image, name="api-image"),
    path("v1/images/generations", api.openai_images, name="openai-images"),
    # Staff monitoring and the Prometheus scrape endpoint (/metrics).
    path("monitoring/", include("monitoring.urls")),
    path("", include("monitoring.root_urls")),
]

handler400 = "config.views.bad_request"
handler403 = "config.views.permission_denied"
handler404 = "config.views.page_not_found"
handler500 = "config.views.server_error"
