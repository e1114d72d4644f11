"""DjangoProcess: the child uses connections of its own, the parent keeps its."""

from __future__ import annotations

import multiprocessing
import threading
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.db import connection

from djthreads import DjangoProcess
from tests import process_tasks
from tests.conftest import application_name, postgres_only
from tests.models import Item

pytestmark = [
    pytest.mark.timeout(90),
    pytest.mark.django_db(transaction=True),
    # Python >= 3.12 warns about fork() in a process with threads (the pools').
    pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning"),
]

METHODS = ["fork", "spawn"]


def server_backends() -> set[int]:
    """Backend pids of every connection the suite holds (PostgreSQL)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = %s",
            [application_name()],
        )
        return {int(row[0]) for row in cursor.fetchall()}


@pytest.mark.parametrize("method", METHODS)
def test_child_queries_while_parent_keeps_querying(method: str) -> None:
    context = multiprocessing.get_context(method)
    results: Any = context.Queue()
    go: Any = context.Event()
    parent_id = process_tasks.backend_id()
    before = server_backends() if connection.vendor == "postgresql" else set()
    Item.objects.create(name="parent-0")

    child = DjangoProcess(
        target=process_tasks.query_twice, args=(results, go, "child"), start_method=method
    )
    assert child.start_method == method
    child.start()
    try:
        child_id, count = results.get(timeout=60)
        # The child is connected and waiting: the parent queries meanwhile.
        assert Item.objects.filter(name__startswith="child").count() == 1
        assert process_tasks.backend_id() == parent_id
        go.set()
        second_id, count2 = results.get(timeout=30)
        child.join(30)
    finally:
        go.set()
        if child.is_alive():
            child.kill()
    assert child.exitcode == 0
    assert (count, count2) == (1, 2)
    assert second_id == child_id
    if method == "fork" or connection.vendor == "postgresql":
        assert child_id != parent_id
    if connection.vendor == "postgresql":
        # A session of its own, not one of the parent's (pooled ones included).
        assert child_id not in before
    # The parent's connection survived the child's exit and still works.
    assert process_tasks.backend_id() == parent_id
    assert Item.objects.count() == 3


@postgres_only
def test_parent_threads_keep_their_connections_across_fork() -> None:
    held = threading.Event()
    release = threading.Event()
    seen: list[int] = []

    def hold_a_connection() -> None:
        seen.append(process_tasks.backend_id())
        held.set()
        release.wait(30)
        try:
            seen.append(process_tasks.backend_id())
        finally:
            connection.close()

    thread = threading.Thread(target=hold_a_connection)
    thread.start()
    try:
        assert held.wait(30)
        context = multiprocessing.get_context("fork")
        results: Any = context.Queue()
        go: Any = context.Event()
        go.set()
        child = DjangoProcess(
            target=process_tasks.query_twice, args=(results, go, "c"), start_method="fork"
        )
        child.start()
        child.join(60)
        assert child.exitcode == 0
        assert results.get(timeout=5)[0] not in seen
    finally:
        release.set()
        thread.join(30)
    assert len(seen) == 2
    assert seen[0] == seen[1]  # same session, still alive


@pytest.mark.parametrize("method", METHODS)
def test_exception_gives_exitcode_1(method: str) -> None:
    parent_id = process_tasks.backend_id()
    child = DjangoProcess(target=process_tasks.fail, args=("boom",), start_method=method)
    child.start()
    child.join(60)
    assert child.exitcode == 1
    assert process_tasks.backend_id() == parent_id


def test_spawn_needs_a_settings_module(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DJANGO_SETTINGS_MODULE")
    child = DjangoProcess(target=process_tasks.fail, args=("x",), start_method="spawn")
    with pytest.raises(ImproperlyConfigured, match="DJANGO_SETTINGS_MODULE, which is not set"):
        child.start()
    assert child.exitcode is None


def test_unknown_start_method_is_refused() -> None:
    with pytest.raises(ValueError, match="got 'thread'"):
        DjangoProcess(target=process_tasks.fail, start_method="thread")


class CountingProcess(DjangoProcess):
    def __init__(self, results: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.results = results

    def run(self) -> None:
        self.results.put((process_tasks.backend_id(), Item.objects.count()))


def test_subclass_run_gets_its_own_connection() -> None:
    parent_id = process_tasks.backend_id()
    Item.objects.create(name="one")
    results: Any = multiprocessing.get_context("fork").Queue()
    child = CountingProcess(results, start_method="fork")
    child.start()
    child_id, count = results.get(timeout=60)
    child.join(30)
    assert child.exitcode == 0
    assert (child_id != parent_id, count) == (True, 1)
    assert process_tasks.backend_id() == parent_id
