"""Eager mode: ``run_async``/``submit`` run the function inline in the caller.

For tests. ``eager()`` (a context manager and decorator) or
``DJTHREADS['EAGER'] = True`` turns it on; ``djthreads._dispatch`` asks
:func:`current` on every call and runs the task with :func:`run_inline`.
"""

from __future__ import annotations

import contextvars
import functools
import threading
from collections.abc import Callable
from types import TracebackType
from typing import ParamSpec, TypeVar

from django.db import connections

from djthreads._account import Work
from djthreads._run import run_into
from djthreads.conf import get_settings

P = ParamSpec("P")
R = TypeVar("R")


class _Mode:
    __slots__ = ("propagate",)

    def __init__(self, propagate: bool) -> None:
        self.propagate = propagate


_SETTING = _Mode(propagate=True)  # DJTHREADS['EAGER'] = True
# A ContextVar, not a thread-local: it follows the test into sync_to_async
# threads and into DjangoThreads started under eager(), as contextvars do.
_mode: contextvars.ContextVar[_Mode | None] = contextvars.ContextVar(
    "djthreads.eager", default=None
)
_inline = threading.local()  # .propagate: the inline task running now re-raises in its caller


class eager:
    """Run ``run_async``/``submit`` calls inline in the calling thread (for tests).

    Inside the block (or the decorated function) a call runs the function at
    once in the calling thread, inside the caller's transaction, and returns a
    completed Future. The caller's database connection is used and left open:
    the task sees the caller's uncommitted rows, as in ``django.test.TestCase``.
    On-commit semantics stay Django's: a call inside an atomic block of the
    code under test waits for its commit (or for
    ``TestCase.captureOnCommitCallbacks(execute=True)``) and then runs inline
    in the committing thread; the atomic blocks ``django.test.TestCase`` wraps
    around each test do not count. An exception is logged and re-raised in the
    caller (in the committing code for a held task), or with
    ``propagate=False`` only set on the Future. ``DjangoThread`` still starts a
    real thread. ``DJTHREADS['EAGER'] = True`` turns eager mode on everywhere,
    with ``propagate=True``.
    """

    def __init__(self, *, propagate: bool = True) -> None:
        if not isinstance(propagate, bool):
            raise TypeError(f"eager(propagate=...) must be True or False, got {propagate!r}.")
        self.propagate = propagate
        self._tokens: list[contextvars.Token[_Mode | None]] = []

    def __enter__(self) -> None:
        self._tokens.append(_mode.set(_Mode(self.propagate)))

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        _mode.reset(self._tokens.pop())

    def __call__(self, func: Callable[P, R]) -> Callable[P, R]:
        """Decorate ``func`` so each call runs in eager mode."""

        # A fresh eager() per call, so recursion and concurrent calls from
        # several threads never share one token stack.
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            with eager(propagate=self.propagate):
                return func(*args, **kwargs)

        return functools.update_wrapper(wrapper, func)


def current() -> _Mode | None:
    """Return the eager mode of the calling context, or None when tasks go to the pool."""
    mode = _mode.get()
    if mode is None and get_settings().EAGER:
        return _SETTING
    return mode


def in_code_atomic_block(using: str) -> bool:
    """Return True inside an atomic block on ``using`` opened by the code under test.

    The blocks ``django.test.TestCase`` opens around a class and each test are
    marked ``_from_testcase``; Django's ``atomic(durable=True)`` skips them the
    same way (they are always the outermost, so checking the innermost block
    is enough).
    """
    conn = connections[using]
    if not conn.in_atomic_block:
        return False
    blocks = conn.atomic_blocks
    return not blocks or not getattr(blocks[-1], "_from_testcase", False)


def run_inline(work: Work, mode: _Mode) -> None:
    """Run a task in the calling thread and settle its Future.

    The caller's connections stay open (``run_task(close=False)``). An
    exception is logged by ``run_task``, set on the Future and re-raised when
    ``mode.propagate`` (a BaseException that is not an Exception always is).
    """
    previous = getattr(_inline, "propagate", False)
    _inline.propagate = mode.propagate
    try:
        exc = run_into(work, close=False)
    finally:
        _inline.propagate = previous
    if exc is not None and (mode.propagate or not isinstance(exc, Exception)):
        raise exc


def raising_in_caller() -> bool:
    """Return True while an inline task whose exception re-raises in its caller runs.

    The test helpers ask this from a ``task_finished`` receiver: the test
    already sees such an exception, so it is not a stray task error.
    """
    return bool(getattr(_inline, "propagate", False))
