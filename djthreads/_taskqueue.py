"""The process-wide priority queue that feeds ThreadPoolBackend tasks to the pool.

The default pool runs tasks first in, first out. To let a high-priority task
overtake queued low-priority ones, backend tasks wait here, in a queue per
priority, and at most ``max_workers`` of them are handed to the pool at a time:
the pool's FIFO never holds a backlog of ours to jump. A worker whose task of
ours finished hands the next ready one over. Deferred tasks (``run_after``)
wait in a heap ordered by time. One daemon thread, the dispatcher, moves due
tasks to the ready queues and hands ready ones over when no finishing task
will; no thread sleeps per queued task.

State is per process: built lazily, dropped in a forked child, and at
interpreter exit the ready tasks get ``DJTHREADS['SHUTDOWN_TIMEOUT']`` seconds
to start before what is left is named in a WARNING.
"""

from __future__ import annotations

import atexit
import collections
import concurrent.futures
import datetime
import heapq
import itertools
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol, cast

from django.utils import timezone

from djthreads import _account
from djthreads._account import BACKEND, DEFERRED, QUEUED, Work
from djthreads._default import get_executor
from djthreads._run import in_task, run_into
from djthreads._worker import worker_state
from djthreads.conf import get_settings
from djthreads.exceptions import QueueFullError
from djthreads.executor import DjangoExecutor

logger = logging.getLogger("djthreads.backends")


class Job(Protocol):
    """A queued unit of work: run it in a pool worker, or tell it it never will."""

    name: str

    def __call__(self) -> None: ...

    def not_started(self, exc: BaseException) -> None: ...

    def dropped(self, why: str) -> None: ...


_lock = threading.Lock()  # guards everything below, but see _queues
_changed = threading.Condition(_lock)  # the queues or _in_flight changed
# Ready tasks: a first-in, first-out deque per priority (negated, so the most
# urgent sorts first), and the sorted tuple of the priorities seen so far
# (replaced, never changed in place; at most 201). Appending to and popping a
# deque are atomic, so a worker whose task finished takes the next one without
# _lock: every worker taking it after each task made it the process's most
# contended lock, queueing them behind whichever one the interpreter paused
# while it held it. Everything else changes the deques under _lock.
_queues: dict[int, collections.deque[Work]] = {}
_levels: tuple[int, ...] = ()
_deferred: list[tuple[datetime.datetime, int, int, Work]] = []  # (run_after, seq, -priority, work)
_in_flight = 0  # handed to the pool and not finished
_blocked = 0  # put() calls waiting for room
_exit_waiting = False  # the exit drain waits for _in_flight to reach 0
_sequence = itertools.count()  # deferred tasks due at the same moment: first come first
_dispatcher: threading.Thread | None = None
# The Work of each Future handed to the pool and not yet done (see _watch).
_handed: dict[concurrent.futures.Future[Any], Work] = {}


def _job(work: Work) -> Job:
    return cast(Job, work.fn)


def _push_ready(negated: int, work: Work) -> None:
    # Called with _lock held: behind the ready tasks of its priority.
    global _levels
    queue = _queues.get(negated)
    if queue is None:
        queue = _queues[negated] = collections.deque()
        _levels = tuple(sorted((*_levels, negated)))
    queue.append(work)


def _pop_ready() -> tuple[int, Work] | None:
    # Any thread, with or without _lock: the most urgent ready task, or None.
    for negated in _levels:
        queue = _queues[negated]
        if queue:
            try:
                return negated, queue.popleft()
            except IndexError:  # another thread took the last one
                continue
    return None


def _any_ready() -> bool:
    return any(_queues.values())


