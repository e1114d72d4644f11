"""A bounded thread pool whose tasks close their database connections.

Why not ``concurrent.futures.ThreadPoolExecutor``: its queue is unbounded, and
at interpreter exit it joins its non-daemon workers with no timeout, so one
stuck task holds a gunicorn worker's shutdown forever. This pool keeps the
stdlib's constructor, ``Executor`` interface, ``Future`` and worker life cycle
(idle workers are reused; a worker holds only a weak reference to its
executor, so an unreachable pool's idle workers exit; a failing initializer
breaks the pool with ``BrokenThreadPool``) but bounds the queue, runs daemon
workers, drains every live pool at exit within its ``shutdown_timeout``, and
lets a worker that waits for a queued task of its own pool run it itself.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import itertools
import logging
import os
import queue
import threading
import time
import weakref
from collections.abc import Callable, Coroutine, Iterable
from concurrent.futures.thread import BrokenThreadPool
from typing import Any, Literal, ParamSpec, TypeVar, overload

from djthreads import _account, _worker
from djthreads._account import EXECUTOR, QUEUED, Work
from djthreads._run import capture, check_callable, in_task, run_into, run_task
from djthreads._worker import TaskFuture, work_loop, worker_state
from djthreads.exceptions import QueueFullError

logger = logging.getLogger("djthreads")

P = ParamSpec("P")
R = TypeVar("R")

# Every executor that started a worker and is not collected: the exit drain's list.
_live: weakref.WeakSet[DjangoExecutor] = weakref.WeakSet()

_names = itertools.count()
_pid = os.getpid()  # this process's, kept by the fork hook: no syscall per submit


class DjangoExecutor(concurrent.futures.Executor):
    """A ``concurrent.futures.ThreadPoolExecutor`` with a bounded queue and clean connections.

    Takes the stdlib's constructor — ``max_workers`` (None: DJTHREADS['MAX_WORKERS']),
    ``thread_name_prefix``, ``initializer``, ``initargs`` — plus keyword
    options: ``max_queue`` tasks wait beyond the running ones; when both are
    taken ``submit`` waits for a slot (``on_full="block"``) or raises
    QueueFullError (``on_full="raise"``); ``shutdown_timeout`` bounds the
    wait for this pool's tasks at interpreter exit; ``reuse_connections``
    lets workers keep usable connections between tasks.

    Tasks run in daemon worker threads named ``<thread_name_prefix>_<n>``,
    each in a copy of the submitter's contextvars and request state (language,
    time zone, urlconf, script prefix), and
    each is followed by ``connections.close_all()`` in the worker — or, with
    ``reuse_connections``, by Django's end-of-request rules, so a worker keeps
    at most one connection per alias and closes it when it stops. An idle
    worker is reused before a new one starts. A task submitted from one of
    this pool's own workers while the pool is full runs inline in that worker,
    and a worker that waits on the Future of a queued task of this pool runs
    that task itself, so nested submission cannot deadlock. The initializer
    runs in each worker before its first task; if it raises, the pool is
    broken: queued and later tasks get ``BrokenThreadPool``, as in the stdlib.

    At interpreter exit every live DjangoExecutor waits up to its own
    ``shutdown_timeout`` for its tasks, then cancels what is still queued and
    logs a WARNING naming each unfinished task; from then on ``submit`` raises
    RuntimeError outside a task. An executor that becomes unreachable without
    ``shutdown()`` lets its idle workers exit. After ``os.fork()`` an
    executor cannot be used in the child (``get_executor()`` builds a new
    default one there).
    """

    def __init__(
        self,
        max_workers: int | None = None,
        thread_name_prefix: str = "",
        initializer: Callable[..., object] | None = None,
        initargs: Iterable[Any] = (),
        *,
        max_queue: int = 1000,
        on_full: Literal["block", "raise"] = "block",
        shutdown_timeout: float = 30.0,
        reuse_connections: bool = False,
    ) -> None:
        if max_workers is None:
            from djthreads.conf import get_settings

            max_workers = get_settings().MAX_WORKERS
        if isinstance(max_workers, bool) or not isinstance(max_workers, int):
            raise TypeError(f"max_workers must be an integer or None, got {max_workers!r}.")
        if max_workers <= 0:
            # The stdlib's wording, which its own tests match.
            raise ValueError(f"max_workers must be greater than 0, got {max_workers!r}.")
        if isinstance(max_queue, bool) or not isinstance(max_queue, int) or max_queue < 0:
            raise ValueError(f"max_queue must be an integer >= 0, got {max_queue!r}.")
        if on_full not in ("block", "raise"):
            raise ValueError(f"on_full must be 'block' or 'raise', got {on_full!r}.")
        if not isinstance(thread_name_prefix, str):
            raise TypeError(
                "thread_name_prefix must be a string, got "
                f"{thread_name_prefix!r}: DjangoExecutor takes ThreadPoolExecutor's "
                "arguments in its order; pass max_queue=... by keyword."
            )
        if initializer is not None and not callable(initializer):
            raise TypeError(f"initializer must be a callable, got {initializer!r}.")
        if (
            isinstance(shutdown_timeout, bool)
            or not isinstance(shutdown_timeout, (int, float))
            or not shutdown_timeout >= 0
        ):
            raise ValueError(
                f"shutdown_timeout must be a number of seconds >= 0, got {shutdown_timeout!r}."
            )
        self.max_workers = self._max_workers = max_workers
        self.max_queue = max_queue
        self.on_full = on_full
        self.thread_name_prefix = thread_name_prefix or f"DjangoExecutor-{next(_names)}"
        self.shutdown_timeout = float(shutdown_timeout)
        self.reuse_connections = reuse_connections
        self._initializer = initializer
        self._initargs = tuple(initargs)
        self._kind = EXECUTOR
        # Slots (running + queued) are counted under _lock by submitters only:
        # a worker that frees one drops a True into _freed (a C-level queue,
        # no Python lock), and a submitter that finds the count full takes
        # those back, or blocks on _freed until a worker frees one. Python-level
        # Semaphores, or the workers taking _lock per task, cost a submit more
        # than the rest of its bookkeeping together (the lock is contended).
        self._capacity = max_workers + max_queue
        self._used = 0  # slots taken (queued or running, inline ones excepted), less _freed
        # True: a slot was freed; False: wake blocked submitters (shutdown, broken pool).
        self._freed: queue.SimpleQueue[bool] = queue.SimpleQueue()
        self._idle_workers = 0  # workers blocked on an empty queue, not yet handed work
        self._growing = True  # fewer threads than max_workers: idle workers are counted
        self._queue: queue.SimpleQueue[Work | None] = queue.SimpleQueue()
        # Queued work not yet claimed by a worker, by number: popping an entry
        # (atomic) is how a worker, a helping waiter or shutdown claims it.
        self._queued: dict[int, Work] = {}
        self._lock = threading.Lock()  # guards _shutdown, _broken, _threads, the counts
        self._shutdown = False
        self._broken: str | Literal[False] = False
        self._threads: set[threading.Thread] = set()
        self._pid = os.getpid()

    # -- submitting -------------------------------------------------------------

    @overload
    def submit(
        self, fn: Callable[P, Coroutine[Any, Any, R]], /, *args: P.args, **kwargs: P.kwargs
    ) -> concurrent.futures.Future[R]: ...

    @overload
    def submit(
        self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs
    ) -> concurrent.futures.Future[R]: ...

    def submit(
        self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any
    ) -> concurrent.futures.Future[Any]:
        """Queue ``fn(*args, **kwargs)`` now and return its Future.

        Runs in the calling thread only to capture its context; the function
        runs in a worker (or inline, when nested in a full pool). An ``async
        def`` function runs to completion in the worker; a coroutine object is
        refused with a TypeError that says to pass the function.
        """
        check_callable(fn, "DjangoExecutor.submit()")
        work = Work(fn, args, kwargs, capture(), self._kind, TaskFuture())
        self.submit_work(work)
        return work.future

    def submit_work(self, work: Work) -> None:
        """Queue a task whose record (Future, captured context) already exists.

        Used by the on-commit hold, the Tasks backend and ``map``, which hand
        out the Future before the task reaches the pool. Raises QueueFullError,
        BrokenThreadPool or RuntimeError like ``submit``.
        """
        if self._pid != _pid:
            raise RuntimeError(
                f"This DjangoExecutor was created in process {self._pid} and cannot be used "
                "after os.fork(); create a new one in the child, or use "
                "djthreads.get_executor(), which does."
            )
        if _worker.exiting:
            self._exit_submission(work)
            return
        with self._lock:
            if self._broken or self._shutdown:
                self._check_open()
            if self._used < self._capacity or self._reclaim():
                self._enqueue(work)
                return
            # Full. Waiting for a slot from inside one of our workers can
            # deadlock (every worker waiting on tasks queued behind it), so
            # such a task runs right here.
            inline = worker_state.queued is self._queued
            if not inline and self.on_full == "raise":
                raise QueueFullError(
                    f"The djthreads pool is full ({self.max_workers} tasks running, "
                    f"{self.max_queue} waiting); {work.name} was not queued. Raise "
                    "DJTHREADS['MAX_QUEUE'] or set DJTHREADS['ON_FULL'] = 'block' to wait."
                )
        if inline:
            self._run_inline(work)
            return
        while True:
            # Outside the lock: woken by the next freed slot, or by shutdown.
            freed = self._freed.get()
            with self._lock:
                if freed:
                    self._used -= 1
                else:
                    self._freed.put(False)  # pass the wake-up on to the next waiter
                self._check_open()  # shutdown() may have run while we waited
                if self._used < self._capacity or self._reclaim():
                    self._enqueue(work)
                    return

    def offer(self, work: Work) -> bool:
        """Queue ``work`` if a slot is free now and return True; else return False.

        For implementors (the Tasks backend's queue): never blocks, never runs
        the work inline, queues nothing when it returns False. Raises
        BrokenThreadPool or RuntimeError when the pool cannot take work at all.

        Runs in the calling thread, often a worker whose task just freed a
        slot: a full-grown pool then hands that slot on without the
        submitters' lock, which every worker taking per hand-over made the
        backend's most contended lock.
        """
        if self._pid != _pid or _worker.exiting:
            return False  # submit_work() says why
        if not (self._growing or self._closed()) and self._take_freed():
            self._place(work)
            if self._closed():
                self._take_back(work)  # shutdown() ran meanwhile: queued too late?
            return True
        with self._lock:
            self._check_open()
            if self._used >= self._capacity and not self._reclaim():
                return False
            self._enqueue(work)
            return True

    def _closed(self) -> bool:
        # Read without the lock: shut down (or exiting) or broken.
        return self._shutdown or self._broken is not False

    def _take_freed(self) -> bool:
        # Take one slot a worker freed, if one is waiting in _freed; it stays
        # counted in _used, for the caller to use or uncount. Needs no lock:
        # offer() calls it without, _reclaim() with the lock held.
        freed = self._freed
        if freed.empty():
            return False
        try:
            token = freed.get_nowait()
        except queue.Empty:
            return False  # a submitter took it first
        if not token:
            freed.put(False)  # a wake-up is for the blocked submitters
        return token

    def _take_back(self, work: Work) -> None:
        # offer() placed work without the lock and then saw the pool shut
        # down (or break). Work queued before shutdown()'s sentinel runs as
        # usual; if it is still unclaimed here, it may sit behind the
        # sentinel, so it is claimed back and refused, never left unrun.
        if self._queued.pop(work.number, None) is None:
            return  # a worker runs it, or shutdown(cancel_futures=True) cancelled it
        _account.end(work)
        self._release_slot()
        self._check_open()

    def _reclaim(self) -> bool:
        # Called with self._lock held when the count says full: take back the
        # slots workers freed since; return True when one is free now.
        for _ in range(self._freed.qsize()):
            if not self._take_freed():
                break  # a wake-up for the blocked submitters, or none left
            self._used -= 1
        return self._used < self._capacity

    def _enqueue(self, work: Work) -> None:
        # Called with self._lock held and a slot free.
        self._used += 1
        self._place(work)
        if self._idle_workers or self._growing:
            self._adjust_thread_count()

    def _place(self, work: Work) -> None:
        # Put work, with its slot counted, where a worker (or a helping
        # waiter, or shutdown) claims it. Setting a dict key and putting on a
        # SimpleQueue are atomic: no lock needed.
        work.owner = self
        work.state = QUEUED
        future = work.future
        if isinstance(future, TaskFuture):
            future._djthreads_queued = self._queued
            future._djthreads_number = work.number
        self._queued[work.number] = work
        _account.add(work)
        self._queue.put(work)

    def _check_open(self) -> None:
        if self._broken:
            raise BrokenThreadPool(self._broken)
        if self._shutdown:
            raise RuntimeError("cannot schedule new futures after shutdown")

    def _exit_submission(self, work: Work) -> None:
        # The exit drain has begun. A running task may still finish its job
        # (its work runs inline); anyone else is refused, never accepted and lost.
        if self._broken:
            raise BrokenThreadPool(self._broken)
        if not in_task():
            raise RuntimeError("cannot schedule new futures after interpreter shutdown")
        self._run_inline(work)

    def _adjust_thread_count(self) -> None:
        # Called with self._lock held. An idle worker takes the item; else grow.
        if self._idle_workers:
            self._idle_workers -= 1
            return
        if not self._growing:
            return

        # When the executor is collected, wake every worker so that it exits.
        def weakref_cb(_: object, q: queue.SimpleQueue[Work | None] = self._queue) -> None:
            q.put(None)

        thread = threading.Thread(
            name=f"{self.thread_name_prefix}_{len(self._threads)}",
            target=work_loop,
            args=(
                weakref.ref(self, weakref_cb),
                self._queue,
                self._queued,
                self.reuse_connections,
                self._initializer,
                self._initargs,
            ),
            # Daemon, so interpreter exit does not join a stuck task forever;
            # the exit drain waits up to shutdown_timeout instead.
            daemon=True,
        )
        thread.start()
        self._threads.add(thread)
        self._growing = len(self._threads) < self.max_workers
        _live.add(self)

    def warm_up(
        self, databases: Iterable[str] = (), *, timeout: float | None = 30.0, collect: bool = True
    ) -> None:
        """Start every worker now, and open each one's connections, before the first burst.

        Runs in the calling thread, which blocks until ``max_workers`` workers
        are running (each started now or idle) and each has opened a
        connection to every alias in ``databases``. Call it where the process
        starts serving (``wsgi.py``, a gunicorn ``post_fork`` hook), not in
        ``AppConfig.ready()``, where Django discourages queries.

        What the connections do next follows the pool's rule: with
        ``reuse_connections`` each worker keeps them for its first tasks; on
        Django's psycopg 3 pool they go back to that pool, which keeps them
        open; otherwise they are closed again, and only the threads are warm
        (so ``databases`` is worth passing with reuse or a pool). Each worker
        runs one warm-up task, counted like any other.

        Then, unless ``collect=False``, it runs a full garbage collection
        (``gc.collect()``) in the calling thread. Without it, the first
        burst's allocations trigger the collection that examines everything
        Django's startup left, and it holds the GIL while every worker waits
        (tens of milliseconds). Warm-up only moves a collection the process
        was due to pay; a process that called ``gc.freeze()`` before forking
        pays only for the objects made after.

        Raises TimeoutError when the workers are not all free within
        ``timeout`` seconds (busy with long tasks), ValueError for an alias
        not in ``DATABASES``, and what connecting raised.
        """
        from djthreads._warm import warm_up

        warm_up(self, databases, timeout, collect)

    # -- running ----------------------------------------------------------------

    def _release_slot(self) -> None:
        # Any thread; no lock taken (see _freed in __init__).
        self._freed.put(True)

    def _note_idle(self) -> bool:
        """Count the calling worker idle when nothing is queued; return True if counted.

        Only while the pool still grows: a full-grown pool starts no thread,
        so its workers never take the submitters' lock. (``empty()`` rather
        than ``get_nowait()``: no exception raised per task; an item that
        lands right after is simply taken.)
        """
        if self._growing and self._queue.empty():
            with self._lock:
                self._idle_workers += 1
            return True
        return False

    def _run_claimed(self, work: Work, reuse: bool) -> bool:
        """Run claimed queued work in this worker and settle its Future (worker thread).

        The slot is freed, and the worker counted idle when nothing else is
        queued, before the Future is settled: a caller woken by ``result()``
        can submit again at once even to a full pool with ``on_full="raise"``,
        and its next task goes to this worker rather than a new thread. The
        work leaves the account after, so a waiter never sees it gone before
        its Future is done. Returns whether the worker was counted idle.
        """
        future = work.future
        if not future.set_running_or_notify_cancel():
            self._release_slot()
            _account.end(work)
            return False
        try:
            result = run_task(work, reuse=reuse)
        except BaseException as exc:
            self._release_slot()
            idle = self._note_idle()
            future.set_exception(exc)
        else:
            self._release_slot()
            idle = self._note_idle()
            future.set_result(result)
        _account.end(work)
        return idle

    def _run_here(self, work: Work) -> None:
        """Run claimed queued work inline in a worker that waits for it."""
        try:
            run_into(work)  # nested: the waiting task's finally closes connections
        finally:
            _account.end(work)
            self._release_slot()

    def _run_inline(self, work: Work) -> None:
        """Run work that took no slot in the calling thread (a worker of a full pool)."""
        work.owner = self
        _account.add(work)
        try:
            run_into(work, reuse=self.reuse_connections)
        finally:
            _account.end(work)

    def _initializer_failed(self) -> None:
        # Runs in the worker whose initializer raised: the pool is unusable,
        # as the stdlib's: fail everything queued, refuse everything new.
        with self._lock:
            self._broken = "A thread initializer failed, the thread pool is not usable anymore"
            self._freed.put(False)  # blocked submitters: refused now
        for work in self._claim_all():
            if work.future.set_running_or_notify_cancel():
                work.future.set_exception(BrokenThreadPool(self._broken))
            logger.error("task=%s not run: %s", work.describe(), self._broken)
            _account.end(work)
            self._release_slot()

    def _claim_all(self) -> list[Work]:
        claimed = []
        for number in list(self._queued):
            work = self._queued.pop(number, None)
            if work is not None:
                claimed.append(work)
        return claimed

    def _cancel_queued(self) -> list[Work]:
        """Cancel every task still queued; return them."""
        cancelled = []
        for work in self._claim_all():
            if work.future.cancel():
                work.future.set_running_or_notify_cancel()  # wake concurrent.futures.wait()
                cancelled.append(work)
            _account.end(work)
            self._release_slot()
        return cancelled

    # -- observing --------------------------------------------------------------

    def _work(self) -> list[Work]:
        return [work for work in _account.outstanding() if work.owner is self]

    def pending(self) -> list[concurrent.futures.Future[Any]]:
        """Return the Futures of the tasks queued or running right now."""
        return [work.future for work in self._work() if not work.future.done()]

    def wait_for_tasks(self, timeout: float | None = None) -> None:
        """Block until every task submitted so far (and what it submits) has finished.

        Runs in the calling thread; never waits for the calling task itself.
        Raises the builtin TimeoutError, naming the unfinished tasks, when they
        have not finished within ``timeout`` seconds.
        """
        left = _account.wait(timeout, self._owns, upto=_account.mark())
        _account.raise_if_unfinished(left, timeout)

    def _owns(self, work: Work) -> bool:
        return work.owner is self

    # -- stopping ---------------------------------------------------------------

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
            self._freed.put(False)  # blocked submitters: refused now
            threads = list(self._threads)
        if cancel_futures:
            cancelled = self._cancel_queued()
            for work in cancelled:
                logger.info("task=%s cancelled: shutdown(cancel_futures=True)", work.describe())
        self._queue.put(None)
        if not wait:
            return
        deadline = None if timeout is None else time.monotonic() + timeout
        self._join(threads, deadline, f"shutdown timeout={timeout}s")

    def _join(self, threads: list[threading.Thread], deadline: float | None, why: str) -> None:
        for thread in threads:
            if thread is threading.current_thread():
                continue  # shutdown() from one of our own tasks
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            thread.join(remaining)
        if any(
            thread.is_alive() for thread in threads if thread is not threading.current_thread()
        ):
            cancelled = self._cancel_queued()
            running = [work for work in self._work() if not work.future.done()]
            logger.warning(
                "%s expired for pool=%s: running=[%s] cancelled=[%s] did not finish",
                why,
                self.thread_name_prefix,
                "; ".join(work.describe() for work in running),
                "; ".join(work.describe() for work in cancelled),
            )


def _drain_at_exit() -> None:
    # atexit runs after threading joined the non-daemon threads; our workers
    # are daemons, still running, and each pool bounds its own wait. Pools
    # wait side by side: the exit takes the longest timeout, not the sum.
    _worker.exiting = True
    executors = list(_live)
    start = time.monotonic()
    for executor in executors:
        with executor._lock:
            executor._shutdown = True
            executor._freed.put(False)  # blocked submitters: refused now
        executor._queue.put(None)
    for executor in executors:
        executor._join(
            list(executor._threads),
            start + executor.shutdown_timeout,
            f"exit: shutdown_timeout={executor.shutdown_timeout:.1f}s",
        )


atexit.register(_drain_at_exit)


def _after_fork_in_child() -> None:
    # The parent's workers do not exist in the child: nothing to drain there.
    global _live, _pid
    _live = weakref.WeakSet()
    _pid = os.getpid()


os.register_at_fork(after_in_child=_after_fork_in_child)
