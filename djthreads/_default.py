"""The process-wide default executor: built lazily, replaced on settings change
and after fork, drained at interpreter exit within SHUTDOWN_TIMEOUT."""

from __future__ import annotations

import atexit
import os
import threading
import time
from typing import Any

from django.core.signals import setting_changed
from django.dispatch import receiver

from djthreads.conf import get_settings
from djthreads.executor import DjangoExecutor

_lock = threading.Lock()  # guards _executor and _retired
_executor: DjangoExecutor | None = None
# Executors replaced by override_settings(DJTHREADS=...): they stop taking tasks
# but finish what they hold; wait_for_tasks() and exit still wait for them.
_retired: list[DjangoExecutor] = []


def get_executor() -> DjangoExecutor:
    """Return the process-wide default executor, building it from ``DJTHREADS``.

    Raises ImproperlyConfigured when the setting is invalid. In a forked child
    the parent's executor is never returned: the first call builds a fresh one.
    """
    global _executor
    executor = _executor
    if executor is not None:
        return executor
    with _lock:
        if _executor is None:
            conf = get_settings()
            _executor = DjangoExecutor(
                conf.MAX_WORKERS,
                conf.MAX_QUEUE,
                on_full=conf.ON_FULL,
                thread_name_prefix=conf.THREAD_NAME_PREFIX,
                shutdown_timeout=conf.SHUTDOWN_TIMEOUT,
                reuse_connections=conf.REUSE_CONNECTIONS,
            )
        return _executor


def _executors() -> list[DjangoExecutor]:
    with _lock:
        _retired[:] = [executor for executor in _retired if executor.pending()]
        return [*_retired, *([_executor] if _executor is not None else [])]


def wait_for_tasks(timeout: float | None = None) -> None:
    """Block until every task submitted to the default executor so far has finished.

    Runs in the calling thread; tasks still held by an open transaction (on
    commit) are not submitted yet and are not waited for. Raises the builtin
    TimeoutError, naming the unfinished tasks, after ``timeout`` seconds.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    for executor in _executors():
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        executor.wait_for_tasks(remaining)


@receiver(setting_changed)
def _replace_on_settings_change(*, setting: str, **kwargs: Any) -> None:
    global _executor
    if setting != "DJTHREADS":
        return
    with _lock:
        old, _executor = _executor, None
        if old is not None:
            old.shutdown(wait=False)
            _retired.append(old)


@atexit.register
def _shutdown_at_exit() -> None:
    # atexit runs after threading joined the non-daemon threads; our workers
    # are daemons, so they are still running and we bound the wait ourselves.
    executors = [e for e in _executors() if e.pending() or e is _executor]
    if not executors:
        return
    timeout = max(executor.shutdown_timeout for executor in executors)
    deadline = time.monotonic() + timeout
    for executor in executors:
        executor.shutdown(wait=True, timeout=max(0.0, deadline - time.monotonic()))


def _after_fork_in_child() -> None:
    # The parent's workers do not exist in the child and its lock may have been
    # held by another thread at fork time: start over. The parent is untouched.
    global _lock, _executor, _retired
    _lock = threading.Lock()
    _executor = None
    _retired = []


os.register_at_fork(after_in_child=_after_fork_in_child)
