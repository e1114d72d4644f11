"""What runs in a pool's worker threads, and the Future that lets a waiting worker help.

``djthreads.executor`` starts the threads (``work_loop``) and hands out the
Futures (``new_future``); the Tasks backend's queue and the test helpers read
``worker_state`` to know which pool, if any, the calling thread works for.
"""

from __future__ import annotations

import concurrent.futures
import logging
import queue
import threading
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from djthreads import _account
from djthreads._account import Work
from djthreads._run import close_connections

if TYPE_CHECKING:
    from djthreads.executor import DjangoExecutor

logger = logging.getLogger("djthreads")


class _WorkerState(threading.local):
    # Class defaults: every thread that waits on a Future reads .queued, and
    # a missing attribute of a threading.local costs a raised AttributeError.
    queued: dict[int, Work] | None = None  # the claim table of the pool this thread works for
    reuse = False  # that pool keeps connections between tasks (the test helpers ask)


worker_state = _WorkerState()

# Set once the exit drain begins (djthreads.executor): from then on only
# running tasks may submit (their work runs inline), as the stdlib refuses
# submissions at exit, and workers stop at the next sentinel.
exiting = False


class TaskFuture(concurrent.futures.Future[Any]):
    """A Future whose ``result()``/``exception()`` in a worker of the same pool helps.

    When a worker waits for a task of its own pool that has not started, it
    runs that task itself (as fork-join pools do) instead of waiting for a
    worker that may never come: ``submit(lambda: submit(child).result())``
    completes even with one worker. Holds the pool's claim table, never the
    executor, so a Future kept by the caller does not keep the pool alive.
    """

    def __init__(self) -> None:
        super().__init__()
        # Set on every instance, in this order, even when the Future is never
        # queued (DjangoExecutor._enqueue fills them in): CPython shares one
        # attribute layout per class, and once many instances without these
        # two were made, instances that added them later each carried a
        # dict of their own, one more object for the gc per queued task.
        self._djthreads_queued: dict[int, Work] | None = None
        self._djthreads_number = 0

    def _help(self) -> None:
        table = self._djthreads_queued
        mine = worker_state.queued
        if table is not None and table is mine:
            work = table.pop(self._djthreads_number, None)  # claim it, or someone did
            if work is not None:
                work.owner._run_here(work)

    def result(self, timeout: float | None = None) -> Any:
        """As ``Future.result``; in a worker of the same pool, run the task here if queued."""
        self._help()
        return super().result(timeout)

    def exception(self, timeout: float | None = None) -> BaseException | None:
        """As ``Future.exception``; in a worker of the same pool, run the task here if queued."""
        self._help()
        return super().exception(timeout)


# repr() and InvalidStateError messages read "<Future at 0x... state=...>" as
# the stdlib's do (CPython's test_future matches them); type() still names the class.
TaskFuture.__name__ = "Future"


def _help_waiter(pending: list[Work]) -> None:
    # djthreads._account.wait() from a pool worker: run the queued work of
    # this worker's own pool here, so the wait cannot deadlock on it.
    table = worker_state.queued
    if table is None:
        return
    for work in pending:
        claimed = table.pop(work.number, None)
        if claimed is not None:
            claimed.owner._run_here(claimed)


_account.helpers.append(_help_waiter)


def new_future() -> concurrent.futures.Future[Any]:
    """A Future for work that may go to a DjangoExecutor (it can be helped along)."""
    return TaskFuture()


def work_loop(
    executor_reference: weakref.ref[DjangoExecutor],
    work_queue: queue.SimpleQueue[Work | None],
    table: dict[int, Work],
    reuse: bool,
    initializer: Callable[..., object] | None,
    initargs: tuple[Any, ...],
) -> None:
    """Worker loop: runs in each pool thread until the shutdown sentinel."""
    worker_state.queued = table
    worker_state.reuse = reuse
    name = threading.current_thread().name
    logger.debug("worker=%s started", name)
    if initializer is not None:
        try:
            initializer(*initargs)
        except BaseException:
            logger.critical("worker=%s initializer failed", name, exc_info=True)
            close_connections("initializer")
            executor = executor_reference()
            if executor is not None:
                executor._initializer_failed()
            return
    idle = False  # this worker is counted idle (see DjangoExecutor._note_idle)
    growing = True  # the pool may still start threads; once full-grown, it never does again
    while True:
        if growing and not idle:
            executor = executor_reference()
            if executor is not None:
                idle = executor._note_idle()
                growing = executor._growing
            del executor
        work = work_queue.get()
        idle = False
        if work is not None:
            # Claim it: a waiter in a worker may have run it, or shutdown
            # cancelled it, since it was queued.
            if table.pop(work.number, None) is not None:
                idle = work.owner._run_claimed(work, reuse)
            del work  # see CPython gh-60488: no reference to a finished task
            continue
        executor = executor_reference()
        # Exit when the interpreter exits, the executor was collected, or shut down.
        if exiting or executor is None or executor._shutdown:
            if executor is not None:
                executor._shutdown = True
            work_queue.put(None)  # wake the next worker
            del executor
            # Connections kept by reuse_connections must not outlive the pool.
            close_connections("worker exit")
            logger.debug("worker=%s stopped", name)
            return
        del executor
