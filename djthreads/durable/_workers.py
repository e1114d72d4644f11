"""This process's dispatchers and lease: started on demand, stopped at exit.

A process runs durable tasks once something asks: an enqueue, its first
request (``request_started``), or ``djthreads.durable.start_workers()``. Then
it holds one lease (``_lease``) and one dispatcher thread per durable alias.
At interpreter exit, on ``stop_workers()`` or when TASKS changes, every
dispatcher stops claiming, running tasks get DJTHREADS['SHUTDOWN_TIMEOUT']
seconds, and a WARNING names what is left. A forked child starts with none
and a worker id of its own.
"""

from __future__ import annotations

import atexit
import datetime
import functools
import logging
import os
import threading
import time
from typing import Any

from django.core.signals import setting_changed
from django.db import transaction
from django.dispatch import receiver

from djthreads import _account
from djthreads._account import DURABLE, Work
from djthreads._run import close_connections
from djthreads._worker import new_future
from djthreads.conf import get_settings
from djthreads.durable._dispatcher import Dispatcher
from djthreads.durable._job import Waiting, fresh_context
from djthreads.durable._lease import Lease, new_worker_id

logger = logging.getLogger("djthreads.durable")

_lock = threading.Lock()  # guards _dispatchers, _lease, _worker_id and _on_request
_dispatchers: dict[str, Dispatcher] = {}
_lease: Lease | None = None
_worker_id = new_worker_id()
_on_request = False  # start_on_request() already looked at TASKS in this process


def worker_id() -> str:
    """The id this process claims under."""
    return _worker_id


def ensure_started(alias: str, sender: type, options: dict[str, Any], queues: set[str]) -> None:
    """Start ``alias``'s dispatcher (and this process's lease) unless it runs already."""
    global _lease
    if alias in _dispatchers:
        return
    with _lock:
        if alias in _dispatchers:
            return
        if _lease is None:
            _lease = Lease(_worker_id, options["LEASE_TIMEOUT"])
            _lease.start()
        dispatcher = Dispatcher(alias, sender, _lease, poll=options["POLL_INTERVAL"])
        dispatcher.queues = sorted(queues)
        _dispatchers[alias] = dispatcher
        dispatcher.start()
    logger.debug("durable backend=%s dispatcher started worker=%s", alias, _worker_id)


def _committed(
    alias: str, task_id: str, task_path: str, run_after: datetime.datetime | None
) -> None:
    # Runs in the committing thread, after the commit (at once outside a
    # transaction): from now on the row is visible to every claimer.
    dispatcher = _dispatchers.get(alias)
    if dispatcher is None:
        return  # stopped meanwhile: the row waits for the next process
    work = Work(Waiting(task_path), (), {}, fresh_context(), DURABLE, new_future(), ident=task_id)
    _account.add(work)
    if not dispatcher.note(work, run_after):
        _account.end(work)


def start_all() -> None:
    """Start the dispatcher of every durable backend in TASKS with RUN_TASKS on."""
    from django.conf import settings

    from djthreads._tasks_compat import task_backends
    from djthreads.durable.backend import DurableBackend

    for alias in getattr(settings, "TASKS", {}):
        backend = task_backends[alias]
        if isinstance(backend, DurableBackend):
            backend.start()


def start_on_request(**kwargs: Any) -> None:
    """request_started receiver: the first request of a process starts its dispatchers."""
    global _on_request
    if _on_request:
        return
    with _lock:
        first, _on_request = not _on_request, True
    if not first:
        return
    try:
        start_all()
    except Exception:
        # Never the request's failure: manage.py check names the bad setting.
        logger.exception("durable tasks not started at the first request")


def stop_all(timeout: float | None = None) -> None:
    """Stop every dispatcher of this process; see ``djthreads.durable.stop_workers``."""
    global _lease
    with _lock:
        dispatchers = list(_dispatchers.values())
        _dispatchers.clear()
        lease, _lease = _lease, None
    if lease is None:
        return
    if timeout is None:
        try:
            timeout = get_settings().SHUTDOWN_TIMEOUT
        except Exception:
            timeout = 0.0
    deadline = time.monotonic() + timeout
    for dispatcher in dispatchers:
        dispatcher.stop_claiming()
        logger.debug(
            "stop: durable backend=%s claims no more; its running tasks get %gs",
            dispatcher.alias,
            timeout,
        )
    for dispatcher in dispatchers:
        try:
            _settle(dispatcher, deadline, timeout)
        except Exception:
            logger.exception("durable backend=%s could not settle its tasks", dispatcher.alias)
    lease.stop(max(0.0, deadline - time.monotonic()))
    close_connections("djthreads durable stop")


def _settle(dispatcher: Dispatcher, deadline: float, timeout: float) -> None:
    handed_back, failed = dispatcher.drain(deadline, timeout)
    if failed:
        logger.warning(
            "stop: durable backend=%s tasks=[%s] still running after SHUTDOWN_TIMEOUT=%gs: "
            "marked FAILED (WorkerLostError)",
            dispatcher.alias,
            "; ".join(work.describe(False) for work in failed),
            timeout,
        )
    count, names = dispatcher.waiting()
    if count:
        more = f" and {count - len(names)} more" if count > len(names) else ""
        logger.warning(
            "stop: durable backend=%s left %d task(s) READY for the next process or a "
            "db_worker (%d handed back unstarted): %s%s",
            dispatcher.alias,
            count,
            len(handed_back),
            ", ".join(names),
            more,
        )


@receiver(setting_changed)
def _stop_on_settings_change(*, setting: str, **kwargs: Any) -> None:
    # New TASKS build new backends: the old dispatchers stop (their running
    # tasks finish) and the next enqueue, request or start_workers() starts anew.
    global _on_request
    if setting == "TASKS":
        stop_all()
        _on_request = False


@atexit.register
def _stop_at_exit() -> None:
    # Registered after djthreads.executor's exit drain, so it runs first
    # (atexit is last in, first out), while the pool still runs what we
    # handed it and the dispatcher can still write their outcomes.
    stop_all()


def _after_fork_in_child() -> None:
    # The parent's threads do not exist in the child and its lock may have
    # been held: start empty, under a worker id of the child's own.
    global _lock, _dispatchers, _lease, _worker_id, _on_request
    _lock = threading.Lock()
    _dispatchers = {}
    _lease = None
    _worker_id = new_worker_id()
    _on_request = False


os.register_at_fork(after_in_child=_after_fork_in_child)


def on_commit(alias: str, result: Any, using: str) -> None:
    """When ``using``'s transaction commits, account for the task and wake the dispatcher.

    Runs in the enqueuing thread; the callback runs in the committing thread
    (at once outside a transaction). On rollback Django drops the callback:
    a task that never committed is never accounted for and wakes no one.
    """
    run_after = result.task.run_after
    callback = functools.partial(_committed, alias, result.id, result.task.module_path, run_after)
    transaction.on_commit(callback, using=using)
