"""Faults on a real PostgreSQL: killed backends, a server restart, and a soak.

Each fault test holds some workers inside a task (connected, waiting at a
barrier), injects the fault from the test thread, then releases them: the tasks
hit must fail loudly and the tasks after them must reconnect and succeed.
"""

from __future__ import annotations

import concurrent.futures
import glob
import logging
import os
import random
import re
import shutil
import socket
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator

import pytest
from django.db import Error as DjangoDbError
from django.db import connection, connections, transaction
from django.test import override_settings
from pytest_django import DjangoDbBlocker

import djthreads
from djthreads import DjangoExecutor, QueueFullError
from tests import tasks
from tests.conftest import settled_connections, uses_pool

pytestmark = pytest.mark.timeout(90)

WORKERS = 4

postgres_only = pytest.mark.skipif(
    connections.settings["default"]["ENGINE"] != "django.db.backends.postgresql",
    reason="injects PostgreSQL faults; the PostgreSQL runs of the suite cover it",
)


@pytest.fixture(params=[False, True], ids=["close", "reuse"])
def reuse(request: pytest.FixtureRequest) -> Iterator[bool]:
    """Run a test with close-after-every-task, then with REUSE_CONNECTIONS.

    Reuse keeps connections only with CONN_MAX_AGE > 0; Django's pool needs
    CONN_MAX_AGE = 0, so there reuse runs with 0 (and closes, by Django's rules).
    """
    conf = connections.settings["default"]
    old = conf["CONN_MAX_AGE"]
    if request.param and not uses_pool():
        conf["CONN_MAX_AGE"] = 60
    try:
        yield bool(request.param)
    finally:
        conf["CONN_MAX_AGE"] = old


def backend_pid(alias: str = "default") -> int:
    with connections[alias].cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        row = cursor.fetchone()
    assert row is not None
    return int(row[0])


def hit_by_fault(
    alias: str, marker: str, connected: threading.Barrier, go: threading.Event, swallow: bool
) -> str:
    """Connect under ``marker``, wait while the test injects a fault, then query again."""
    with connections[alias].cursor() as cursor:
        cursor.execute("SELECT set_config('application_name', %s, false)", [marker])
    connected.wait(20)
    assert go.wait(20)
    try:
        backend_pid(alias)
    except DjangoDbError:
        if not swallow:
            raise
        # A task that catches the error and returns: Django marks the
        # connection errors_occurred, so reuse must still close it.
        return "swallowed"
    return "not hit"


def run_fault(
    pool: DjangoExecutor,
    alias: str,
    marker: str,
    inject: Callable[[], None],
    caplog: pytest.LogCaptureFixture,
) -> set[int]:
    """Hold every worker connected, inject the fault, release; return earlier pids."""
    connected = threading.Barrier(WORKERS + 1)
    go = threading.Event()
    pids = [pool.submit(backend_pid, alias) for _ in range(WORKERS * 5)]
    before = {f.result(20) for f in pids}
    hit = [
        pool.submit(hit_by_fault, alias, marker, connected, go, swallow=(n == 0))
        for n in range(WORKERS)
    ]
    connected.wait(20)
    inject()
    go.set()
    outcomes: list[str] = []
    for future in hit:
        exc = future.exception(20)
        if exc is None:
            outcomes.append(future.result(0))
        else:
            assert isinstance(exc, DjangoDbError), exc
            outcomes.append("failed")
    assert sorted(outcomes) == ["failed"] * (WORKERS - 1) + ["swallowed"]
    failures = [
        r
        for r in caplog.records
        if r.levelno == logging.ERROR
        and re.fullmatch(
            r"task=tests\.test_faults\.hit_by_fault id=\w+ args=.* failed", r.getMessage()
        )
    ]
    assert len(failures) == WORKERS - 1
    return before


def assert_recovers(pool: DjangoExecutor, alias: str, dead: set[int]) -> None:
    """Every later task succeeds, on a connection that is not one of the dead ones."""
    later = [pool.submit(backend_pid, alias) for _ in range(200)]
    pids = {f.result(20) for f in later}
    assert not pids & dead


