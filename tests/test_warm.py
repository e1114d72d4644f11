"""DjangoExecutor.warm_up(): workers and connections ready before the first burst."""

from __future__ import annotations

import gc
import threading
from collections.abc import Callable

import pytest
from django.db import connection, connections

from djthreads import DjangoExecutor
from tests import tasks
from tests.conftest import held_connections, postgres_only, settled_connections

pytestmark = [pytest.mark.timeout(60), pytest.mark.django_db(transaction=True)]


def _workers(prefix: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(f"{prefix}_")]


def has_connection() -> bool:
    """Whether this worker holds an open connection before its task queries."""
    return connection.connection is not None


def test_warm_up_starts_every_worker_at_once() -> None:
    pool = DjangoExecutor(4, thread_name_prefix="warm")
    try:
        assert _workers("warm") == []
        pool.warm_up()
        assert len(_workers("warm")) == 4
        assert pool.submit(tasks.add, 1, 2).result(10) == 3
        assert len(_workers("warm")) == 4  # an idle warm worker took it
    finally:
        pool.shutdown(timeout=10)


@pytest.mark.usefixtures("conn_max_age")
def test_warm_up_with_reuse_leaves_each_worker_connected() -> None:
    pool = DjangoExecutor(3, thread_name_prefix="warm_reuse", reuse_connections=True)
    try:
        pool.warm_up(databases=["default"])
        # Three tasks held at once land on the three workers, each already connected.
        everyone = threading.Barrier(3)

        def first_task() -> bool:
            connected = has_connection()
            everyone.wait(10)
            return connected

        futures = [pool.submit(first_task) for _ in range(3)]
        assert [f.result(10) for f in futures] == [True, True, True]
    finally:
        pool.shutdown(timeout=10)


@postgres_only
@pytest.mark.usefixtures("no_gc")
def test_warm_up_without_reuse_closes_what_it_opened() -> None:
    assert held_connections() == 0
    pool = DjangoExecutor(3, reuse_connections=False)
    try:
        pool.warm_up(databases=["default"])
        assert settled_connections(0) == 0
    finally:
        pool.shutdown(timeout=10)


def test_warm_up_of_a_busy_pool_times_out_and_says_why() -> None:
    pool = DjangoExecutor(2, thread_name_prefix="warm_busy")
    release = threading.Event()
    try:
        busy = pool.submit(tasks.wait_for, release)
        with pytest.raises(TimeoutError, match=r"all 2 workers of pool=warm_busy .*busy"):
            pool.warm_up(timeout=0.2)
        release.set()
        assert busy.result(10) is True
        pool.warm_up(timeout=10)  # free again: it succeeds
    finally:
        release.set()
        pool.shutdown(timeout=10)


def test_warm_up_refuses_an_unknown_alias() -> None:
    pool = DjangoExecutor(1)
    try:
        with pytest.raises(ValueError, match=r"'nope', which is not in settings.DATABASES"):
            pool.warm_up(databases=["nope"])
    finally:
        pool.shutdown(timeout=10)


@pytest.mark.timeout(20)  # less than warm_up's timeout: it must not wait for it
def test_warm_up_raises_what_connecting_raised_without_waiting_for_the_timeout() -> None:
    conf = dict(connections.settings["default"])
    conf.update(
        ENGINE="django.db.backends.sqlite3", NAME="/nonexistent-djthreads/x.sqlite3", OPTIONS={}
    )
    connections.settings["warm_broken"] = conf
    pool = DjangoExecutor(3)
    try:
        # The test framework forbids this alias, or SQLite cannot open the
        # file: either way connecting raises, in one worker.
        with pytest.raises(Exception, match="warm_broken|unable to open") as raised:
            pool.warm_up(databases=["warm_broken"], timeout=50)
        assert not isinstance(raised.value, TimeoutError)
    finally:
        pool.shutdown(timeout=10)
        del connections.settings["warm_broken"]


def _full_collections(during: Callable[[], None]) -> int:
    """How many generation-2 collections ran while ``during()`` ran.

    Under the ``no_gc`` fixture none starts on its own: each one counted is
    an explicit ``gc.collect()``.
    """
    full = 0

    def count(phase: str, info: dict[str, int]) -> None:
        nonlocal full
        if phase == "start" and info["generation"] == 2:
            full += 1

    gc.callbacks.append(count)
    try:
        during()
    finally:
        gc.callbacks.remove(count)
    return full


@pytest.mark.usefixtures("no_gc")
def test_warm_up_collects_once_so_the_first_burst_does_not() -> None:
    pool = DjangoExecutor(2)
    try:
        assert _full_collections(pool.warm_up) == 1
    finally:
        pool.shutdown(timeout=10)


@pytest.mark.usefixtures("no_gc")
def test_warm_up_collect_false_leaves_the_collector_alone() -> None:
    pool = DjangoExecutor(2)
    try:
        assert _full_collections(lambda: pool.warm_up(collect=False)) == 0
    finally:
        pool.shutdown(timeout=10)
