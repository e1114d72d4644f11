"""``run_async`` and ``submit``: run a function in the default pool."""

from __future__ import annotations

import concurrent.futures
import functools
import inspect
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar, overload

from django.db import DEFAULT_DB_ALIAS

from djthreads._dispatch import dispatch

P = ParamSpec("P")
R = TypeVar("R")


def submit(
    fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs
) -> concurrent.futures.Future[R]:
    """Run ``fn(*args, **kwargs)`` in the default pool and return its Future.

    The calling thread only captures its contextvars and language; a pool
    worker runs the function and then closes its database connections. Inside
    ``transaction.atomic()`` on the default database (with
    DJTHREADS['ON_COMMIT'], the default) the task waits for the commit; on
    rollback the Future is cancelled. An exception is logged and set on the
    Future. Raises QueueFullError when the pool is full and ON_FULL is "raise".
    For other options use ``run_async(on_commit=..., using=...)(fn)(*args)``.
    """
    return dispatch(fn, args, kwargs, on_commit=None, using=DEFAULT_DB_ALIAS)


def _check_function(fn: object) -> None:
    if inspect.iscoroutinefunction(fn):
        raise TypeError(
            f"run_async cannot run the coroutine function {fn!r}: pool threads have no "
            "event loop. Await it, or wrap it in a sync function with "
            "asgiref.sync.async_to_sync and decorate that."
        )
    if not callable(fn):
        raise TypeError(
            f"run_async expects a function, got {fn!r}. "
            "Use @run_async or @run_async(on_commit=..., using=...)."
        )


@overload
def run_async(fn: Callable[P, R], /) -> Callable[P, concurrent.futures.Future[R]]: ...


@overload
def run_async(
    *, on_commit: bool | None = None, using: str = DEFAULT_DB_ALIAS
) -> Callable[[Callable[P, R]], Callable[P, concurrent.futures.Future[R]]]: ...


def run_async(
    fn: Callable[P, R] | None = None,
    /,
    *,
    on_commit: bool | None = None,
    using: str = DEFAULT_DB_ALIAS,
) -> Any:
    """Decorate a function so that calling it runs it in the default pool.

    Use bare (``@run_async``) or configured (``@run_async(on_commit=False,
    using="other")``). A call captures the caller's contextvars and language
    and returns a ``concurrent.futures.Future``; a pool worker runs the
    function and closes its database connections afterwards. With on_commit
    (default: DJTHREADS['ON_COMMIT']) a call inside ``transaction.atomic()`` on
    ``using`` is held until the outermost commit, and cancelled on rollback.
    The original function stays reachable as ``__wrapped__``.
    """
    if on_commit is not None and not isinstance(on_commit, bool):
        raise TypeError(
            f"run_async(on_commit=...) must be True, False or None, got {on_commit!r}."
        )
    if not isinstance(using, str):
        raise TypeError(f"run_async(using=...) must be a database alias, got {using!r}.")

    def decorate(func: Callable[P, R]) -> Callable[P, concurrent.futures.Future[R]]:
        _check_function(func)

        def wrapper(*args: P.args, **kwargs: P.kwargs) -> concurrent.futures.Future[R]:
            return dispatch(func, args, kwargs, on_commit=on_commit, using=using)

        return functools.update_wrapper(wrapper, func)

    if fn is None:
        return decorate
    return decorate(fn)
