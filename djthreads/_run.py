"""Run one task in the current thread and clean up after it.

This is the only place that knows how a djthreads task runs: every path (a
DjangoThread, a pool task, a nested inline task, a Tasks backend task, map)
calls :func:`run_task` with the task's one record, a ``djthreads._account.Work``.
"""

from __future__ import annotations

import contextvars
import inspect
import logging
import os
import threading
import time
import types
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, TypeGuard, TypeVar

from asgiref.sync import async_to_sync
from django.db import connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.signals import connection_created
from django.dispatch import Signal

from djthreads import _account, _request_state
from djthreads._account import BACKEND, RUNNING, Work, task_name
from djthreads._request_state import RequestState
from djthreads.signals import task_finished, task_started

logger = logging.getLogger("djthreads")

R = TypeVar("R")

# asgiref names the ContextVar behind every non-thread-critical Local this way;
# Django keeps the active translation, time zone, urlconf and script prefix in
# such Locals. Older asgiref shares one dict between copied contexts (an
# activate() in a task would leak back into the submitter), asgiref >= 3.13
# hides it from other threads. We drop it from the copy on every version and
# carry those four values explicitly instead (RequestState).
_ASGIREF_LOCAL = "asgiref.local"


class _ThreadConnections(threading.local):
    # The database wrappers this thread connected and has not cleaned up yet
    # (see _note_opened). A thread that connected nothing has nothing to
    # close. A class default, so that such a thread's check after every task
    # is not a raised AttributeError.
    conns: list[BaseDatabaseWrapper] | None = None


_state = _ThreadConnections()


def _note_opened(connection: BaseDatabaseWrapper, **kwargs: Any) -> None:
    # Sent by Django's connect() in the thread that connects (pool or not).
    # Looking up a thread's connections through ``connections`` costs a raised
    # AttributeError per alias the thread never used (asgiref's Local): several
    # µs on every task, most of a no-op task's overhead. Keeping the wrappers
    # this thread connected makes cleanup a walk over a short list.
    conns = _state.conns
    if conns is None:
        conns = _state.conns = []
    if any(conn is connection for conn in conns):
        return
    # Only this thread's own wrapper: one shared from another thread (Django's
    # live server tests) is that thread's to close, as close_all() would. An
    # unshared wrapper used outside its thread fails Django's thread check
    # right after connecting, and again when we close it (logged).
    if connection.allow_thread_sharing:
        try:
            if connections[connection.alias] is not connection:
                return
        except Exception:  # a wrapper built outside DATABASES: not ours to close
            return
    conns.append(connection)


connection_created.connect(_note_opened, dispatch_uid="djthreads._run._note_opened")


def _forget_after_fork() -> None:
    # The child's copy of the forking thread's wrappers holds the parent's
    # sockets: closing them would end the parent's sessions (DjangoProcess
    # sets them aside instead).
    _state.conns = []


os.register_at_fork(after_in_child=_forget_after_fork)


class Carried:
    """What crosses from the submitting thread into the task's thread.

    ``context`` is a snapshot of the submitter's contextvars; ``state`` its
    per-request Django state, or None when the submitter never set an asgiref
    Local (so every one of those values is at its default). Never entered
    itself: one Carried serves every task captured from the same state, and
    :func:`run_task` runs each task in its own copy of the context.
    """

    __slots__ = ("context", "state")

    def __init__(self, context: contextvars.Context, state: RequestState | None = None) -> None:
        self.context = context
        self.state = state


def _set_all(pairs: list[tuple[contextvars.ContextVar[Any], Any]]) -> None:
    for var, value in pairs:
        var.set(value)


class _LastCapture(threading.local):
    # Per submitting thread: the context items of its last capture (compared
    # by identity), the settings generation then, and the Carried built from
    # them. A request or a loop submits many tasks from one unchanged context;
    # handing them one Carried keeps a new Context and Carried per task out of
    # the queue, where the gc traverses every queued task's objects (measured:
    # each object a queued task keeps alive costs a no-op task more than the
    # rest of capture()). Keeps the last context's values alive until the
    # thread's next capture or its end.
    pairs: tuple[tuple[contextvars.ContextVar[Any], Any], ...] = ()
    generation = -1
    carried: Carried | None = None


_last = _LastCapture()
_MISSING = object()


