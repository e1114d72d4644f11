"""A bounded thread pool whose tasks close their database connections.

Why not ``concurrent.futures.ThreadPoolExecutor``: its queue is unbounded, and
at interpreter exit it joins its non-daemon workers with no timeout, so one
stuck task holds a gunicorn worker's shutdown forever. This pool keeps the
stdlib's ``Executor`` interface and ``Future`` but bounds the queue, runs
daemon workers and drains them at exit within ``shutdown_timeout``
(see ``djthreads._default``).
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from typing import Any, Literal, ParamSpec, TypeVar

from djthreads._run import Carried, capture, close_connections, run_into, task_name
from djthreads.exceptions import QueueFullError

logger = logging.getLogger("djthreads")

P = ParamSpec("P")
R = TypeVar("R")

_worker_state = threading.local()  # .executor: the DjangoExecutor this thread works for


class _WorkItem:
    __slots__ = ("args", "carried", "fn", "future", "kwargs")

    def __init__(
        self,
        future: concurrent.futures.Future[Any],
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        carried: Carried,
    ) -> None:
        self.future = future
        self.fn = fn
        self.args = args
        self.kwargs = kwargs
        self.carried = carried

    def run(self, reuse: bool) -> None:
        """Run in the calling thread and settle the Future (no-op if cancelled)."""
        # The returned exception is on the Future already; not keeping it here
        # avoids the cycle exception -> traceback -> this frame.
        run_into(self.future, self.fn, self.args, self.kwargs, self.carried, reuse=reuse)


class DjangoExecutor(concurrent.futures.Executor):
    """A ``concurrent.futures.Executor`` with bounded workers and a bounded queue.

    Tasks run in daemon worker threads named ``<thread_name_prefix>_<n>``, each
    in a copy of the submitter's contextvars and active language, and each is
    followed by ``connections.close_all()`` in the worker — or, with
    ``reuse_connections``, by Django's end-of-request rules, so a worker keeps
    its usable connections between tasks (at most one per alias per worker)
    and closes them when it stops at shutdown. At most
    ``max_workers`` tasks run and ``max_queue`` wait; when both are taken,
    ``submit`` waits for a slot (``on_full="block"``) or raises
    QueueFullError (``on_full="raise"``). A task submitted from one of this
    pool's own workers while the pool is full runs inline in that worker, so
    nested submission cannot deadlock.

    ``submit`` dispatches at once; ``djthreads.submit``/``run_async`` add the
    on-commit hold on top of it. After ``os.fork()`` an executor cannot be used
    in the child (the default one from ``get_executor()`` is replaced there).
    """

    def __init__(
        self,
        max_workers: int = 8,
        max_queue: int = 1000,
        *,
        on_full: Literal["block", "raise"] = "block",
        thread_name_prefix: str = "djthreads",
        shutdown_timeout: float = 30.0,
        reuse_connections: bool = False,
    ) -> None:
        if isinstance(max_workers, bool) or not isinstance(max_workers, int) or max_workers < 1:
            raise ValueError(f"max_workers must be a positive integer, got {max_workers!r}.")
        if isinstance(max_queue, bool) or not isinstance(max_queue, int) or max_queue < 0:
            raise ValueError(f"max_queue must be an integer >= 0, got {max_queue!r}.")
        if on_full not in ("block", "raise"):
            raise ValueError(f"on_full must be 'block' or 'raise', got {on_full!r}.")
        self.max_workers = max_workers
        self.max_queue = max_queue
        self.on_full = on_full
        self.thread_name_prefix = thread_name_prefix
        self.shutdown_timeout = shutdown_timeout
        self.reuse_connections = reuse_connections
        self._slots = threading.Semaphore(max_workers + max_queue)
        self._idle = threading.Semaphore(0)
        self._queue: queue.SimpleQueue[_WorkItem | None] = queue.SimpleQueue()
        self._lock = threading.Lock()  # guards _shutdown, _threads and _pending
        self._shutdown = False
        self._threads: set[threading.Thread] = set()
        self._pending: set[_WorkItem] = set()  # queued or running
        self._pid = os.getpid()

    def submit(
        self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs
    ) -> concurrent.futures.Future[R]:
        """Queue ``fn(*args, **kwargs)`` now and return its Future.

        Runs in the calling thread only to capture its context; the function
        runs in a worker (or inline, when nested in a full pool).
        """
        future: concurrent.futures.Future[R] = concurrent.futures.Future()
        self.submit_future(future, fn, args, kwargs, capture())
        return future

    def submit_future(
        self,
        future: concurrent.futures.Future[Any],
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        carried: Carried,
    ) -> None:
        """Queue a task whose Future and captured context already exist.

        Used by the on-commit hold, which hands out the Future before the task
        reaches the pool. Raises QueueFullError or RuntimeError like ``submit``.
        """
        if self._pid != os.getpid():
            raise RuntimeError(
                f"This DjangoExecutor was created in process {self._pid} and cannot be used "
                "after os.fork(); create a new one in the child, or use "
                "djthreads.get_executor(), which does."
            )
        item = _WorkItem(future, fn, args, kwargs, carried)
        self._check_open()
        if not self._slots.acquire(blocking=False):
            if getattr(_worker_state, "executor", None) is self:
                # Waiting for a slot from inside a worker can deadlock (every
                # worker waiting on tasks queued behind it), so run it here.
                item.run(self.reuse_connections)
                return
            if self.on_full == "raise":
                raise QueueFullError(
                    f"The djthreads pool is full ({self.max_workers} tasks running, "
                    f"{self.max_queue} waiting); {task_name(fn)} was not queued. Raise "
                    "DJTHREADS['MAX_QUEUE'] or set DJTHREADS['ON_FULL'] = 'block' to wait."
                )
            self._slots.acquire()
        with self._lock:
            try:
                # Again: shutdown() may have run while we waited for the slot.
                self._check_open()
            except RuntimeError:
                self._slots.release()
                raise
            self._pending.add(item)
            self._queue.put(item)
            self._adjust_thread_count()

    def _check_open(self) -> None:
        if self._shutdown:
            raise RuntimeError("cannot schedule new futures after shutdown")

    def _adjust_thread_count(self) -> None:
        # Called with self._lock held. An idle worker takes the item; else grow.
        if self._idle.acquire(blocking=False):
            return
        if len(self._threads) < self.max_workers:
            thread = threading.Thread(
                name=f"{self.thread_name_prefix}_{len(self._threads)}",
                target=self._work,
                # Daemon, so interpreter exit does not join a stuck task forever;
                # shutdown(timeout=...) at exit waits for the rest instead.
                daemon=True,
            )
            thread.start()
            self._threads.add(thread)

    def _work(self) -> None:
        """Worker loop: runs in each pool thread until the shutdown sentinel."""
        _worker_state.executor = self
        logger.debug("worker=%s started", threading.current_thread().name)
        while True:
            item = self._queue.get()
            if item is None:
                self._queue.put(None)  # wake the next worker
                # Connections kept by reuse_connections must not outlive the pool.
                close_connections("worker exit")
                logger.debug("worker=%s stopped", threading.current_thread().name)
                return
            try:
                item.run(self.reuse_connections)
            finally:
                with self._lock:
                    self._pending.discard(item)
                del item
                self._slots.release()
                self._idle.release()

    def pending(self) -> list[concurrent.futures.Future[Any]]:
        """Return the Futures of the tasks queued or running right now."""
        with self._lock:
            return [item.future for item in self._pending]

    def pending_names(self) -> list[str]:
        """Return the qualified names of the tasks queued or running right now."""
        with self._lock:
            return sorted(task_name(item.fn) for item in self._pending)

    def wait_for_tasks(self, timeout: float | None = None) -> None:
        """Block until every task submitted so far has finished.

        Raises the builtin TimeoutError, naming the unfinished tasks, when they
        have not finished within ``timeout`` seconds.
        """
        with self._lock:
            items = list(self._pending)
        _, not_done = concurrent.futures.wait([item.future for item in items], timeout)
        if not_done:
            names = sorted(task_name(item.fn) for item in items if item.future in not_done)
            raise TimeoutError(
                f"{len(names)} djthreads task(s) still running after {timeout} s: "
                + ", ".join(names)
            )

    def _cancel_queued(self) -> list[str]:
        """Cancel every task still in the queue; return their names."""
        cancelled = []
        sentinel = False
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is None:
                sentinel = True
                continue
            if item.future.cancel():
                item.future.set_running_or_notify_cancel()
                cancelled.append(task_name(item.fn))
            with self._lock:
                self._pending.discard(item)
            self._slots.release()
        if sentinel:
            self._queue.put(None)
        return cancelled

    def shutdown(
        self, wait: bool = True, *, cancel_futures: bool = False, timeout: float | None = None
    ) -> None:
        """Stop accepting tasks; finish (or cancel) the queued ones.

        Runs in the calling thread. With ``wait``, it blocks until the workers
        have run every queued task — or, with ``timeout``, at most that many
        seconds: then the queued tasks are cancelled, a WARNING names every task
        that did not finish, and it returns while stuck tasks keep running in
        their daemon threads. ``cancel_futures`` cancels queued tasks at once.
        """
        with self._lock:
            self._shutdown = True
            threads = list(self._threads)
        if cancel_futures:
            cancelled = self._cancel_queued()
            if cancelled:
                logger.info("shutdown cancelled=%s queued tasks: %s", len(cancelled), cancelled)
        self._queue.put(None)
        if not wait:
            return
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in threads:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            thread.join(remaining)
        if any(thread.is_alive() for thread in threads):
            cancelled = self._cancel_queued()
            running = self.pending_names()
            logger.warning(
                "shutdown timeout=%.1fs expired: running=%s cancelled=%s did not finish",
                timeout,
                running,
                cancelled,
            )
