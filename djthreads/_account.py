"""The process's account of outstanding work: one record per task.

Every piece of work djthreads accepts is one :class:`Work` record, created
once where the work is accepted and passed down whole: a task of the default
pool or of any ``DjangoExecutor`` (``map``'s included), a ThreadPoolBackend
task (ready, deferred or running) and a DjangoThread. A record is in the
account from the moment its owner accepts it until it ends (succeeded,
failed or cancelled). ``wait_for_tasks()``, the test helpers and the exit
drain read the account; nothing reaches into an executor's internals.

Adding and removing a record are single dict operations, atomic under the
GIL (and under the per-object locks of free-threaded builds), so the hot path
takes no lock here. Readers copy the values and wait on the records' Futures.
"""

from __future__ import annotations

import concurrent.futures
import functools
import itertools
import os
import reprlib
import threading
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from djthreads._run import Carried

# Work.kind: who accepted the work. wait_for_tasks() waits for the first
# three; the test helpers and the exit drain for all of them.
POOL = "default pool"
BACKEND = "ThreadPoolBackend"
DURABLE = "DurableBackend"
EXECUTOR = "DjangoExecutor"
THREAD = "DjangoThread"
PROCESS = "DjangoProcess"  # runs in a child process, never in this account
EAGER = "eager"  # runs inline in its caller, never in this account

# Work.state
QUEUED = "queued"
DEFERRED = "deferred"  # a Tasks backend task whose run_after is still ahead
RUNNING = "running"

_numbers = itertools.count(1)
_outstanding: dict[int, Work] = {}


class _Running(threading.local):
    # A class default rather than getattr(local, name, None): a thread that
    # never set the attribute would pay a raised AttributeError (~0.4 µs) on
    # every read, and submitting threads read it once a task.
    work: Work | None = None  # the Work this thread runs now (innermost), set by run_task


running = _Running()

Listener = Callable[[str, "Work", "BaseException | None"], None]
# Called in the task's thread with ("started", work, None) and
# ("finished", work, exception or None). Copied on write, read without a lock
# (run_task reads it directly: one attribute read per task when empty).
listeners: tuple[Listener, ...] = ()
_listeners_lock = threading.Lock()  # serialises writers of listeners

_repr = reprlib.Repr()
_repr.maxstring = 40
_repr.maxother = 40
ARGS_LIMIT = 120  # characters of a task's arguments shown in a log line


class Work:
    """One task: what to call, with what, its Future, and where it stands.

    Created in the accepting thread. ``parent`` is the task the creating
    thread was running (None outside tasks); ``root`` is the number of the
    outermost such task, so "everything submitted so far, and what it
    submits in turn" is ``root <= mark``.
    """

    __slots__ = (
        "args",
        "carried",
        "fn",
        "future",
        "ident",
        "kind",
        "kwargs",
        "number",
        "owner",
        "parent",
        "root",
        "state",
    )

    def __init__(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        carried: Carried,
        kind: str,
        future: concurrent.futures.Future[Any] | None = None,
        ident: str | None = None,
    ) -> None:
        self.fn = fn
        self.args = args
        self.kwargs = kwargs
        self.carried = carried
        self.kind = kind
        self.future: concurrent.futures.Future[Any] = (
            concurrent.futures.Future() if future is None else future
        )
        self.number = number = next(_numbers)
        self.ident = ident
        self.state = QUEUED
        self.owner: Any = None  # the DjangoExecutor that runs it, once accepted
        parent = running.work
        self.parent = parent
        self.root: int = number if parent is None else parent.root

    @property
    def id(self) -> str:
        """A short id for log lines and signals (a Tasks result id for backend tasks)."""
        return self.ident if self.ident is not None else f"{self.number:x}"

    @property
    def name(self) -> str:
        """The qualified name of the function (a partial is named by what it wraps)."""
        return task_name(self.fn)

    def __str__(self) -> str:
        return self.describe()

    def describe(self, arguments: bool | None = None) -> str:
        """``name id=... args=...`` for a log line; arguments at most ~120 characters.

        ``arguments`` defaults to ``DJTHREADS['LOG_ARGUMENTS']``.
        """
        text = f"{self.name} id={self.id}"
        if arguments is None:
            from djthreads.conf import get_settings

            try:
                arguments = get_settings().LOG_ARGUMENTS
            except Exception:  # an invalid setting must not hide the failure being logged
                arguments = False
        if arguments:
            text += " args=" + format_arguments(self.args, self.kwargs)
        return text


