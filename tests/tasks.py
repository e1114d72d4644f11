"""Module-level task functions shared by the tests (so their names are stable)."""

from __future__ import annotations

import contextvars
import threading

from django.db import connection
from django.utils import translation

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
