"""ThreadPoolBackend against django-tasks-local and djthreads.submit, in one process.

Usage: python benchmarks/backend_bench.py MODE NOOP_TASKS SELECT_TASKS ROUNDS
  MODE close — psycopg2, djthreads closes connections after each task (the default);
       reuse — DJTHREADS['REUSE_CONNECTIONS'] with CONN_MAX_AGE=None.
Runs in .venv/bench-durable (Python 3.13, Django 6.1: django-tasks-local needs Django 6).

Variants, 8 workers each, all in this process:
  submit   djthreads.submit(fn): the pool without the Tasks API (no-op tasks only)
  backend  task.enqueue() on djthreads.backends.ThreadPoolBackend
  quiet    backend with the django.tasks logger at WARNING (no-op tasks only): what
           Django's own task_started/task_finished receivers cost, for the record
  local    task.enqueue() on django-tasks-local's ThreadPoolBackend (MAX_WORKERS=8);
           optional: skipped with a note when the package is not installed
Each round runs, in rotating order, NOOP_TASKS no-op tasks on every variant,
then SELECT_TASKS ``SELECT 1`` tasks on backend and local. A figure is the
wall time from the first enqueue until every task has finished, divided by
the tasks: throughput, not latency. For the backends that is the latest
``finished_at`` of the round's results (both record it, from the same clock
as time.time()), read once every result is SUCCESSFUL, so reading them costs
nothing on the clock; for submit() the moment the last Future is done. Both
backends keep MAX_RESULTS = one round's tasks, so they evict finished results
as they would in production.
django-tasks-local sends no task_started/task_finished signal and never
closes its workers' database connections; djthreads does both.

Prints one JSON line per (task, variant): median µs per task, median seconds
per round (and of those in the enqueue loop), and the median and range over
rounds of each round's ratio to submit and to local.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import importlib.util
import itertools
import logging
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

from _common import emit, median, setup

MODE = sys.argv[1]
TASKS = {"noop": int(sys.argv[2]), "select1": int(sys.argv[3])}
ROUNDS = int(sys.argv[4])
WORKERS = 8
LOCAL = importlib.util.find_spec("django_tasks_local") is not None
KEEP = max(TASKS.values())

backends: dict[str, Any] = {
    "default": {
        "BACKEND": "djthreads.backends.ThreadPoolBackend",
        "OPTIONS": {"MAX_RESULTS": KEEP},
    }
}
if LOCAL:
    backends["local"] = {
        "BACKEND": "django_tasks_local.ThreadPoolBackend",
        "OPTIONS": {"MAX_WORKERS": WORKERS, "MAX_RESULTS": KEEP},
    }
djthreads_settings = {"MAX_WORKERS": WORKERS, "ON_COMMIT": True}
if MODE == "reuse":
    setup({**djthreads_settings, "REUSE_CONNECTIONS": True}, conn_max_age=None, tasks=backends)
else:
    setup(djthreads_settings, tasks=backends)

from django.db import connection  # noqa: E402
from django.tasks import TaskResultStatus, task  # noqa: E402

import djthreads  # noqa: E402


class Countdown:
    """Set ``done`` when the task function has run ``goal`` times (any thread)."""

    def __init__(self) -> None:
        self.arm(0)

    def arm(self, goal: int) -> None:
        self.goal = goal
        self.calls = itertools.count(1)  # next() is atomic: no lock among 8 workers
        self.done = threading.Event()

    def tick(self) -> None:
        if next(self.calls) == self.goal:
            self.done.set()


countdown = Countdown()


@task
def noop() -> None:
    countdown.tick()


@task
def select_one() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    countdown.tick()


FINISHED = {TaskResultStatus.SUCCESSFUL, TaskResultStatus.FAILED}


class ViaBackend:
    """``task.enqueue()`` on the task's backend; finished = its result reads finished."""

    def __init__(self, bound: Any, quiet: bool = False) -> None:
        self.task = bound
        self.backend = bound.get_backend()
        self.quiet = quiet

    @contextlib.contextmanager
    def scope(self) -> Iterator[None]:
        # Django's task_started/task_finished receivers log at INFO on
        # django.tasks; with Django's default LOGGING each builds a LogRecord.
        logger = logging.getLogger("django.tasks")
        level = logger.level
        if self.quiet:
            logger.setLevel(logging.WARNING)
        try:
            yield
        finally:
            logger.setLevel(level)

    def enqueue(self, count: int) -> list[Any]:
        enqueue = self.task.enqueue
        return [enqueue() for _ in range(count)]

    def finish(self, results: list[Any]) -> float:
        """Wait until every result is SUCCESSFUL; return the last finished_at (time.time())."""
        last = 0.0
        for result in results:
            fresh = self.backend.get_result(result.id)
            while fresh.status not in FINISHED:  # a worker still recording it
                time.sleep(0.0005)
                fresh = self.backend.get_result(result.id)
            if fresh.status != TaskResultStatus.SUCCESSFUL:
                raise RuntimeError(f"task {fresh.id} ended {fresh.status}: {fresh.errors}")
            last = max(last, fresh.finished_at.timestamp())
        return last


