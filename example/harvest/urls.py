from __future__ import annotations

from django.urls import path

from example.harvest import views

app_name = "harvest"
urlpatterns = [
    path("", views.start, name="start"),
    path("jobs/<int:job_id>/", views.status, name="status"),
]
