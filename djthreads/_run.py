"""Run one task in the current thread and clean up after it.

This is the only place that knows how a djthreads task runs: every path (a
DjangoThread, a pool task, a nested inline task) calls :func:`run_task`.
"""

from __future__ import annotations

import contextvars
import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from django.conf import settings
from django.db import connections
from django.dispatch import Signal
from django.utils import translation

from djthreads.signals import task_finished, task_started

logger = logging.getLogger("djthreads")

R = TypeVar("R")

# asgiref names the ContextVar behind every non-thread-critical Local this way;
# Django keeps the active translation in one. Older asgiref shares one dict
# between copied contexts (an activate() in a task would leak back into the
# submitter), asgiref >= 3.13 hides it from other threads. We drop it from the
# copy on every version and carry the language explicitly instead.
_ASGIREF_LOCAL = "asgiref.local"

_state = threading.local()  # .depth: how many tasks this thread is running, nested


class Carried:
    """What crosses from the submitting thread into the task's thread."""

    __slots__ = ("context", "language")

    def __init__(self, context: contextvars.Context, language: str | None) -> None:
        self.context = context
        self.language = language


def _set_all(pairs: list[tuple[contextvars.ContextVar[Any], Any]]) -> None:
    for var, value in pairs:
        var.set(value)


def capture() -> Carried:
    """Capture the calling thread's contextvars and active language.

    Runs in the submitting thread, at submit time (or at DjangoThread.start()).
    """
    context = contextvars.copy_context()
    if any(var.name == _ASGIREF_LOCAL for var in context):
        pairs = [(var, value) for var, value in context.items() if var.name != _ASGIREF_LOCAL]
        context = contextvars.Context()
        context.run(_set_all, pairs)
    return Carried(context, translation.get_language())


def task_name(fn: object) -> str:
    """Return ``module.qualname`` of a callable, or its repr."""
    qualname = getattr(fn, "__qualname__", None)
    if qualname is None:
        return repr(fn)
    module = getattr(fn, "__module__", None)
    return f"{module}.{qualname}" if module else str(qualname)


def _send(signal: Signal, **kwargs: Any) -> None:
    for receiver, response in signal.send_robust(**kwargs):
        if isinstance(response, BaseException):
            logger.error(
                "signal receiver=%s failed for task=%s",
                task_name(receiver),
                kwargs["name"],
                exc_info=response,
            )


def _invoke(
    fn: Callable[..., R], args: tuple[Any, ...], kwargs: Mapping[str, Any], language: str | None
) -> R:
    # Runs inside the task's own copied context, so an activate() here is
    # discarded with that context and never reaches a later task.
    if language is None:
        translation.deactivate_all()
    elif language != settings.LANGUAGE_CODE:
        translation.activate(language)
    name = task_name(fn)
    _send(task_started, sender=fn, name=name, args=args, kwargs=kwargs)
    try:
        result = fn(*args, **kwargs)
    except BaseException as exc:
        logger.exception("task=%s failed", name)
        _send(task_finished, sender=fn, name=name, result=None, exception=exc)
        raise
    _send(task_finished, sender=fn, name=name, result=result, exception=None)
    return result


def close_connections(name: str) -> None:
    """Close every database connection the current thread opened.

    A connection that fails to close is logged and the others are still closed.
    """
    try:
        connections.close_all()
    except Exception:
        logger.exception("closing connections after task=%s failed", name)
        for conn in connections.all(initialized_only=True):
            try:
                conn.close()
            except Exception:
                logger.exception("closing connection alias=%s failed", conn.alias)


def run_task(
    fn: Callable[..., R],
    args: tuple[Any, ...],
    kwargs: Mapping[str, Any],
    carried: Carried,
    *,
    close: bool = True,
) -> R:
    """Run ``fn(*args, **kwargs)`` in the calling thread as a djthreads task.

    The function runs inside ``carried``'s context with the submitter's language
    active; ``task_started``/``task_finished`` are sent around it. An exception
    is logged once at ERROR on ``djthreads`` and re-raised. Afterwards, in a
    ``finally`` block, the thread's database connections are closed — unless
    ``close`` is false or this task runs nested inside another task on the same
    thread, whose own ``finally`` will close them.
    """
    depth: int = getattr(_state, "depth", 0)
    _state.depth = depth + 1
    try:
        return carried.context.run(_invoke, fn, args, kwargs, carried.language)
    finally:
        _state.depth = depth
        if close and depth == 0:
            close_connections(task_name(fn))


def in_task() -> bool:
    """Return True when the calling thread is running a djthreads task."""
    return getattr(_state, "depth", 0) > 0
