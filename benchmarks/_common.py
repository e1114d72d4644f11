"""Shared by every benchmark script: Django settings, the database, measuring tools.

Each script runs in its own process (started by ``benchmarks/run.py``), so
settings are configured once per process here. The database is
``djthreads_bench`` on PostgreSQL 127.0.0.1:5432 (created if missing); every
connection carries application_name ``djthreads-bench`` so the scripts can
count server connections in pg_stat_activity.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import django
from django.conf import settings

DB_NAME = os.environ.get("DJTHREADS_BENCH_DB", "djthreads_bench")
APP_NAME = "djthreads-bench"
PG = {
    "HOST": os.environ.get("PGHOST", "127.0.0.1"),
    "PORT": os.environ.get("PGPORT", "5432"),
    "USER": os.environ.get("PGUSER", "postgres"),
}


def driver() -> str:
    """Return "psycopg" (3) or "psycopg2": the one Django will use here."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg2"
    return "psycopg"


def raw_connect(dbname: str) -> Any:
    """A DB-API connection outside Django (autocommit), for setup and sampling."""
    if driver() == "psycopg":
        import psycopg

        return psycopg.connect(dbname=dbname, autocommit=True, **_libpq())
    import psycopg2

    conn = psycopg2.connect(dbname=dbname, **_libpq())
    conn.autocommit = True
    return conn


def _libpq() -> dict[str, str]:
    return {"host": PG["HOST"], "port": PG["PORT"], "user": PG["USER"]}


def settle_postgres(limit_s: float = 120.0) -> float:
    """Checkpoint, then wait until no autovacuum worker runs; return the seconds waited.

    A previous run's durable benchmarks leave thousands of dead rows: the
    checkpoint and the vacuum that follow would otherwise land in the next
    run's measurements, on the same two cores. Waits at most ``limit_s``.
    """
    start = time.monotonic()
    conn = raw_connect("postgres")
    cur = conn.cursor()
    cur.execute("CHECKPOINT")
    vacuums = "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'autovacuum worker'"
    while time.monotonic() - start < limit_s:
        cur.execute(vacuums)
        if cur.fetchone()[0] == 0:
            break
        time.sleep(0.5)
    conn.close()
    return round(time.monotonic() - start, 1)


def ensure_database() -> None:
    conn = raw_connect("postgres")
    cur = conn.cursor()
    cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", [DB_NAME])
    if cur.fetchone() is None:
        cur.execute(f'CREATE DATABASE "{DB_NAME}"')
    conn.close()


def setup(
    djthreads: dict[str, Any] | None = None,
    *,
    pool: bool = False,
    pool_size: int = 8,
    conn_max_age: int | None = 0,
    tasks: dict[str, Any] | None = None,
) -> None:
    """Configure Django for a benchmark process.

    Aliases: "default" (CONN_MAX_AGE ``conn_max_age``; Django's psycopg 3 pool
    when ``pool``) and "persistent" (CONN_MAX_AGE=None: never expires), which
    the raw-thread baselines use. ``tasks`` is the TASKS setting (Django's
    default when None).
    """
    ensure_database()
    base = {"ENGINE": "django.db.backends.postgresql", "NAME": DB_NAME, **PG}
    options: dict[str, Any] = {"application_name": APP_NAME}
    default_options = dict(options)
    if pool:
        default_options["pool"] = {"min_size": pool_size, "max_size": pool_size, "timeout": 30}
    default = {**base, "OPTIONS": default_options, "CONN_MAX_AGE": conn_max_age}
    settings.configure(
        SECRET_KEY="djthreads-bench",
        USE_TZ=True,
        INSTALLED_APPS=["djthreads"],
        DATABASES={
            "default": default,
            "persistent": {**base, "OPTIONS": dict(options), "CONN_MAX_AGE": None},
        },
        DJTHREADS={"MAX_WORKERS": 8, "MAX_QUEUE": 100_000, **(djthreads or {})},
        **({} if tasks is None else {"TASKS": tasks}),
    )
    django.setup()


def server_connections(cursor: Any) -> int:
    cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", [APP_NAME])
    return int(cursor.fetchone()[0])


def _pss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


class Sampler:
    """Sample server connections and memory (PSS of this process and its children).

    Runs in its own thread with its own DB-API connection (not Django's), every
    ``interval`` seconds, keeping the peaks.
    """

    def __init__(self, interval: float = 0.02) -> None:
        self.interval = interval
        self.peak_connections = 0
        self.peak_pss_kib = 0
        self._stop = threading.Event()
        self._conn = raw_connect(DB_NAME)
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        cursor = self._conn.cursor()
        me = os.getpid()
        while not self._stop.is_set():
            self.peak_connections = max(self.peak_connections, server_connections(cursor))
            pss = _pss_kib(me) + sum(_pss_kib(c) for c in _children(me))
            self.peak_pss_kib = max(self.peak_pss_kib, pss)
            self._stop.wait(self.interval)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)
        self._conn.close()


def wait_for_connections(expected: int, timeout: float = 10.0) -> int:
    """Wait until the server shows ``expected`` bench connections (closed ones linger)."""
    conn = raw_connect(DB_NAME)
    try:
        cursor = conn.cursor()
        deadline = time.monotonic() + timeout
        while (n := server_connections(cursor)) > expected and time.monotonic() < deadline:
            time.sleep(0.05)
        return n
    finally:
        conn.close()


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def median(values: list[float]) -> float:
    return statistics.median(values)


def per_call(step: Callable[[], Any], calls: int, rounds: int) -> float:
    """Median over ``rounds`` of the mean µs per call of ``step``."""
    results = []
    for _ in range(rounds):
        start = time.perf_counter_ns()
        for _ in range(calls):
            step()
        results.append((time.perf_counter_ns() - start) / calls / 1000)
    return median(results)


def max_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def emit_steps(bench: str, figures: dict[str, float], ratio: str, over: str, under: str) -> None:
    """Emit one line per step (µs per call), then the step ``ratio``: ``over`` / ``under``."""
    for name, us in figures.items():
        emit({"bench": bench, "step": name, "us_per_call": round(us, 2)})
    emit({"bench": bench, "step": ratio, "ratio": round(figures[over] / figures[under], 2)})


def emit(result: dict[str, Any]) -> None:
    """Write one JSON result line to stdout (the runner reads them)."""
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
