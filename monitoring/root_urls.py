from django.urls import path

from monitoring import metrics

urlpatterns = [
    path("metrics", metrics.metrics_view, name="metrics"),
]