def put(work: Work, *, priority: int, run_after: datetime.datetime | None) -> None:
    """Queue ``work`` (a Job) to run in the default pool, by priority, not before ``run_after``.

    Runs in the enqueuing thread. From here until it ends the task is in the
    account of outstanding work (``djthreads._account``), deferred while
    ``run_after`` is ahead. At most ``DJTHREADS['MAX_QUEUE']`` tasks wait
    (ready or deferred) beyond those handed to the pool; when that is
    reached, this waits for room (``ON_FULL="block"``) or raises
    QueueFullError (``ON_FULL="raise"``). Called from inside a pool task, a
    full queue runs the job inline instead, so a task that enqueues tasks
    cannot deadlock.
    """
    global _in_flight, _blocked
    conf = get_settings()
    executor = get_executor()
    limit = executor.max_workers
    with _lock:
        inline = False
        while _waiting() >= conf.MAX_QUEUE and not (
            run_after is None and not _any_ready() and _in_flight < limit
        ):
            if in_task():
                inline = True
                break
            if conf.ON_FULL == "raise":
                raise QueueFullError(
                    f"The djthreads task queue is full ({conf.MAX_QUEUE} tasks waiting); "
                    f"{work.name} was not enqueued. Raise DJTHREADS['MAX_QUEUE'] or set "
                    "DJTHREADS['ON_FULL'] = 'block' to wait."
                )
            _blocked += 1
            try:
                _changed.wait()
            finally:
                _blocked -= 1
        if not inline:
            _account.add(work)
            if run_after is not None and run_after > timezone.now():
                work.state = DEFERRED
                entry = (run_after, next(_sequence), -priority, work)
                heapq.heappush(_deferred, entry)
                if _deferred[0] is entry:
                    _wake_dispatcher()  # it sleeps until the earliest one is due
                return
            work.state = QUEUED
            if not _any_ready() and _in_flight < limit:
                # Nothing of ours waits ahead of it and a worker is ours to
                # take: straight to the pool, no dispatcher round trip.
                _in_flight += 1
            else:
                _push_ready(-priority, work)
                # The next of ours to finish hands it over (_finished). Waking
                # the dispatcher on every put would cost a thread switch per
                # task for nothing; it is needed only for a slot that no
                # finishing task of ours will fill.
                if _in_flight < limit:
                    _wake_dispatcher()
                return
    if not inline:
        _start(executor, work, -priority)
        return
    # Full, and called from a pool task: waiting could deadlock (every worker
    # waiting for room that only workers make), so run it here, like submit().
    _account.add(work)
    try:
        run_into(work)
    finally:
        _account.end(work)


def _wake_dispatcher() -> None:
    # Called with _lock held: the queues changed in a way only it handles.
    global _dispatcher
    if _dispatcher is None:
        _dispatcher = threading.Thread(
            name="djthreads-tasks-dispatcher", target=_dispatch_forever, daemon=True
        )
        _dispatcher.start()
    _changed.notify_all()


def _start(executor: DjangoExecutor, work: Work, negated: int) -> None:
    """Hand ``work`` (counted in flight) to the pool from this thread, if it has room.

    Runs in the enqueuing thread, or in the worker whose task just finished.
    Never blocks and never runs the task inline: when the pool is full of
    other work, the task goes back to the ready queue for the dispatcher.
    """
    global _in_flight
    try:
        started = executor.offer(work)
    except Exception as exc:
        _not_started(work, exc)
        return
    if started:
        _watch(work)
        return
    with _lock:
        _in_flight -= 1
        _push_ready(negated, work)
        _wake_dispatcher()


def _waiting() -> int:
    return sum(map(len, _queues.values())) + len(_deferred)


def _dispatch_forever() -> None:
    """The dispatcher thread: move due tasks to the ready queues, feed the pool."""
    while True:
        try:
            executor = get_executor()
        except Exception:
            logger.exception("dispatcher cannot get the default pool; retrying on next change")
            with _lock:
                _changed.wait()
            continue
        with _lock:
            work = _next_ready(executor.max_workers)
        if work is not None:
            _hand_over(executor, work)


def _next_ready(limit: int) -> Work | None:
    # Called with _lock held. Returns a task that may go to the pool now,
    # counted in flight; otherwise waits for a change or the next due task and
    # returns None, so the caller looks the pool (and its size) up again.
    global _in_flight
    now = timezone.now()
    while _deferred and _deferred[0][0] <= now:
        _, _, negated, due = heapq.heappop(_deferred)
        due.state = QUEUED
        _push_ready(negated, due)
    if _in_flight < limit:
        ready = _pop_ready()
        if ready is not None:
            _in_flight += 1
            _changed.notify_all()  # room for a blocked put()
            return ready[1]
    _changed.wait((_deferred[0][0] - now).total_seconds() if _deferred else None)
    return None


def _hand_over(executor: DjangoExecutor, work: Work) -> None:
    # Runs in the dispatcher thread, never in a pool worker, so a full pool
    # makes it wait (ON_FULL="block") rather than run the task inline.
    try:
        executor.submit_work(work)
    except Exception as exc:
        # The default pool may have been replaced (shutdown(), a settings
        # change) since this thread looked it up: then the task goes there.
        try:
            current = get_executor()
        except Exception:
            current = executor
        if current is not executor:
            _hand_over(current, work)
            return
        # QueueFullError (ON_FULL="raise" and the pool is full of other work)
        # or RuntimeError (the pool shut down): the task cannot start.
        _not_started(work, exc)
        return
    _watch(work)


def _watch(work: Work) -> None:
    # Called once a task is in the pool: _finished() runs when its Future is
    # done. The callback finds the Work in _handed rather than holding it:
    # partial(_finished, work) would make a cycle (work -> Future -> callback
    # -> work) that only the cyclic GC can free, about twenty objects a task.
    _handed[work.future] = work
    work.future.add_done_callback(_finished)


