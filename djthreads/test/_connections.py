"""Which connections the threads of one test opened, and whether they are closed.

Part of the test helpers (``djthreads.test._tracker`` uses it): Django's
``connection_created`` signal names each connection another thread opens;
on PostgreSQL the server's list of backends (pg_stat_activity) and, on Django's
psycopg 3 pool, the pool's statistics count what the signal cannot see.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

from django.core.exceptions import ImproperlyConfigured
from django.db import connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.signals import connection_created

from djthreads._worker import worker_state

T = TypeVar("T")


def check_databases(aliases: Iterable[str], helper: str) -> None:
    """Raise ImproperlyConfigured when a database cannot be shared by threads.

    SQLite's in-memory test database is one shared-cache database: a second
    thread writing gets "database table is locked" at once (the busy timeout
    does not apply to shared-cache locks), and Django never closes an
    in-memory connection, so no thread can give its connection back.
    """
    for alias in aliases:
        conn = connections[alias]
        if conn.vendor == "sqlite" and conn.is_in_memory_db():  # type: ignore[attr-defined]
            raise ImproperlyConfigured(
                f"{helper} runs tasks in other threads, and they cannot share SQLite's "
                f"in-memory test database of alias {alias!r}: a second thread writing "
                "gets 'database table is locked', and Django never closes an in-memory "
                f"connection. Give the test database a file: DATABASES[{alias!r}]['TEST']"
                "['NAME'] = BASE_DIR / 'test_db.sqlite3'. Or use djthreads.test.TestCase "
                "(pytest: djthreads_eager), whose tasks run in the test's own thread."
            )


def _backend_pid(conn: BaseDatabaseWrapper) -> int | None:
    raw: Any = conn.connection
    if raw is None or conn.vendor != "postgresql":
        return None
    try:
        if hasattr(raw, "get_backend_pid"):  # psycopg2
            return int(raw.get_backend_pid())
        return int(raw.info.backend_pid)  # psycopg 3
    except Exception:
        return None


def _is_open(conn: BaseDatabaseWrapper) -> bool:
    # closed_in_transaction: closed inside an atomic block; Django keeps the
    # dead DB-API object until the block exits.
    return conn.connection is not None and not conn.closed_in_transaction


def _close_foreign(conn: BaseDatabaseWrapper) -> None:
    """Close a connection another (finished) thread opened, from this thread."""
    conn.inc_thread_sharing()
    try:
        conn.close()
    finally:
        conn.dec_thread_sharing()


def _pooled(conn: BaseDatabaseWrapper) -> bool:
    return conn.vendor == "postgresql" and bool(conn.settings_dict["OPTIONS"].get("pool"))


def _checked_out(conn: BaseDatabaseWrapper) -> int:
    """Slots of the alias's psycopg 3 pool held by threads other than this one."""
    stats = conn.pool.get_stats()  # type: ignore[attr-defined]
    return int(stats["pool_size"] - stats["pool_available"]) - (1 if _is_open(conn) else 0)


def _server_pids(conn: BaseDatabaseWrapper) -> set[int]:
    """PostgreSQL client backends on ``conn``'s database, other than this thread's."""
    with conn.cursor() as cursor:
        cursor.execute(
            "SELECT pid FROM pg_stat_activity"
            " WHERE datname = current_database() AND backend_type = 'client backend'"
        )
        pids = {int(row[0]) for row in cursor.fetchall()}
    return pids - {_backend_pid(c) for c in connections.all(initialized_only=True)}


def _extra_slots(conn: BaseDatabaseWrapper, base: int) -> int:
    return max(0, _checked_out(conn) - base)


def _new_pids(conn: BaseDatabaseWrapper, before: set[int]) -> set[int]:
    return _server_pids(conn) - before


class _Opened:
    __slots__ = ("conn", "pid", "reuse", "thread")

    def __init__(self, conn: BaseDatabaseWrapper, thread: threading.Thread, reuse: bool) -> None:
        self.conn = conn  # a strong reference: gc cannot close a leak before we see it
        self.thread = thread
        self.pid = _backend_pid(conn)
        self.reuse = reuse  # a pool worker keeping it under DJTHREADS['REUSE_CONNECTIONS']

    # threading.Thread.is_alive(thread), not thread.is_alive(): a closed
    # DjangoThread refuses is_alive(), as a closed Process does.

    def excused(self) -> bool:
        return self.reuse and threading.Thread.is_alive(self.thread)


