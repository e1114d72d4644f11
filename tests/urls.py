"""A urlconf for the tests that carry the urlconf and script prefix into tasks."""

from __future__ import annotations

import asyncio

from django.http import HttpRequest, JsonResponse
from django.urls import path
from django.utils import timezone

import djthreads
from tests import tasks


async def state_view(request: HttpRequest) -> JsonResponse:
    """The docs' pattern: an async view awaits a task's Future without blocking its loop."""
    timezone.activate("Asia/Tokyo")  # as a time-zone middleware would
    future = djthreads.submit(tasks.request_state)
    return JsonResponse(await asyncio.wrap_future(future))


def sync_state_view(request: HttpRequest) -> JsonResponse:
    return JsonResponse(djthreads.submit(tasks.request_state).result(10))


urlpatterns = [
    path("state/", state_view, name="state"),
    path("sync-state/", sync_state_view, name="sync-state"),
]
