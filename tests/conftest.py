"""Fixtures shared by the suite: gc control and server-side connection counts."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from django.conf import settings
from django.db import connection, connections

import djthreads


@pytest.fixture(autouse=True)
def _drain_default_pool() -> Iterator[None]:
    """Keep tests independent: no task of one test runs into the next."""
    yield
    djthreads.wait_for_tasks(timeout=20)


@pytest.fixture
def no_gc() -> Iterator[None]:
    """Disable the garbage collector, so a leak test proves closing, not collection."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def application_name() -> str:
    options = cast(dict[str, Any], settings.DATABASES["default"].get("OPTIONS", {}))
    return str(options["application_name"])


def uses_pool() -> bool:
    return "pool" in settings.DATABASES["default"].get("OPTIONS", {})


def held_connections() -> int:
    """Count database connections held by threads other than the caller.

    PostgreSQL: server-side backends with the suite's application_name
    (pg_stat_activity), or, on Django's psycopg 3 pool, the pool slots checked
    out by other threads. Runs one query on the calling thread's connection.
    """
    if connection.vendor != "postgresql":
        raise RuntimeError("held_connections() needs PostgreSQL")
    if uses_pool():
        stats = connection.pool.get_stats()  # type: ignore[attr-defined]
        mine = 0 if connection.connection is None else 1
        return int(stats["pool_size"] - stats["pool_available"]) - mine
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE application_name = %s AND pid <> pg_backend_pid()",
            [application_name()],
        )
        row = cursor.fetchone()
    assert row is not None
    return int(row[0])


postgres_only = pytest.mark.skipif(
    settings.DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql",
    reason="counts server-side connections on PostgreSQL; the PostgreSQL runs cover it",
)


def settled_connections(expected: int = 0, timeout: float = 15.0) -> int:
    """Return held_connections() once it equals ``expected``, or its last value.

    A backend whose client closed its connection leaves pg_stat_activity a
    moment later, and the server sends no event for it, so the count is
    polled until it settles; a leaked connection never settles and fails.
    """
    deadline = time.monotonic() + timeout
    while True:
        count = held_connections()
        if count == expected or time.monotonic() > deadline:
            return count
        threading.Event().wait(0.02)


def run_exiting_child(script: str, *args: str, timeout: float = 40.0) -> tuple[int, str, str]:
    """Run ``tests/<script>`` and return (returncode, stdout after its first line, stderr).

    The child prints "main thread done" when its main thread returns; "go" on
    its stdin then releases a task while the interpreter is already exiting.
    ``timeout`` bounds the test: a child whose exit hangs is killed and fails.
    """
    path = Path(__file__).with_name(script)
    child = subprocess.Popen(
        [sys.executable, str(path), *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=path.parent.parent,
    )
    try:
        assert child.stdout is not None
        assert child.stdin is not None
        # Read the first line straight from the pipe: a buffered readline()
        # could swallow what the child prints right after it, and
        # communicate() reads the pipe, not that buffer.
        head = b""
        while b"\n" not in head:
            chunk = os.read(child.stdout.fileno(), 4096)
            if not chunk:
                break
            head += chunk
        first, _, rest = head.partition(b"\n")
        assert first == b"main thread done", head
        child.stdin.write(b"go\n")
        child.stdin.flush()
        raw_out, raw_err = child.communicate(timeout=timeout)
    finally:
        if child.poll() is None:
            child.kill()
            child.communicate(timeout=10)
    out, err = (rest + raw_out).decode(), raw_err.decode()
    return child.returncode, out, err


@pytest.fixture
def conn_max_age() -> Iterator[None]:
    """Give the default database CONN_MAX_AGE=60 (reuse needs persistent connections)."""
    if uses_pool():
        pytest.skip("Django's pool needs CONN_MAX_AGE=0; the pool tests cover reuse there")
    conf = connections.settings["default"]
    old = conf["CONN_MAX_AGE"]
    conf["CONN_MAX_AGE"] = 60
    try:
        yield
    finally:
        conf["CONN_MAX_AGE"] = old