class ConnectionWatch:
    """Record the connections other threads open during a test; find those left open.

    ``start()`` runs in the test's thread: it remembers the PostgreSQL backends
    (or pool slots in use) that exist already and listens to
    ``connection_created``, whose receiver runs in the thread that connects.
    ``leaks()`` runs in the test's thread after the test's tasks finished.
    """

    def __init__(self, databases: Iterable[str], settle_timeout: float) -> None:
        self.databases = sorted(databases)
        self.settle_timeout = settle_timeout
        self._lock = threading.Lock()  # guards _opened
        self._opened: dict[int, _Opened] = {}
        self._thread = threading.current_thread()
        self._pids_before: dict[str, set[int]] = {}
        self._slots_before: dict[str, int] = {}

    def start(self) -> None:
        """Take the baseline (one query per PostgreSQL database) and start listening."""
        self._thread = threading.current_thread()
        connection_created.connect(self._on_connection, weak=False)
        for alias, conn in self._server_checked():
            if _pooled(conn):
                self._slots_before[alias] = _checked_out(conn)
            else:
                self._pids_before[alias] = _server_pids(conn)

    def stop(self) -> None:
        """Stop listening and drop the references to other threads' connections."""
        connection_created.disconnect(self._on_connection)
        with self._lock:
            self._opened.clear()

    def _on_connection(
        self, sender: object, *, connection: BaseDatabaseWrapper, **extra: Any
    ) -> None:
        thread = threading.current_thread()
        if thread is self._thread:
            return
        reuse = worker_state.reuse
        with self._lock:
            self._opened[id(connection)] = _Opened(connection, thread, reuse)

    def _server_checked(self) -> Iterator[tuple[str, BaseDatabaseWrapper]]:
        """The test's PostgreSQL aliases, one per database (mirrors share one)."""
        seen = set()
        for alias in self.databases:
            conn = connections[alias]
            if conn.vendor != "postgresql":
                continue
            params = conn.settings_dict
            key = (params["HOST"], params["PORT"], params["NAME"], _pooled(conn))
            if key not in seen:
                seen.add(key)
                yield alias, conn

    def _settle(self, probe: Callable[[], T]) -> T:
        # A backend whose client closed leaves pg_stat_activity a moment later
        # and the server sends no event for it: poll until it is gone. A leak
        # never goes, and costs settle_timeout.
        deadline = time.monotonic() + self.settle_timeout
        while True:
            found = probe()
            if not found or time.monotonic() >= deadline:
                return found
            threading.Event().wait(0.02)

    def leaks(self) -> list[str]:
        """Report (and clean up) connections left open by the test's other threads."""
        problems = []
        accounted: set[int] = set()  # server pids already explained
        held: dict[str, int] = {}  # pool slots already explained, per alias
        with self._lock:
            opened = list(self._opened.values())
        for record in opened:
            conn = record.conn
            if not _is_open(conn):
                continue
            if record.excused() or threading.Thread.is_alive(record.thread):
                # Not closed below: the server still shows it, already explained.
                if record.pid is not None:
                    accounted.add(record.pid)
                held[conn.alias] = held.get(conn.alias, 0) + 1
            if record.excused():
                continue
            if threading.Thread.is_alive(record.thread):
                problems.append(
                    f"Thread {record.thread.name!r} (still running) holds a connection to "
                    f"database alias {conn.alias!r}. Close it in that thread before the test "
                    "ends: run the work in a DjangoThread or through djthreads.submit()."
                )
                continue
            problems.append(
                f"Thread {record.thread.name!r} ended and left its connection to database "
                f"alias {conn.alias!r} open. Run the work in a DjangoThread or through "
                "djthreads.submit(), or call django.db.connections.close_all() at the end "
                "of the thread."
            )
            _close_foreign(conn)
        for alias, conn in self._server_checked():
            if _pooled(conn):
                base = self._slots_before.get(alias, 0) + held.get(alias, 0)
                extra = self._settle(functools.partial(_extra_slots, conn, base))
                if extra:
                    problems.append(
                        f"{extra} slot(s) of the connection pool of database alias "
                        f"{alias!r} are still checked out by threads of the test "
                        f"{self.settle_timeout} s after its tasks finished."
                    )
                continue
            before = self._pids_before.get(alias, set()) | accounted
            pids = self._settle(functools.partial(_new_pids, conn, before))
            if pids:
                problems.append(
                    f"PostgreSQL still shows {len(pids)} connection(s) to database "
                    f"{conn.settings_dict['NAME']!r} opened during the test by another "
                    f"thread (pids {sorted(pids)}), {self.settle_timeout} s after its "
                    "tasks finished: closing was not proven. They are terminated now."
                )
                with conn.cursor() as cursor:
                    for pid in sorted(pids):
                        cursor.execute("SELECT pg_terminate_backend(%s)", [pid])
        return problems