def _not_started(work: Work, exc: Exception) -> None:
    global _in_flight
    with _lock:
        _in_flight -= 1
        _changed.notify_all()
    _account.end(work)
    _job(work).not_started(exc)
    if work.future.set_running_or_notify_cancel():
        work.future.set_exception(exc)


def _finished(future: concurrent.futures.Future[Any]) -> None:
    # Runs in the pool worker after the task (its connections already closed),
    # or in the thread that cancelled the queued Future at pool shutdown. The
    # next ready task goes to the pool from here: the dispatcher only wakes
    # for deferred tasks, a pool full of other work, and blocked put()s.
    # With tasks ready, the slot goes to the next one without _lock (see
    # _queues); only an empty queue takes it, to give the slot back.
    global _in_flight
    work = _handed.pop(future)
    cancelled = future.cancelled()
    following = None if cancelled else _pop_ready()
    # A put() that starts waiting for room just after this read of _blocked
    # is woken by the _finished() of the task handed over here.
    if following is None or _blocked:
        with _lock:
            if following is None:
                if not cancelled:
                    following = _pop_ready()  # a put() may have come meanwhile
                if following is None:
                    _in_flight -= 1
                    if _any_ready():
                        _wake_dispatcher()  # a slot freed that nobody else fills
            if _blocked or (_exit_waiting and not _in_flight):
                _changed.notify_all()
    if cancelled:
        _job(work).not_started(
            RuntimeError(f"{work.name} was cancelled: the djthreads pool shut down.")
        )
    if following is not None:
        negated, next_work = following
        try:
            executor = get_executor()
        except Exception as exc:
            _not_started(next_work, exc)
            return
        _start(executor, next_work, negated)


def _help_waiter(pending: list[Work]) -> None:
    # djthreads._account.wait() from a worker of the default pool: run the
    # ready backend tasks it waits for here. With every worker busy waiting,
    # the dispatcher could never hand them over.
    if worker_state.queued is not get_executor()._queued:
        return
    wanted = {work.number for work in pending if work.kind == BACKEND}
    if not wanted:
        return
    claimed = []
    with _lock:
        for queue in _queues.values():
            for work in queue.copy():
                if work.number in wanted:
                    try:
                        queue.remove(work)
                    except ValueError:  # a finishing worker took it first
                        continue
                    claimed.append(work)
        if claimed:
            _changed.notify_all()
    for work in claimed:
        try:
            run_into(work)  # nested: the waiting task's finally closes connections
        finally:
            _account.end(work)


_account.helpers.append(_help_waiter)


def drop_deferred(select: Callable[[Work], bool], why: str) -> list[Work]:
    """Remove the deferred tasks ``select`` picks: they never run; ``why`` is logged."""
    with _lock:
        dropped = [entry[3] for entry in _deferred if select(entry[3])]
        if dropped:
            _deferred[:] = [entry for entry in _deferred if not select(entry[3])]
            heapq.heapify(_deferred)
            _changed.notify_all()
    for work in dropped:
        _account.end(work)
        _job(work).dropped(why)
        work.future.cancel()
    return dropped


@atexit.register
def _drain_at_exit() -> None:
    # Registered after djthreads._default's handler, so it runs first (atexit
    # is last in, first out) while the pool still takes tasks.
    with _lock:
        if not (_any_ready() or _deferred or _in_flight):
            return
    try:
        timeout = get_settings().SHUTDOWN_TIMEOUT
    except Exception:
        timeout = 0.0
    global _exit_waiting
    deadline = time.monotonic() + timeout
    with _lock:
        _exit_waiting = True
        while _any_ready() or _in_flight:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            _changed.wait(remaining)
        lost = [work for negated in _levels for work in _queues[negated].copy()]
        lost += [entry[3] for entry in sorted(_deferred)]
    if lost:
        logger.warning(
            "exit: tasks=[%s] never started; ThreadPoolBackend keeps tasks in memory only",
            "; ".join(work.describe() for work in lost),
        )


def _after_fork_in_child() -> None:
    # The dispatcher and the pool do not exist in the child and the lock may
    # have been held at fork time: start empty. The parent is untouched.
    global _lock, _changed, _queues, _levels, _deferred, _in_flight, _dispatcher, _blocked
    global _handed
    _lock = threading.Lock()
    _changed = threading.Condition(_lock)
    _queues, _levels, _deferred, _in_flight, _dispatcher, _blocked = {}, (), [], 0, None, 0
    _handed = {}


os.register_at_fork(after_in_child=_after_fork_in_child)
