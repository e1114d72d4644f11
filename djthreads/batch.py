"""``djthreads.map``: the parallel part of a long job, in a pool of its own.

Why its own pool and not the default one: a job maps thousands of items, and
in the default pool they would fill ``MAX_QUEUE`` and starve the request-path
``@run_async`` tasks queued behind them. Worse, a job usually runs *inside* a
default-pool task (a view starts it with ``@run_async``), and a task submitted
from a worker of a full pool runs inline in that worker: the parallelism would
silently vanish. A ``DjangoExecutor`` of ``max_workers`` threads that lives for
one call has neither problem, and its threads cost nothing next to I/O.
"""

from __future__ import annotations

import collections
import concurrent.futures
import functools
import itertools
import logging
import threading
import warnings
from collections.abc import Callable, Coroutine, Iterable, Iterator, Sized
from typing import Any, Protocol, TypeVar, overload

from djthreads._account import EXECUTOR, Work, task_name
from djthreads._run import Carried, call, capture, check_callable
from djthreads._worker import new_future
from djthreads.conf import get_settings
from djthreads.executor import DjangoExecutor

logger = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

_PROGRESS_HINT = (
    "djthreads.map(progress=True) shows no progress bar because tqdm is not installed; "
    "install it with: pip install 'djthreads[progress]'."
)


class _Bar(Protocol):
    def update(self, n: float | None = 1) -> bool | None: ...

    def close(self) -> None: ...


class _Batch:
    """What the map thread and the workers' done callbacks share."""

    def __init__(self) -> None:
        self.lock = threading.Lock()  # guards failed, error and window
        self.failed = False
        self.error: concurrent.futures.Future[Any] | None = None
        # (future, number of items) in input order; at most 2 x max_workers.
        self.window: collections.deque[tuple[concurrent.futures.Future[Any], int]] = (
            collections.deque()
        )

    def on_done(self, future: concurrent.futures.Future[Any]) -> None:
        # Runs in the worker that settled ``future``, before that worker takes
        # its next item: cancelling here means nothing queued behind the first
        # failure starts, even before the map thread wakes up.
        if not future.cancelled() and future.exception() is not None:
            self.stop(error=future)

    def stopped(self) -> bool:
        """True once an item failed or the map was stopped.

        A method, not the attribute: workers set ``failed`` while the map
        thread loops, and a type checker would narrow an attribute read.
        """
        return self.failed

    def stop(self, error: concurrent.futures.Future[Any] | None = None) -> None:
        """Cancel every item not started yet; the first failed item is kept.

        Runs in a worker (``on_done``) or in the map thread. Setting ``failed``
        and reading the window under one lock means a part the map thread
        queues afterwards sees ``failed`` and is never submitted.
        """
        with self.lock:
            self.failed = True
            if self.error is None:
                self.error = error
            queued = [f for f, _ in self.window]
        for f in queued:
            f.cancel()  # a no-op on running and finished futures


def _chunks(iterable: Iterable[T], size: int) -> Iterator[list[T]]:
    iterator = iter(iterable)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


def _chunk_runner(fn: Callable[[T], R], batch: _Batch) -> Callable[[list[T]], list[R]]:
    def run_chunk(chunk: list[T]) -> list[R]:
        results = []
        for item in chunk:
            if batch.stopped():
                break  # another chunk failed: its results are thrown away anyway
            results.append(call(fn, (item,), {}))
        return results

    # Logs and signals name the user's function, not this wrapper.
    return functools.update_wrapper(run_chunk, fn)


def _progress_bar(total: int | None, name: str) -> _Bar | None:
    try:
        from tqdm import tqdm
    except ImportError:
        # stacklevel=3: the user's call to djthreads.map. The default warnings
        # filter shows it once per call site.
        warnings.warn(_PROGRESS_HINT, UserWarning, stacklevel=3)
        return None
    return tqdm(total=total, desc=name.rsplit(".", 1)[-1], unit="item")


