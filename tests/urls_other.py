"""A second urlconf: a task that switches to it must not leak it into the next task."""

from __future__ import annotations

from django.urls import path

from tests.urls import state_view

urlpatterns = [path("other/state/", state_view, name="state")]
