from django.urls import path

from quotas import views

app_name = "quotas"

urlpatterns = [
    path("quota/", views.quota, name="quota"),
    path("teams/<uuid:team_id>/quota/", views.team_quota, name="team_quota"),
    path("teams/<uuid:team_id>/quota/edit/", views.team_quota_edit, name="team_quota_edit"),
]