def _same_items(context: contextvars.Context, pairs: tuple[tuple[Any, Any], ...]) -> bool:
    # Identity, not ==: a task must get the very objects its submitter holds.
    # A plain loop: all() over a generator costs 0.4 µs more a submit here.
    if len(context) != len(pairs):
        return False
    for var, value in pairs:  # noqa: SIM110
        if context.get(var, _MISSING) is not value:
            return False
    return True


def capture() -> Carried:
    """Capture the calling thread's contextvars and per-request Django state.

    Runs in the submitting thread, at submit time (or at DjangoThread.start()).
    Returns the thread's previous Carried while its context holds the same
    objects and no setting changed.
    """
    context = contextvars.copy_context()
    last = _last
    carried = last.carried
    generation = _request_state.generation
    if carried is not None and last.generation == generation and _same_items(context, last.pairs):
        return carried
    pairs = tuple(context.items())
    storages = [value for var, value in pairs if var.name == _ASGIREF_LOCAL]
    if not storages:
        # No asgiref Local was ever set in this context, so no translation,
        # time zone, urlconf or script prefix is active here. Skipping the
        # four reads saves several µs a submit (asgiref's lock and contextvar
        # lookup each).
        carried = Carried(context)
    else:
        fresh = contextvars.Context()
        others = [(var, value) for var, value in pairs if var.name != _ASGIREF_LOCAL]
        if others:
            fresh.run(_set_all, others)
        carried = Carried(fresh, RequestState.of(storages))
    # Older asgiref writes into one dict per Local in place, so the same
    # objects may hold another language: compared by content (RequestState.of).
    if not any(type(storage) is dict for storage in storages):
        last.pairs, last.generation, last.carried = pairs, generation, carried
    return carried


_CoroutineType = types.CoroutineType


def check_callable(fn: object, where: str, usage: str = "") -> None:
    """Refuse, with a TypeError, what cannot be run as a task's function.

    Runs in the submitting thread at submit time (or when decorating, or at
    DjangoThread()), so the mistake fails at its call site rather than in a
    worker. A coroutine object (``submit(fetch(url))``) is the usual one: it
    gets a message saying to pass the async function instead. ``usage`` is
    added to the message for anything else that is not callable.
    """
    if callable(fn):
        return
    if inspect.isawaitable(fn):
        raise TypeError(
            f"{where} got the coroutine object {fn!r}, not a function. Pass the async "
            "function itself and its arguments separately, e.g. (fetch, url) rather than "
            "fetch(url): djthreads calls it in the worker and runs it to completion there."
        )
    raise TypeError(f"{where} expects a function, got {fn!r}.{usage}")


async def _await(coroutine: Coroutine[Any, Any, R]) -> R:
    return await coroutine


def run_coroutine(coroutine: Coroutine[Any, Any, R]) -> R:
    """Run a coroutine to completion from the calling (sync) thread.

    Through asgiref's ``async_to_sync``: the coroutine runs in an event loop
    of its own thread, in a copy of the calling context, while this thread
    runs its ``sync_to_async`` calls (thread-sensitive, the default) — so the
    database connections those open are this thread's, and closed with it.
    """
    return async_to_sync(_await)(coroutine)


