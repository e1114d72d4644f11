"""Where a no-op ThreadPoolBackend task's time goes: perf_counter_ns per step, both sides.

Usage: python benchmarks/profile_backend.py [--sample]
  Runs in .venv/bench-durable (Django 6.1); ``--sample`` adds a pyinstrument
  sampling profile of ``enqueue()`` and of the worker's side.

Enqueuing thread: each step of ``ThreadPoolBackend.enqueue`` timed alone over
many calls, then the whole ``task.enqueue()`` with every worker held (so only
the enqueuing thread works) against ``djthreads.submit``. Worker: a backend
task's whole run in this thread (``run_into``: signals, result recording,
connection check) against a submit task's. Then 8 workers draining queued
backend tasks, with Django's signal lock and (an experiment) without it, and
end-to-end throughput of both with 8 workers. Prints one JSON line per figure (µs per call). A
developer's tool: ``make bench`` does not run it.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import _common
from _common import median, setup

TASKS = {
    "default": {
        "BACKEND": "djthreads.backends.ThreadPoolBackend",
        "OPTIONS": {"MAX_RESULTS": 1000},
    }
}
setup({"MAX_QUEUE": 100_000}, tasks=TASKS)

from django.tasks import task, task_backends  # noqa: E402
from django.tasks.signals import task_enqueued, task_finished, task_started  # noqa: E402
from django.utils import timezone  # noqa: E402

import djthreads  # noqa: E402
from djthreads import backends  # noqa: E402
from djthreads._account import BACKEND, Work  # noqa: E402
from djthreads._dispatch import in_transaction  # noqa: E402
from djthreads._run import capture, run_into  # noqa: E402
from djthreads._tasks_compat import TaskResult, TaskResultStatus  # noqa: E402
from djthreads._worker import new_future  # noqa: E402
from djthreads.conf import get_settings  # noqa: E402

CALLS = 20_000
ROUNDS = 5


def plain() -> None:
    return None


@task
def noop() -> None:
    return None


def per_call(step: Callable[[], Any], calls: int = CALLS) -> float:
    """Median over ROUNDS of the mean µs per call of ``step``."""
    return _common.per_call(step, calls, ROUNDS)


def held(enqueue: Callable[[], Any]) -> float:
    """µs per call of ``enqueue`` with every pool worker held: the enqueuing thread alone."""
    results = []
    for _ in range(ROUNDS):
        release = threading.Event()
        for _ in range(8):
            djthreads.submit(release.wait)
        start = time.perf_counter_ns()
        for _ in range(CALLS):
            enqueue()
        elapsed = time.perf_counter_ns() - start
        release.set()
        djthreads.wait_for_tasks(timeout=60)
        results.append(elapsed / CALLS / 1000)
    return median(results)


def throughput(enqueue: Callable[[], Any]) -> float:
    results = []
    for _ in range(ROUNDS):
        start = time.perf_counter_ns()
        for _ in range(CALLS):
            enqueue()
        djthreads.wait_for_tasks(timeout=60)
        results.append((time.perf_counter_ns() - start) / CALLS / 1000)
    return median(results)


def drain(caching: bool, tasks: int = 5000) -> float:
    """µs per task for 8 workers to run ``tasks`` backend tasks queued behind them.

    With ``caching``, Django's task_started/task_finished look their
    receivers up without the signal's lock, as a Signal(use_caching=True)
    does: an experiment to show what that lock costs, not a setting.
    """
    signals = (task_started, task_finished)
    saved = [(signal.use_caching, signal.sender_receivers_cache) for signal in signals]
    for signal in signals:
        signal.use_caching, signal.sender_receivers_cache = caching, {}
    try:
        results = []
        for _ in range(ROUNDS):
            release = threading.Event()
            for _ in range(8):
                djthreads.submit(release.wait)
            for _ in range(tasks):
                noop.enqueue()
            start = time.perf_counter_ns()
            release.set()
            djthreads.wait_for_tasks(timeout=60)
            results.append((time.perf_counter_ns() - start) / tasks / 1000)
        return median(results)
    finally:
        for signal, (use_caching, cache) in zip(signals, saved, strict=True):
            signal.use_caching, signal.sender_receivers_cache = use_caching, cache


backend = task_backends["default"]
results = backends._stores.setdefault("default", backends._Results())


def record() -> Any:
    return TaskResult(
        task=noop,
        id=backends._new_id(),
        status=TaskResultStatus.READY,
        enqueued_at=timezone.now(),
        started_at=None,
        finished_at=None,
        last_attempted_at=None,
        args=[],
        kwargs={},
        backend="default",
        errors=[],
        worker_ids=[],
    )


def backend_work() -> Work:
    """A backend task's record, as enqueue() builds it (not stored, not queued)."""
    job = backends._Job(record(), results, 1000, type(backend))
    return Work(job, (), {}, capture(), BACKEND, new_future(), ident=job.record.id)


