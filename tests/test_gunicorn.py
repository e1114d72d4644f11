"""gunicorn --preload with 4 sync workers serving @run_async views, on real PostgreSQL.

A threaded client on loopback sends 2,000 requests; each queues one task that
writes one row. Then SIGTERM arrives while tasks are stuck: every worker's
at-exit drain gives up after SHUTDOWN_TIMEOUT and logs what did not finish.
"""

from __future__ import annotations

import collections
import http.client
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.db import connection

from tests.conftest import uses_pool
from tests.models import Item

pytestmark = [
    pytest.mark.timeout(180),
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        connection.vendor != "postgresql",
        reason="gunicorn workers share one database: the PostgreSQL runs cover it",
    ),
]

ROOT = Path(__file__).resolve().parent.parent
REQUESTS = 2000
CLIENTS = 8
STUCK = 8  # <= the app's MAX_WORKERS, so every stuck task starts wherever it lands
SHUTDOWN_TIMEOUT = 2.0
GRACEFUL_TIMEOUT = 60  # gunicorn's own limit before SIGKILL: far above SHUTDOWN_TIMEOUT


def gunicorn_connections(app_name: str) -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", [app_name]
        )
        row = cursor.fetchone()
    assert row is not None
    return int(row[0])


def wait_until(predicate: object, timeout: float) -> bool:
    """Poll a condition in another process (no event crosses the boundary)."""
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        threading.Event().wait(0.05)
    return True


def get(port: int, url: str) -> str:
    client = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    try:
        client.request("GET", url)
        response = client.getresponse()
        body = response.read().decode()
        assert response.status == 200, (url, response.status, body[:500])
        return body
    finally:
        client.close()


class Gunicorn:
    def __init__(self, log: Path) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = int(probe.getsockname()[1])
        self.app_name = f"djthreads-gunicorn-{connection.settings_dict['NAME']}"
        env = {
            **os.environ,
            "DJTHREADS_GUNICORN_DB": str(connection.settings_dict["NAME"]),
            "DJTHREADS_GUNICORN_APP": self.app_name,
            "DJTHREADS_GUNICORN_POOL": "1" if uses_pool() else "",
            "DJTHREADS_GUNICORN_SHUTDOWN_TIMEOUT": str(SHUTDOWN_TIMEOUT),
        }
        env.pop("DJANGO_SETTINGS_MODULE", None)
        self.log = log
        self._log_file = log.open("w")
        self.process = subprocess.Popen(
            [
                str(Path(sys.executable).with_name("gunicorn")),
                "--preload",
                "--workers=4",
                f"--bind=127.0.0.1:{self.port}",
                f"--graceful-timeout={GRACEFUL_TIMEOUT}",
                "--log-level=info",
                "tests.gunicorn_app:application",
            ],
            cwd=ROOT,
            env=env,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
        )

    def worker_pids(self) -> set[str]:
        text = self.log.read_text()
        return {line.rsplit(" ", 1)[-1] for line in text.splitlines() if "Booting worker" in line}

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(20)
        self._log_file.close()


@pytest.fixture
def gunicorn(tmp_path: Path) -> Iterator[Gunicorn]:
    server = Gunicorn(tmp_path / "gunicorn.log")
    try:
        booted = wait_until(lambda: len(server.worker_pids()) == 4, 60)
        assert booted, server.log.read_text()
        yield server
    finally:
        server.stop()


def test_2000_requests_run_every_task_once_and_sigterm_is_bounded(gunicorn: Gunicorn) -> None:
    pids: collections.Counter[str] = collections.Counter()
    lock = threading.Lock()

    def client(first: int) -> None:
        for n in range(first, REQUESTS, CLIENTS):
            pid = get(gunicorn.port, f"/record/r{n}")
            with lock:
                pids[pid] += 1

    clients = [threading.Thread(target=client, args=(n,)) for n in range(CLIENTS)]
    for thread in clients:
        thread.start()
    for thread in clients:
        thread.join(120)
    assert not any(thread.is_alive() for thread in clients)
    assert sum(pids.values()) == REQUESTS
    assert set(pids) <= gunicorn.worker_pids()  # served by the forked workers

    def recorded() -> int:
        return Item.objects.filter(name__startswith="r").count()

    assert wait_until(lambda: recorded() >= REQUESTS, 60), recorded()
    names = collections.Counter(
        Item.objects.filter(name__startswith="r").values_list("name", flat=True)
    )
    # Every task ran exactly once: one row per request, none twice.
    assert names == collections.Counter(f"r{n}" for n in range(REQUESTS))
    if not uses_pool():
        # Every task closed its connection; requests close theirs (CONN_MAX_AGE=0).
        assert wait_until(lambda: gunicorn_connections(gunicorn.app_name) == 0, 20)

    stuck_pids = {get(gunicorn.port, f"/stuck/s{n}") for n in range(STUCK)}
    assert wait_until(lambda: Item.objects.filter(name__startswith="s").count() == STUCK, 30)
    gunicorn.process.send_signal(signal.SIGTERM)
    # Without the bounded drain the stuck tasks would hold their workers until
    # gunicorn's graceful timeout SIGKILLs them; the wait below stops short of it.
    assert gunicorn.process.wait(GRACEFUL_TIMEOUT - 10) == 0
    log = gunicorn.log.read_text()
    assert "SIGKILL" not in log
    for pid in stuck_pids:
        warning = f"WARNING:djthreads:{pid}:exit: shutdown_timeout={SHUTDOWN_TIMEOUT}s expired"
        assert warning in log, log[-3000:]
    assert log.count("tests.gunicorn_app.stuck_task") == STUCK, log[-3000:]
    # The processes are gone, and so are all their server connections.
    assert wait_until(lambda: gunicorn_connections(gunicorn.app_name) == 0, 20)
