"""The issue's headline figures, counted on the server with gc disabled."""

from __future__ import annotations

import threading
import uuid

import pytest
from django.db import connection, connections
from django.test import override_settings

import djthreads
from djthreads import run_async
from tests import tasks
from tests.conftest import held_connections, postgres_only, settled_connections, uses_pool

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("no_gc"),
    postgres_only,
]


@run_async
def count_worker_connections(prefix: str) -> int:
    """Name this thread's connection, then count the worker threads holding one."""
    name = f"{prefix}{threading.current_thread().name}"
    with connection.cursor() as cursor:
        cursor.execute("SELECT set_config('application_name', %s, false)", [name])
        cursor.execute(
            "SELECT count(DISTINCT application_name) FROM pg_stat_activity"
            " WHERE application_name LIKE %s",
            [prefix + "%"],
        )
        row = cursor.fetchone()
    assert row is not None
    return int(row[0])


@pytest.mark.skipif(uses_pool(), reason="pooled connections keep their server backends")
@override_settings(DJTHREADS={"MAX_WORKERS": 8})
def test_2000_tasks_use_at_most_8_connections_and_leave_none() -> None:
    assert held_connections() == 0
    prefix = f"leaktest-{uuid.uuid4().hex[:8]}-"
    futures = [count_worker_connections(prefix) for _ in range(2000)]
    djthreads.wait_for_tasks(timeout=100)
    peaks = [f.result(0) for f in futures]
    # A closed backend lingers in pg_stat_activity for a moment, under its
    # thread's name; counting names counts the threads holding connections.
    assert 1 <= max(peaks) <= 8
    assert settled_connections(0) == 0


@pytest.mark.skipif(not uses_pool(), reason="needs the psycopg 3 pool (settings_postgres_pool)")
@override_settings(DJTHREADS={"MAX_WORKERS": 8})
def test_three_rounds_on_the_pool_never_wait_for_a_slot() -> None:
    pool = connection.pool  # type: ignore[attr-defined]
    connections.close_all()  # the main thread gives its slot back
    pool.wait(timeout=20)
    pool.pop_stats()
    for _round in range(3):
        futures = [djthreads.submit(tasks.select_one) for _ in range(1000)]
        djthreads.wait_for_tasks(timeout=100)
        assert [f.result(0) for f in futures] == [1] * 1000
        stats = pool.pop_stats()
        assert stats.get("requests_queued", 0) == 0, stats
        assert stats.get("requests_errors", 0) == 0, stats
        assert stats["requests_num"] >= 1000, stats
    assert held_connections() == 0
