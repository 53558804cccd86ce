from django.urls import path

from generator import views

app_name = "generator"

urlpatterns = [
    path("new/", views.prompt, name="prompt"),
    path("gallery/", views.gallery, name="gallery"),
    path("gallery/selected/", views.bulk, name="bulk"),
    path("images/<uuid:request_id>/", views.detail, name="detail"),
    path("images/<uuid:request_id>/status/", views.status, name="status"),
    path("images/<uuid:request_id>/card/", views.card, name="card"),
    path("images/<uuid:request_id>/cancel/", views.cancel, name="cancel"),
    path("images/<uuid:request_id>/delete/", views.delete, name="delete"),
    path("images/<uuid:request_id>/favourite/", views.favourite, name="favourite"),
    path("images/<uuid:request_id>/description/", views.describe, name="describe"),
    path("images/<uuid:request_id>/rerun/", views.rerun, name="rerun"),
    path("images/<uuid:request_id>/original/", views.original, name="original"),
    path("images/<uuid:request_id>/thumbnail/", views.thumbnail, name="thumbnail"),
]