def submit_work() -> Work:
    return Work(plain, (), {}, capture(), "default pool", new_future())


a_record = record()
figures = {
    # The enqueuing thread's steps, each alone, in enqueue()'s order.
    "enqueue: task_backends[alias]": per_call(lambda: task_backends["default"]),
    "enqueue: validate_task": per_call(lambda: backend.validate_task(noop)),
    "enqueue: _validate() (cached)": per_call(lambda: backend._validate(noop)),
    "enqueue: _options() (cached)": per_call(backend._options),
    "enqueue: get_settings()": per_call(get_settings),
    "enqueue: _new_id()": per_call(backends._new_id),
    "enqueue: timezone.now()": per_call(timezone.now),
    "enqueue: TaskResult() (incl. normalize_json)": per_call(record),
    "enqueue: _Job()": per_call(lambda: backends._Job(a_record, results, 1000, type(backend))),
    "enqueue: capture()": per_call(capture),
    "enqueue: new_future()": per_call(new_future),
    "enqueue: Work()": per_call(lambda: Work(plain, (), {}, None, BACKEND)),  # type: ignore[arg-type]
    "enqueue: _copy()": per_call(lambda: backends._copy(a_record)),
    "enqueue: in_transaction()": per_call(lambda: in_transaction(True, "default")),
    "enqueue: task_enqueued.send": per_call(
        lambda: task_enqueued.send(sender=type(backend), task_result=a_record)
    ),
    # The whole enqueue, workers held (the queue put lands in the ready heap).
    "whole: task.enqueue(), workers held": held(noop.enqueue),
    "whole: djthreads.submit(), workers held": held(lambda: djthreads.submit(plain)),
    # The worker's side of one task, run in this thread.
    "worker: run_into(backend task)": per_call(lambda: run_into(backend_work())),
    "worker: run_into(submit task)": per_call(lambda: run_into(submit_work())),
    "worker: building those records": per_call(backend_work),
    # Django's own receivers log each start and finish at INFO on django.tasks.
    "worker: task_started.send": per_call(
        lambda: task_started.send(sender=type(backend), task_result=a_record)
    ),
    "worker: task_finished.send": per_call(
        lambda: task_finished.send(sender=type(backend), task_result=a_record)
    ),
    # 8 workers draining queued tasks: Django's signals take their lock per
    # send; the same without it (an experiment: receiver caching forced on).
    "drain: 8 workers, queued backend tasks": drain(caching=False),
    "drain: the same, signals without their lock": drain(caching=True),
    # End to end, 8 workers.
    "e2e: task.enqueue()": throughput(noop.enqueue),
    "e2e: djthreads.submit()": throughput(lambda: djthreads.submit(plain)),
}
_common.emit_steps(
    "profile_backend",
    figures,
    "e2e ratio backend / submit",
    "e2e: task.enqueue()",
    "e2e: djthreads.submit()",
)

if "--sample" in sys.argv:
    from pyinstrument import Profiler

    release = threading.Event()
    for _ in range(8):
        djthreads.submit(release.wait)
    profiler = Profiler(interval=0.0001)
    with profiler:
        for _ in range(CALLS):
            noop.enqueue()
    release.set()
    djthreads.wait_for_tasks(timeout=60)
    print(profiler.output_text(unicode=False, color=False), file=sys.stderr)
    works = [backend_work() for _ in range(CALLS)]
    profiler = Profiler(interval=0.0001)
    with profiler:
        for work in works:
            run_into(work)
    print(profiler.output_text(unicode=False, color=False), file=sys.stderr)

djthreads.wait_for_tasks(timeout=60)
