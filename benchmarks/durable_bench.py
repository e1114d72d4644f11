"""Durable tasks side by side: enqueue-to-start latency and no-op throughput.

Usage: python benchmarks/durable_bench.py RUNNER TASKS SAMPLES
  RUNNER threadpool     djthreads.backends.ThreadPoolBackend: in memory, the floor
         durable        djthreads.durable.DurableBackend, run by this process
         local-db:POLL  django-tasks-local-db's LocalDBBackend, POLL_INTERVAL=POLL s
                        (optional: skipped when the package is not installed)
         db-worker:POLL django-tasks-db's DatabaseBackend run by WORKER_PROCESSES
                        `manage.py db_worker --interval POLL` processes
Every runner has 8 workers (threads, or db_worker processes) on PostgreSQL
(psycopg2, connections closed after each task) and starts from an empty task
table. Latency: SAMPLES no-op tasks enqueued one at a time, each once
the previous one finished; p50/p99 of (the task's first line - the enqueue
call), both time.time() on this machine. Throughput: TASKS no-op tasks
enqueued in one transaction; tasks / (last finish - commit). Prints one JSON
line (or one saying why it skipped).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RUNNER = sys.argv[1]
TASKS = int(sys.argv[2])
LATENCY_TASKS = int(sys.argv[3])
WORKER_PROCESSES = 8
KIND, _, POLL = RUNNER.partition(":")

BACKENDS: dict[str, dict[str, Any]] = {
    # Every result kept: the throughput reads each one's finish time.
    "threadpool": {
        "BACKEND": "djthreads.backends.ThreadPoolBackend",
        "OPTIONS": {"MAX_RESULTS": 1_000_000},
    },
    "durable": {"BACKEND": "djthreads.durable.DurableBackend"},
    "local-db": {
        "BACKEND": "django_tasks_local_db.LocalDBBackend",
        "OPTIONS": {"MAX_WORKERS": 8, "POLL_INTERVAL": float(POLL or 1.0)},
    },
    "db-worker": {"BACKEND": "django_tasks_db.DatabaseBackend"},
}
os.environ["BENCH_TASKS"] = json.dumps({"default": BACKENDS[KIND]})
os.environ["DJANGO_SETTINGS_MODULE"] = "durable_settings"

from _common import emit, ensure_database  # noqa: E402

if KIND == "local-db":
    import importlib.util

    if importlib.util.find_spec("django_tasks_local_db") is None:
        emit(
            {
                "bench": "durable",
                "runner": RUNNER,
                "skipped": "django-tasks-local-db is not installed (pip install "
                "django-tasks-local-db; it needs Python >= 3.12 and Django >= 6.0)",
            }
        )
        sys.exit(0)

ensure_database()
import django  # noqa: E402

django.setup()

from django.core.management import call_command  # noqa: E402
from django.db import transaction  # noqa: E402
from django_tasks_db.models import DBTaskResult  # noqa: E402
from durable_tasks import stamp  # noqa: E402

from djthreads._tasks_compat import task_backends, task_finished  # noqa: E402

call_command("migrate", verbosity=0)
DBTaskResult.objects.all().delete()


class Done:
    """Count finished tasks: task_finished in this process, or the table for db_worker."""

    def __init__(self) -> None:
        self.count = 0
        self.changed = threading.Condition()
        task_finished.connect(self.on_finished, weak=False)

    def on_finished(self, sender: object, task_result: Any, **kwargs: Any) -> None:
        with self.changed:
            self.count += 1
            self.changed.notify_all()

    def wait(self, count: int) -> None:
        deadline = time.monotonic() + 300
        if KIND == "db-worker":  # another process: look at the table
            finished = DBTaskResult.objects.filter(status__in=["SUCCESSFUL", "FAILED"])
            while finished.count() < count:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{RUNNER}: {count} tasks did not finish in 300 s")
                time.sleep(0.002)
            return
        with self.changed:
            if not self.changed.wait_for(lambda: self.count >= count, 300):
                raise TimeoutError(f"{RUNNER}: {self.count} of {count} tasks finished in 300 s")


def start_workers() -> list[subprocess.Popen[bytes]]:
    if KIND != "db-worker":
        return []
    argv = [sys.executable, "-m", "django", "db_worker", "--no-startup-delay"]
    argv += ["--interval", POLL or "1", "--verbosity", "0"]
    return [subprocess.Popen(argv, cwd=HERE) for _ in range(WORKER_PROCESSES)]


def main() -> None:
    workers = start_workers()
    done = Done()
    backend = task_backends["default"]
    try:
        # Warm up: threads, connections, local-db's start-up delay, db_worker start-up.
        for _ in range(3):
            stamp.enqueue()
        done.wait(3)
        latencies = []
        for n in range(LATENCY_TASKS):
            before = time.time()
            result = stamp.enqueue()
            done.wait(3 + n + 1)
            latencies.append(backend.get_result(result.id).return_value - before)
        # A backlog committed at once: what is measured is how fast the
        # runner drains it, not how fast one thread can commit inserts.
        with transaction.atomic():
            results = [stamp.enqueue() for _ in range(TASKS)]
        first = time.time()
        done.wait(3 + LATENCY_TASKS + TASKS)
        if KIND == "threadpool":
            last = max(backend.get_result(r.id).finished_at for r in results).timestamp()
        else:
            ids = [r.id for r in results]
            finishes = DBTaskResult.objects.filter(pk__in=ids).values_list(
                "finished_at", flat=True
            )
            last = max(finishes).timestamp()
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            worker.wait(30)
    latencies.sort()
    emit(
        {
            "bench": "durable",
            "runner": RUNNER,
            "tasks": TASKS,
            "samples": LATENCY_TASKS,
            "p50_ms": round(statistics.median(latencies) * 1000, 2),
            "p99_ms": round(latencies[max(0, int(len(latencies) * 0.99) - 1)] * 1000, 2),
            "tasks_per_s": round(TASKS / (last - first), 1),
        }
    )


main()