def _positive(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(
            f"djthreads.map({name}=...) must be a positive integer or None, got {value!r}."
        )
    return value


@overload
def map(
    fn: Callable[[T], Coroutine[Any, Any, R]],
    iterable: Iterable[T],
    *,
    max_workers: int | None = None,
    chunk_size: int | None = None,
    progress: bool = False,
) -> list[R]: ...


@overload
def map(
    fn: Callable[[T], R],
    iterable: Iterable[T],
    *,
    max_workers: int | None = None,
    chunk_size: int | None = None,
    progress: bool = False,
) -> list[R]: ...


def map(
    fn: Callable[[Any], Any],
    iterable: Iterable[Any],
    *,
    max_workers: int | None = None,
    chunk_size: int | None = None,
    progress: bool = False,
) -> list[Any]:
    """Run ``fn(item)`` for every item in worker threads; return the results in order.

    The calling thread pulls items from ``iterable`` lazily (a generator of a
    million items is fine: at most ``2 * max_workers`` chunks are in flight)
    and blocks until every item is done. The items run in a pool of
    ``max_workers`` threads (default ``DJTHREADS['MAX_WORKERS']``) created for
    this call and shut down when it returns; each runs in a copy of the
    caller's contextvars and per-request state (language, time zone, urlconf,
    script prefix), like every djthreads task, and its thread's database
    connections are closed after it. An ``async def`` ``fn`` is run to
    completion for each item in its worker (through asgiref's
    ``async_to_sync``). The workers do not see the caller's uncommitted
    transaction: commit before mapping over rows you just wrote (on SQLite an
    open write transaction would also lock them out).

    ``chunk_size`` items (default 1) are handed to a worker at a time: use it
    for many tiny items; connections are then closed once per chunk, and the
    ``task_started``/``task_finished`` signals are sent once per chunk.

    On the first exception, items not started yet are cancelled, running ones
    are waited for, and the exception is re-raised here; every failure is
    logged at ERROR on ``djthreads`` with its traceback. ``progress=True``
    draws a tqdm bar on stderr (``pip install 'djthreads[progress]'``); without
    tqdm it warns once and runs without one.
    """
    check_callable(fn, "djthreads.map")
    workers = _positive(
        "max_workers", get_settings().MAX_WORKERS if max_workers is None else max_workers
    )
    size = 1 if chunk_size is None else _positive("chunk_size", chunk_size)
    if not isinstance(progress, bool):
        raise TypeError(f"djthreads.map(progress=...) must be True or False, got {progress!r}.")
    # A partial(fetch, job_id) is named after fetch in the log and the bar (task_name).
    name = task_name(fn)
    total = len(iterable) if isinstance(iterable, Sized) else None
    bar = _progress_bar(total, name) if progress else None
    batch = _Batch()
    run: Callable[[Any], Any] = fn if size == 1 else _chunk_runner(fn, batch)
    parts: Iterator[Any] = iter(iterable) if size == 1 else _chunks(iterable, size)
    base = capture()
    executor = DjangoExecutor(
        workers,
        f"{get_settings().THREAD_NAME_PREFIX}_map",
        # Never more than the window waits, so submitting never blocks.
        max_queue=2 * workers,
    )
    results: list[Any] = []
    try:
        _run_all(executor, batch, run, parts, size, base, 2 * workers, results, bar)
        if batch.stopped():
            _stop(batch, name)
    except BaseException:
        # The iterable raised, or the caller was interrupted: same as a failure.
        batch.stop()
        raise
    finally:
        # Waits for the items still running; cancelled ones are skipped.
        executor.shutdown(wait=True)
        if bar is not None:
            bar.close()
    if batch.error is not None:
        error = batch.error.exception()
        assert error is not None
        raise error
    return results


_END = object()


def _run_all(
    executor: DjangoExecutor,
    batch: _Batch,
    run: Callable[[Any], Any],
    parts: Iterator[Any],
    size: int,
    base: Carried,
    limit: int,
    results: list[Any],
    bar: _Bar | None,
) -> None:
    """Keep ``limit`` parts in flight and collect results in order (map thread)."""
    exhausted = False
    window = batch.window
    while True:
        while not exhausted and len(window) < limit and not batch.stopped():
            part: Any = next(parts, _END)
            if part is _END:
                exhausted = True
                break
            future = new_future()
            with batch.lock:
                if batch.stopped():
                    return  # the failure callback has already cancelled the window
                window.append((future, len(part) if size > 1 else 1))
            future.add_done_callback(batch.on_done)
            executor.submit_work(Work(run, (part,), {}, base, EXECUTOR, future))
        if batch.stopped() or not window:
            return
        head, count = window[0]
        if not head.done():
            concurrent.futures.wait(
                [f for f, _ in window if not f.done()],
                return_when=concurrent.futures.FIRST_COMPLETED,
            )
            continue
        if head.cancelled():
            return  # only a failure cancels
        if head.exception() is not None:
            batch.on_done(head)  # its callback may not have run yet
            return
        with batch.lock:
            window.popleft()
        if size == 1:
            results.append(head.result())
        else:
            results.extend(head.result())
        if bar is not None:
            bar.update(count)


def _stop(batch: _Batch, name: str) -> None:
    """Cancel what has not started and say so (map thread, before waiting)."""
    batch.stop()
    futures = [f for f, _ in batch.window]
    logger.info(
        "map fn=%s stopped at its first error: cancelled=%d waiting_for=%d",
        name,
        sum(1 for f in futures if f.cancelled()),
        sum(1 for f in futures if not f.done()),
    )