class ViaSubmit:
    """``djthreads.submit(fn)`` of the task's function; finished = its Future is done."""

    def __init__(self, bound: Any) -> None:
        self.fn = bound.func

    def scope(self) -> contextlib.nullcontext[None]:
        return contextlib.nullcontext()

    def enqueue(self, count: int) -> list[Any]:
        submit, fn = djthreads.submit, self.fn
        return [submit(fn) for _ in range(count)]

    def finish(self, futures: list[Any]) -> float:
        """Wait until every Future is done; return when the last one was (time.time())."""
        concurrent.futures.wait([future for future in futures if not future.done()], 60)
        last = time.time()
        for future in futures:
            future.result(0)
        return last


Variant = ViaBackend | ViaSubmit


def variants(task_name: str) -> dict[str, Variant]:
    fn = noop if task_name == "noop" else select_one
    found: dict[str, Variant] = {}
    if task_name == "noop":
        found["submit"] = ViaSubmit(fn)
    found["backend"] = ViaBackend(fn)
    if task_name == "noop":
        found["quiet"] = ViaBackend(fn, quiet=True)
    if LOCAL:
        found["local"] = ViaBackend(fn.using(backend="local"))
    return found


def run_round(variant: Variant, count: int) -> tuple[float, float]:
    """Return (seconds for the whole batch, seconds in the enqueue loop)."""
    countdown.arm(count)
    with variant.scope():
        start = time.time()
        handles = variant.enqueue(count)
        enqueued = time.time()
        if not countdown.done.wait(300):  # every function ran: now wait for the records
            raise TimeoutError(f"{count} tasks did not run in 300 s")
        end = variant.finish(handles)
    return end - start, enqueued - start


def main() -> None:
    if not LOCAL:
        emit(
            {
                "bench": "backend",
                "mode": MODE,
                "variant": "local",
                "skipped": "django-tasks-local is not installed (pip install "
                "django-tasks-local; it needs Django >= 6.0)",
            }
        )
    times: dict[tuple[str, str], list[tuple[float, float]]] = {}
    by_task = {name: variants(name) for name in TASKS}
    for found in by_task.values():
        for variant in found.values():  # warm up: threads started, connections opened
            run_round(variant, 4 * WORKERS)
    for r in range(ROUNDS):
        for name, found in by_task.items():
            order = list(found)
            order = order[r % len(order) :] + order[: r % len(order)]
            for variant in order:
                times.setdefault((name, variant), []).append(
                    run_round(found[variant], TASKS[name])
                )
    djthreads.wait_for_tasks(timeout=60)
    for (name, variant), rounds in times.items():
        figure: dict[str, Any] = {
            "bench": "backend",
            "mode": MODE,
            "task": name,
            "variant": variant,
            "tasks": TASKS[name],
            "rounds": ROUNDS,
            "elapsed_s": round(median([total for total, _ in rounds]), 3),
            "enqueue_s": round(median([loop for _, loop in rounds]), 3),
            "us_per_task": round(median([total for total, _ in rounds]) / TASKS[name] * 1e6, 1),
        }
        for other in ("submit", "local"):
            if other == variant or (name, other) not in times:
                continue
            ratios = [
                mine[0] / theirs[0]
                for mine, theirs in zip(rounds, times[(name, other)], strict=True)
            ]
            figure[f"ratio_to_{other}"] = round(median(ratios), 2)
            figure[f"ratio_to_{other}_min"] = round(min(ratios), 2)
            figure[f"ratio_to_{other}_max"] = round(max(ratios), 2)
        emit(figure)


main()
