"""Module-level targets for DjangoProcess tests (a spawned child imports them).

This module imports a model at the top on purpose: a spawned child can only
unpickle these targets after Django is set up.
"""

from __future__ import annotations

from typing import Any

from django.db import connection

from tests.models import Item


def backend_id() -> int:
    """This thread's database session: the backend pid, or the sqlite3 object's id.

    A forked child that reused its parent's sqlite3 connection would report the
    parent's id: the inherited object keeps its address.
    """
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            row = cursor.fetchone()
        assert row is not None
        return int(row[0])
    connection.ensure_connection()
    return id(connection.connection)


def query_twice(results: Any, go: Any, name: str) -> None:
    """Write and read a row, report; wait for the parent to query; do it again."""
    Item.objects.create(name=f"{name}-1")
    results.put((backend_id(), Item.objects.filter(name__startswith=name).count()))
    if not go.wait(20):
        raise TimeoutError("the parent never said go")
    Item.objects.create(name=f"{name}-2")
    results.put((backend_id(), Item.objects.filter(name__startswith=name).count()))


def fail(message: str) -> None:
    raise ValueError(message)