@postgres_only
@pytest.mark.django_db(transaction=True)
def test_terminated_backends_fail_their_tasks_and_later_tasks_reconnect(
    reuse: bool, caplog: pytest.LogCaptureFixture
) -> None:
    marker = f"terminate-{os.getpid()}-{reuse}"

    def terminate() -> None:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT array_agg(pid) FROM pg_stat_activity"
                " WHERE application_name = %s AND pid <> pg_backend_pid()",
                [marker],
            )
            row = cursor.fetchone()
            assert row is not None
            killed.update(row[0] or [])
            # Wait (up to 5 s) until each backend is gone, so no query slips in.
            cursor.execute(
                "SELECT bool_and(pg_terminate_backend(pid, 5000)) FROM unnest(%s::int[]) pid",
                [sorted(killed)],
            )

    killed: set[int] = set()
    pool = DjangoExecutor(WORKERS, max_queue=1000, reuse_connections=reuse)
    try:
        run_fault(pool, "default", marker, terminate, caplog)
        assert len(killed) == WORKERS
        assert_recovers(pool, "default", killed)
    finally:
        pool.shutdown(wait=True, timeout=20)
    if not uses_pool():
        assert settled_connections(0) == 0


def _postgres_bin(name: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else shutil.which(name)


class PrivateCluster:
    """A throwaway PostgreSQL cluster in a temp dir on its own loopback port."""

    def __init__(self) -> None:
        initdb, pg_ctl = _postgres_bin("initdb"), _postgres_bin("pg_ctl")
        if initdb is None or pg_ctl is None:
            pytest.skip("initdb/pg_ctl are not installed: cannot make a private cluster")
        self.pg_ctl = pg_ctl
        # initdb and postgres refuse to run as root.
        self.as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        self.root = tempfile.mkdtemp(prefix="djthreads-pg-")
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
        self.data = os.path.join(self.root, "data")
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = int(probe.getsockname()[1])
        self._run(initdb, "-D", self.data, "-U", "postgres", "--auth=trust", "--no-sync")

    def _run(self, *argv: str) -> None:
        subprocess.run(
            [*self.as_user, *argv], check=True, capture_output=True, timeout=60, cwd=self.root
        )

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        log = os.path.join(self.root, "log")
        self._run(self.pg_ctl, "-D", self.data, "-l", log, "-o", options, "-w", "start")

    def stop(self, mode: str = "fast") -> None:
        self._run(self.pg_ctl, "-D", self.data, "-m", mode, "-w", "stop")

    def remove(self) -> None:
        try:
            self.stop("immediate")
        except subprocess.CalledProcessError:
            pass  # already stopped
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
def private_alias() -> Iterator[tuple[PrivateCluster, str]]:
    """A running private cluster, reachable as the database alias "private"."""
    cluster = PrivateCluster()
    try:
        cluster.start()
        conf = dict(connections.settings["default"])
        options = {k: v for k, v in conf["OPTIONS"].items() if k != "pool"}
        conf.update(NAME="postgres", HOST="127.0.0.1", PORT=str(cluster.port), OPTIONS=options)
        conf["TEST"] = {}
        connections.settings["private"] = conf
        try:
            yield cluster, "private"
        finally:
            connections["private"].close()
            del connections["private"]
            del connections.settings["private"]
    finally:
        cluster.remove()
    assert not os.path.exists(cluster.root)


@postgres_only
@pytest.mark.timeout(120)
def test_server_restart_fails_tasks_in_flight_and_later_tasks_reconnect(
    reuse: bool,
    private_alias: tuple[PrivateCluster, str],
    caplog: pytest.LogCaptureFixture,
    django_db_blocker: DjangoDbBlocker,
) -> None:
    # No django_db mark: the test database is not involved, and Django's test
    # case would refuse threaded connections to an alias it does not manage.
    django_db_blocker.unblock()
    cluster, alias = private_alias
    conf = connections.settings[alias]
    conf["CONN_MAX_AGE"] = connections.settings["default"]["CONN_MAX_AGE"]
    pool = DjangoExecutor(WORKERS, max_queue=1000, reuse_connections=reuse)
    try:
        dead = run_fault(pool, alias, f"restart-{reuse}", cluster.stop, caplog)
        # While the server is down every task fails loudly, none hangs.
        down = [pool.submit(backend_pid, alias) for _ in range(10)]
        assert all(isinstance(f.exception(20), DjangoDbError) for f in down)
        cluster.start()
        assert_recovers(pool, alias, dead)
    finally:
        pool.shutdown(wait=True, timeout=20)
        django_db_blocker.restore()


class Rollback(Exception):
    pass


def hold(started: threading.Barrier, release: threading.Event) -> bool:
    started.wait(20)
    return release.wait(20)


def fill_workers(release: threading.Event) -> list[concurrent.futures.Future[bool]]:
    """Wait for the default pool to drain, then occupy all 8 of its workers."""
    djthreads.wait_for_tasks(timeout=20)
    release.clear()
    started = threading.Barrier(8 + 1)
    holders = [djthreads.submit(hold, started, release) for _ in range(8)]
    started.wait(20)
    return holders


def soak_task(key: int, ran: list[int], lock: threading.Lock, fail: bool, query: bool) -> int:
    with lock:
        ran[key] += 1
    if query:
        tasks.select_one()
    if fail:
        raise ValueError(f"soak task {key} failed on purpose")
    return key


SOAK_TASKS = 10_000
QUEUE = 64


@pytest.mark.django_db(transaction=True)
@override_settings(DJTHREADS={"MAX_WORKERS": 8, "MAX_QUEUE": QUEUE, "ON_FULL": "raise"})
@pytest.mark.timeout(120)
def test_soak_every_task_ends_in_exactly_one_outcome(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="djthreads")
    rng = random.Random(6)
    ran = [0] * SOAK_TASKS
    lock = threading.Lock()
    futures: dict[int, concurrent.futures.Future[int]] = {}
    rejected: set[int] = set()
    rolled_back: set[int] = set()
    release = threading.Event()
    for key in range(SOAK_TASKS):
        if key % 2000 == 1000:
            # Fill the pool for sure (workers held, queue full): the next submit raises.
            holders = fill_workers(release)
            fillers = [djthreads.submit(tasks.noop) for _ in range(QUEUE)]
            with pytest.raises(QueueFullError):
                djthreads.submit(soak_task, key, ran, lock, False, False)
            rejected.add(key)
            release.set()
            assert all(f.result(20) for f in holders)
            assert all(f.result(20) is None for f in fillers)
            continue
        if key == SOAK_TASKS - 50:
            # The last 50 find every worker busy: they queue, to be cancelled
            # by the shutdown below.
            holders = fill_workers(release)
        elif key % 50 == 0:
            # The submitter outruns 8 workers; letting them catch up keeps
            # QueueFullError to the full-pool moments above.
            djthreads.wait_for_tasks(timeout=20)
        fail = rng.random() < 0.1
        query = rng.random() < 0.1
        roll = rng.random() < 0.05
        try:
            if roll:
                with transaction.atomic():
                    futures[key] = djthreads.submit(soak_task, key, ran, lock, fail, query)
                    raise Rollback
            futures[key] = djthreads.submit(soak_task, key, ran, lock, fail, query)
        except Rollback:
            rolled_back.add(key)
        except QueueFullError:
            rejected.add(key)
    executor = djthreads.get_executor()
    executor.shutdown(wait=False, cancel_futures=True)
    release.set()
    executor.shutdown(wait=True, timeout=30)
    assert all(f.result(20) for f in holders)

    succeeded = {k for k, f in futures.items() if not f.cancelled() and f.exception(20) is None}
    failed = {k for k, f in futures.items() if not f.cancelled() and f.exception(20) is not None}
    cancelled = {k for k, f in futures.items() if f.cancelled()}
    assert len(succeeded) + len(failed) + len(cancelled) + len(rejected) == SOAK_TASKS
    assert all(futures[k].result(0) == k for k in succeeded)
    # Ran exactly once if it succeeded or failed; never if cancelled or rejected.
    assert all(ran[k] == 1 for k in succeeded | failed)
    assert all(ran[k] == 0 for k in cancelled | rejected)
    assert rolled_back <= cancelled
    shutdown_cancelled = cancelled - rolled_back
    assert failed
    assert rolled_back
    assert shutdown_cancelled
    assert rejected

    messages = [r.getMessage() for r in caplog.records]

    def logged(suffix: str) -> int:
        pattern = re.compile(r"task=tests\.test_faults\.soak_task id=\w+ args=\(.*\) " + suffix)
        return sum(1 for m in messages if pattern.fullmatch(m))

    # Each outcome is logged once per task, naming it with its id and arguments.
    assert logged("failed") == len(failed)
    assert logged("cancelled: its transaction rolled back") == len(rolled_back)
    assert logged(re.escape("cancelled: shutdown(cancel_futures=True)")) == len(shutdown_cancelled)
