"""Durable Django Tasks: django-tasks-db's table, run by the djthreads pool in-process.

``TASKS = {"default": {"BACKEND": "djthreads.durable.DurableBackend"}}`` with
``"django_tasks_db"`` and ``"djthreads.durable"`` in INSTALLED_APPS
(``pip install "djthreads[durable]"``). ``enqueue()`` writes django-tasks-db's
row in the caller's transaction; a dispatcher thread in every process that
runs the backend claims rows as pool workers free up and runs them on the
djthreads default pool. ``db_worker`` processes can share the same queue.
See ``djthreads.durable.backend`` and the documentation for the guarantees.

This package imports nothing from django-tasks-db until the backend is used,
so the system checks can say when it is missing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from djthreads.exceptions import DjThreadsError

if TYPE_CHECKING:
    from djthreads.durable.backend import DurableBackend

__all__ = ["DurableBackend", "WorkerLostError", "start_workers", "stop_workers", "worker_id"]


class WorkerLostError(DjThreadsError, RuntimeError):
    """The process running a durable task stopped before the task finished.

    Never raised: it is recorded as the error of a task that was RUNNING in a
    process that was killed (its lease expired) or that exited with the task
    still running after ``DJTHREADS['SHUTDOWN_TIMEOUT']``. Such a task may
    have run partly and is not run again; re-enqueue it if that is safe.
    """


def start_workers() -> None:
    """Start claiming and running durable tasks in this process now.

    Runs in the calling thread only to start, for every durable backend in
    ``TASKS`` whose ``OPTIONS['RUN_TASKS']`` is on, its dispatcher thread.
    Without it a process starts at its first enqueue or its first request;
    call it from a process that should run tasks enqueued elsewhere before
    either happens (a worker script, ``AppConfig.ready`` of a web process).
    """
    from djthreads.durable import _workers

    _workers.start_all()


def stop_workers(timeout: float | None = None) -> None:
    """Stop claiming in this process and wait for the tasks it is running.

    Runs in the calling thread. Waits up to ``timeout`` seconds (default
    ``DJTHREADS['SHUTDOWN_TIMEOUT']``) for running tasks; tasks claimed but
    not started are handed back READY, tasks still running are marked FAILED
    with WorkerLostError, and a WARNING names both and the READY tasks left
    for other processes. Interpreter exit does this on its own.
    """
    from djthreads.durable import _workers

    _workers.stop_all(timeout)


def worker_id() -> str:
    """Return the id this process writes into a task's ``worker_ids`` when it claims it.

    ``djthreads:<host>:<pid>:<random>``; a forked child gets a new one.
    """
    from djthreads.durable import _workers

    return _workers.worker_id()


def __getattr__(name: str) -> Any:
    # The backend imports django-tasks-db: only when TASKS names it.
    if name == "DurableBackend":
        from djthreads.durable.backend import DurableBackend

        return DurableBackend
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