def call(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> Any:
    """Call ``fn`` in the calling thread; run a coroutine it returns to completion."""
    result = fn(*args, **kwargs)
    # An async def function returned its coroutine: run it here. An exact type
    # check costs a few ns a task, where inspect.iscoroutinefunction() on every
    # submit would cost far more (and miss partials and wrappers).
    if type(result) is _CoroutineType:
        return run_coroutine(result)
    return result


def _send(signal: Signal, work: Work, **kwargs: Any) -> None:
    if not signal.receivers:
        return  # the usual case: skip naming the task for nobody
    for receiver, response in signal.send_robust(
        sender=work.fn, name=work.name, task_id=work.id, **kwargs
    ):
        if isinstance(response, BaseException):
            logger.error(
                "signal receiver=%s failed for task=%s",
                task_name(receiver),
                work.describe(),
                exc_info=response,
            )


def clean_exit(exc: BaseException) -> TypeGuard[SystemExit]:
    """Return True for ``sys.exit()``/``sys.exit(0)``: a clean end, as for a Process."""
    if not isinstance(exc, SystemExit):
        return False
    code = exc.code
    return code is None or (isinstance(code, int) and code == 0)


def _invoke(work: Work) -> Any:
    # Runs inside the task's own copied context, so an activate() here (or in
    # the task) is discarded with that context and never reaches a later task.
    state = work.carried.state
    if state is not None:
        state.apply()
    if task_started.receivers:  # the usual case: no receiver, no call
        _send(task_started, work, args=work.args, kwargs=work.kwargs)
    try:
        result = call(work.fn, work.args, work.kwargs)
    except BaseException as exc:
        if clean_exit(exc):
            # sys.exit(0) ends a multiprocessing.Process with exitcode 0 and
            # no report; here too it is a normal end, not a failure.
            logger.debug("task=%s ended with sys.exit(%r)", work.describe(), exc.code)
            _send(task_finished, work, result=None, exception=None)
        else:
            # A Tasks backend task was logged by Django's own task_finished receiver.
            if work.kind != BACKEND:
                logger.error("task=%s failed", work.describe(), exc_info=exc)
            _send(task_finished, work, result=None, exception=exc)
        raise
    if task_finished.receivers:
        _send(task_finished, work, result=result, exception=None)
    return result


def _discard_if_stuck(conn: BaseDatabaseWrapper) -> None:
    # A task that entered atomic() and never left it leaves the wrapper
    # "closed in transaction": Django's close() keeps the dead DB-API
    # connection so the atomic block can still exit, and ensure_connection()
    # never reconnects it. Drop the wrapper so the thread's next task gets a
    # fresh one instead of "connection already closed" forever.
    if conn.in_atomic_block and connections[conn.alias] is conn:
        del connections[conn.alias]


def close_connections(task: object) -> None:
    """Close every database connection the current thread opened.

    Like ``connections.close_all()`` for this thread, plus dropping a wrapper
    left inside an atomic block. A connection that fails to close is logged
    (naming ``task``, a Work or a string, formatted only then) and the others
    are still closed. A thread that opened no connection since its last
    cleanup returns at once.
    """
    conns = _state.conns
    if not conns:
        return
    _state.conns = []
    for conn in conns:
        try:
            conn.close()
        except Exception:
            logger.exception("closing connection alias=%s after task=%s failed", conn.alias, task)
        _discard_if_stuck(conn)


def _left_behind(conn: BaseDatabaseWrapper) -> str | None:
    """Say why ``conn`` (connected) must not be kept for the next task, or return None.

    Django only sees transactions it opened (atomic, set_autocommit); a raw
    ``BEGIN`` through a cursor, or a connection the server dropped, is visible
    only to the driver's transaction status.
    """
    if conn.in_atomic_block or conn.autocommit != conn.settings_dict["AUTOCOMMIT"]:
        return "a transaction open"
    return _driver_left_behind(conn.connection)


def _driver_left_behind(raw: Any) -> str | None:
    # psycopg2 first: its .info builds a new ConnectionInfo on every read.
    if hasattr(raw, "get_transaction_status"):  # psycopg2
        status = int(raw.get_transaction_status())
    else:
        info: Any = getattr(raw, "info", None)  # psycopg 3
        if not hasattr(info, "transaction_status"):  # sqlite3 and others
            return "a transaction open" if getattr(raw, "in_transaction", False) else None
        status = int(info.transaction_status)
    # Both drivers: 0 idle, 1 active, 2 in transaction, 3 in error, 4 unknown (bad connection).
    if status == 0:
        return None
    return "a broken connection" if status == 4 else "a transaction open"


def _idle(conn: BaseDatabaseWrapper) -> bool:
    # True when Django's end-of-request rules would keep ``conn`` as it is and
    # the driver reports no transaction: the state every connection kept for
    # reuse is left in, so a task that did not touch it costs a few attribute
    # reads instead of two method calls and a driver round of checks.
    close_at = conn.close_at
    return (
        not conn.in_atomic_block
        and not conn.errors_occurred
        and conn.autocommit == conn.settings_dict["AUTOCOMMIT"]
        and (close_at is None or time.monotonic() < close_at)
        and _driver_left_behind(conn.connection) is None
    )


def release_connections(task: object) -> None:
    """Keep the current thread's usable connections for its next task.

    Runs in a pool worker after each task when connection reuse is on. It
    applies Django's end-of-request rules to each connection
    (``close_if_unusable_or_obsolete``: CONN_MAX_AGE, errors, autocommit left
    changed; CONN_HEALTH_CHECKS then runs before the next query) and closes a
    connection whose task left a transaction open (the server rolls it back)
    or that the driver reports broken. Anything that fails is logged and that
    connection is closed.
    """
    conns = _state.conns
    if not conns:
        return
    kept = []
    for conn in conns:
        try:
            if conn.connection is not None and _idle(conn):
                # What close_if_unusable_or_obsolete() does to a connection it
                # keeps (an attribute django-stubs does not declare).
                conn.health_check_done = False  # type: ignore[attr-defined]
            else:
                reason = None if conn.connection is None else _left_behind(conn)
                if reason is not None:
                    logger.warning(
                        "task=%s left %s on alias=%s: closing the connection",
                        task,
                        reason,
                        conn.alias,
                    )
                    conn.close()
                else:
                    conn.close_if_unusable_or_obsolete()
            if conn.queries_log:
                conn.queries_log.clear()
        except Exception:
            logger.exception(
                "releasing connection alias=%s after task=%s failed", conn.alias, task
            )
            try:
                conn.close()
            except Exception:
                logger.exception("closing connection alias=%s failed", conn.alias)
        _discard_if_stuck(conn)
        if conn.connection is not None and not conn.in_atomic_block:
            kept.append(conn)
    _state.conns = kept


def clean_up(task: object, *, reuse: bool, failed: bool) -> None:
    """Deal with the calling thread's connections as at the end of a task.

    With ``reuse`` (a pool worker under DJTHREADS['REUSE_CONNECTIONS']) a
    task that returned keeps its usable connections for the worker's next
    task (:func:`release_connections`); otherwise, and after a task that
    raised, they are closed (:func:`close_connections`). ``task`` names the
    task in log lines.
    """
    if reuse and not failed:
        release_connections(task)
    else:
        close_connections(task)


def run_task(work: Work, *, close: bool = True, reuse: bool = False) -> Any:
    """Run ``work`` in the calling thread as a djthreads task and return its result.

    The function runs inside the work's captured context with the submitter's
    language, time zone, urlconf and script prefix active; a coroutine it
    returns (an ``async def`` function) is run to completion here
    (:func:`run_coroutine`). ``task_started``/``task_finished`` are sent
    around it, from this thread. An exception is logged once at ERROR on
    ``djthreads`` (naming the task, its id and its arguments) and re-raised;
    ``sys.exit()`` or ``sys.exit(0)`` is re-raised too, but as a clean end:
    logged at DEBUG and reported to ``task_finished`` with ``exception=None``.
    Afterwards, in a ``finally`` block, the thread's database connections are
    closed — unless ``close`` is false or this task runs nested inside another
    task on the same thread, whose own ``finally`` will close them. With
    ``reuse`` (a pool worker under DJTHREADS['REUSE_CONNECTIONS']) a task
    that returned keeps its usable connections for the worker's next task
    (:func:`release_connections`); one that raised still closes them. Does
    not settle ``work.future``.
    """
    running = _account.running
    previous = running.work
    running.work = work
    work.state = RUNNING
    listening = _account.listeners
    if listening:
        _account.notify("started", work, None)
    failed: BaseException | None = None
    try:
        return work.carried.context.copy().run(_invoke, work)
    except BaseException as exc:
        failed = exc
        raise
    finally:
        running.work = previous
        if close and previous is None:
            clean_up(work, reuse=reuse, failed=failed is not None)
        if listening:
            _account.notify("finished", work, failed)
        failed = None  # no cycle: exception -> traceback -> this frame


def run_into(work: Work, *, close: bool = True, reuse: bool = False) -> BaseException | None:
    """Run ``work`` with :func:`run_task` in the calling thread and settle its Future.

    Does nothing when the Future was cancelled before it started. Returns the
    exception the task raised (already set on the Future and logged), or None.
    """
    future = work.future
    if not future.set_running_or_notify_cancel():
        return None
    try:
        result = run_task(work, close=close, reuse=reuse)
    except BaseException as exc:
        future.set_exception(exc)
        return exc
    future.set_result(result)
    return None


def in_task() -> bool:
    """Return True when the calling thread is running a djthreads task."""
    return _account.running.work is not None