def format_arguments(args: Iterable[Any], kwargs: dict[str, Any]) -> str:
    """A bounded repr of call arguments: ``(1, 'x', key=...)``, at most ARGS_LIMIT chars."""
    parts = [_repr.repr(arg) for arg in args]
    if len(parts) == 1 and not kwargs:
        parts.append("")  # a one-tuple reads as one: ('x',)
    parts += [f"{key}={_repr.repr(value)}" for key, value in kwargs.items()]
    text = "(" + ", ".join(parts).rstrip() + ")"
    if len(text) > ARGS_LIMIT:
        text = text[: ARGS_LIMIT - 4] + "...)"
    return text


def task_name(fn: object) -> str:
    """Return ``module.qualname`` of a callable (unwrapping partials), or its type's."""
    while isinstance(fn, functools.partial):
        fn = fn.func
    qualname = getattr(fn, "__qualname__", None)
    if qualname is None:
        # An instance with __call__: its class names it, never a repr with an address.
        kind = type(fn)
        return f"{kind.__module__}.{kind.__qualname__}"
    module = getattr(fn, "__module__", None)
    return f"{module}.{qualname}" if module else str(qualname)


# -- the account -------------------------------------------------------------------


def add(work: Work) -> None:
    """Count ``work`` as outstanding (runs in the accepting thread)."""
    _outstanding[work.number] = work


def end(work: Work) -> None:
    """Count ``work`` as ended, whatever its outcome (any thread)."""
    _outstanding.pop(work.number, None)


def outstanding() -> list[Work]:
    """Every record accepted and not ended, oldest first."""
    return sorted(_outstanding.values(), key=_by_number)


def _by_number(work: Work) -> int:
    return work.number


def mark() -> int:
    """A number no work accepted so far exceeds (see ``Work.root``)."""
    return next(_numbers)


def current() -> Work | None:
    """The Work the calling thread is running now (innermost), or None."""
    return running.work


def _chain() -> set[int]:
    # The calling task and every task it runs inside of (through parents):
    # waiting for them from here could never end.
    numbers = set()
    work = current()
    while work is not None:
        numbers.add(work.number)
        work = work.parent
    return numbers


Helper = Callable[[list[Work]], None]
# Registered by djthreads.executor and djthreads._taskqueue: each runs, in the
# calling pool worker, queued work that a waiter there needs (of the worker's
# own pool, or ready Tasks backend work), so waiting inside a task cannot
# deadlock on work queued behind the waiter.
helpers: list[Helper] = []


def wait(
    timeout: float | None = None,
    select: Callable[[Work], bool] | None = None,
    *,
    upto: int | None = None,
) -> list[Work]:
    """Block until no selected work is outstanding; return what is left at the timeout.

    Runs in the calling thread. Deferred tasks are not waited for. With
    ``upto`` (a :func:`mark`), only work accepted before the mark and the work
    it submits in turn is waited for; new work of others is not. The calling
    task and the tasks running it are never waited for. Called from a pool
    worker, queued work of the same pool is run right here rather than waited
    for.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    skip = _chain()
    while True:
        pending = [
            work
            for work in list(_outstanding.values())
            if work.state != DEFERRED
            and not work.future.done()
            and (upto is None or work.root < upto)
            and work.number not in skip
            and (select is None or select(work))
        ]
        if not pending:
            return []
        if skip:
            for helper in helpers:
                helper(pending)
        remaining = None if deadline is None else deadline - time.monotonic()
        if remaining is not None and remaining <= 0:
            return sorted(pending, key=_by_number)
        concurrent.futures.wait(
            [work.future for work in pending],
            remaining,
            return_when=concurrent.futures.ALL_COMPLETED,
        )


def raise_if_unfinished(left: list[Work], timeout: float | None) -> None:
    """Raise TimeoutError naming each unfinished work of ``left``."""
    if left:
        raise TimeoutError(
            f"{len(left)} djthreads task(s) still running after {timeout} s: "
            + "; ".join(f"{work.describe()} ({work.kind}, {work.state})" for work in left)
        )


# -- listeners (the test helpers) ------------------------------------------------


def listen(listener: Listener) -> None:
    """Call ``listener`` in each task's thread when a task starts and finishes."""
    global listeners
    with _listeners_lock:
        listeners = (*listeners, listener)


def unlisten(listener: Listener) -> None:
    """Stop calling ``listener``."""
    global listeners
    with _listeners_lock:
        listeners = tuple(item for item in listeners if item is not listener)


def notify(event: str, work: Work, exception: BaseException | None) -> None:
    """Tell every listener (called only when there is one)."""
    for listener in listeners:
        listener(event, work, exception)


def _after_fork_in_child() -> None:
    # The parent's tasks do not run in the child.
    global _outstanding
    _outstanding = {}


os.register_at_fork(after_in_child=_after_fork_in_child)
