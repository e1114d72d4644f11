"""The process-wide default executor: built lazily, replaced on settings change,
after ``shutdown()`` and after fork; drained at interpreter exit like every
DjangoExecutor (``djthreads.executor``)."""

from __future__ import annotations

import os
import threading
from typing import Any

from django.core.signals import setting_changed
from django.dispatch import receiver

from djthreads import _account
from djthreads._account import BACKEND, DURABLE, POOL, Work
from djthreads.conf import get_settings
from djthreads.executor import DjangoExecutor

_lock = threading.Lock()  # guards _executor
_executor: DjangoExecutor | None = None


def get_executor() -> DjangoExecutor:
    """Return the process-wide default executor, building it from ``DJTHREADS``.

    Raises ImproperlyConfigured when the setting is invalid. A default pool
    that was shut down (``get_executor().shutdown()``) is replaced by a fresh
    one on the next call, as after ``override_settings(DJTHREADS=...)``; the
    old one still finishes what it holds. In a forked child the parent's
    executor is never returned: the first call builds a fresh one.
    """
    global _executor
    executor = _executor
    if executor is not None and not executor._shutdown:
        return executor
    with _lock:
        if _executor is None or _executor._shutdown:
            conf = get_settings()
            _executor = DjangoExecutor(
                conf.MAX_WORKERS,
                conf.THREAD_NAME_PREFIX,
                max_queue=conf.MAX_QUEUE,
                on_full=conf.ON_FULL,
                shutdown_timeout=conf.SHUTDOWN_TIMEOUT,
                reuse_connections=conf.REUSE_CONNECTIONS,
            )
            _executor._kind = POOL
        return _executor


def _waited_for(work: Work) -> bool:
    return work.kind in (POOL, BACKEND, DURABLE)


def wait_for_tasks(timeout: float | None = None) -> None:
    """Block until the tasks submitted so far to the default pool and the Tasks backend finish.

    Runs in the calling thread. Waits for every task queued or running in
    the default pool (including pools replaced by ``override_settings``) and
    every ThreadPoolBackend task that is ready or running, and for the tasks
    those submit in turn while it waits. It does not wait for deferred
    backend tasks whose ``run_after`` is still ahead, for tasks held by an
    open transaction (on commit: not submitted yet), for user DjangoExecutors
    (``executor.wait_for_tasks()``) or for DjangoThreads (``join()``).
    Called from inside a task it never waits for that task or the tasks
    running it; called from a pool worker it runs queued tasks of its own
    pool itself rather than wait for a free worker. Raises the builtin
    TimeoutError, naming each unfinished task, after ``timeout`` seconds.
    """
    left = _account.wait(timeout, _waited_for, upto=_account.mark())
    _account.raise_if_unfinished(left, timeout)


@receiver(setting_changed)
def _replace_on_settings_change(*, setting: str, **kwargs: Any) -> None:
    global _executor
    if setting != "DJTHREADS":
        return
    with _lock:
        old, _executor = _executor, None
    if old is not None:
        # It stops taking tasks but finishes what it holds; the account
        # still holds those, so waits and exit still see them.
        old.shutdown(wait=False)


def _after_fork_in_child() -> None:
    # The parent's workers do not exist in the child and its lock may have been
    # held by another thread at fork time: start over. The parent is untouched.
    global _lock, _executor
    _lock = threading.Lock()
    _executor = None


os.register_at_fork(after_in_child=_after_fork_in_child)
