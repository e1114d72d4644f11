"""Module-level task functions shared by the tests (so their names are stable)."""

from __future__ import annotations

import asyncio
import contextvars
import sys
import threading
from typing import Any

from asgiref.sync import sync_to_async
from django.db import connection, connections
from django.urls import (
    NoReverseMatch,
    get_script_prefix,
    get_urlconf,
    reverse,
    set_script_prefix,
    set_urlconf,
)
from django.utils import timezone, translation

from tests.models import Item

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="unset")


def add(a: int, b: int) -> int:
    return a + b


def fail(message: str) -> None:
    raise ValueError(message)


def noop() -> None:
    return None


def select_one() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        row = cursor.fetchone()
    assert row is not None
    return int(row[0])


def create_item(name: str) -> int:
    return Item.objects.create(name=name).pk


def item_exists(pk: int) -> bool:
    return Item.objects.filter(pk=pk).exists()


def wait_for(event: threading.Event, timeout: float = 10.0) -> bool:
    return event.wait(timeout)


def current_language() -> str | None:
    return translation.get_language()


def current_request_id() -> str:
    return request_id.get()


def thread_name() -> str:
    return threading.current_thread().name


def request_state() -> dict[str, Any]:
    """The per-request Django state this task sees, and the thread it runs in."""
    try:
        url: str | None = reverse("state")
    except (NoReverseMatch, AttributeError, ImportError):  # no urlconf, or no such name
        url = None
    return {
        "language": translation.get_language(),
        "timezone": timezone.get_current_timezone_name(),
        "urlconf": get_urlconf(),
        "script_prefix": get_script_prefix(),
        "url": url,
        "request_id": request_id.get(),
        "thread": threading.current_thread().name,
    }


def activate_everything_else() -> dict[str, Any]:
    """Change every piece of carried state, then report what the task saw before."""
    seen = request_state()
    translation.activate("de")
    timezone.activate("America/New_York")
    set_urlconf("tests.urls_other")
    set_script_prefix("/leaked/")
    request_id.set("leaked")
    return seen


async def async_add(a: int, b: int) -> int:
    await asyncio.sleep(0)
    return a + b


async def async_fail(message: str) -> None:
    await asyncio.sleep(0)
    raise ValueError(message)


async def async_exit(code: int | None) -> None:
    await asyncio.sleep(0)
    sys.exit(code)


async def async_request_state() -> dict[str, Any]:
    """request_state() seen from the coroutine and from a sync_to_async call in it."""
    in_loop = request_state()
    in_sync = await sync_to_async(request_state)()
    return {"loop": in_loop, "sync": in_sync}


async def async_select_one() -> dict[str, Any]:
    """Query through sync_to_async; report the thread and the connection it used."""
    value = await sync_to_async(select_one)()
    wrapper = await sync_to_async(lambda: connections["default"])()
    thread = await sync_to_async(thread_name)()
    return {"value": value, "thread": thread, "wrapper": wrapper}


async def async_double(x: int) -> int:
    return 2 * await sync_to_async(select_one)() * x
