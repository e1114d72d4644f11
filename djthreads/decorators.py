"""``run_async`` and ``submit``: run a function in the default pool."""

from __future__ import annotations

import concurrent.futures
import functools
from collections.abc import Callable, Coroutine
from typing import Any, ParamSpec, Protocol, TypeVar, overload

from django.db import DEFAULT_DB_ALIAS

from djthreads._dispatch import dispatch
from djthreads._run import check_callable

P = ParamSpec("P")
R = TypeVar("R")


@overload
def submit(
    fn: Callable[P, Coroutine[Any, Any, R]], /, *args: P.args, **kwargs: P.kwargs
) -> concurrent.futures.Future[R]: ...


@overload
def submit(
    fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs
) -> concurrent.futures.Future[R]: ...


def submit(fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> concurrent.futures.Future[Any]:
    """Run ``fn(*args, **kwargs)`` in the default pool and return its Future.

    The calling thread only captures its contextvars and per-request state
    (language, time zone, urlconf, script prefix); a pool worker runs the
    function and then closes its database connections. An ``async def``
    function is run to completion in the worker (through asgiref's
    ``async_to_sync``) and the Future gets what it returns; a coroutine
    object (``submit(fetch(url))``) is refused with a TypeError. Inside
    ``transaction.atomic()`` on the default database (with
    DJTHREADS['ON_COMMIT'], the default) the task waits for the commit; on
    rollback the Future is cancelled. An exception is logged and set on the
    Future. Raises QueueFullError when the pool is full and ON_FULL is "raise".
    For other options use ``run_async(on_commit=..., using=...)(fn)(*args)``.
    """
    check_callable(fn, "djthreads.submit")
    return dispatch(fn, args, kwargs, on_commit=None, using=DEFAULT_DB_ALIAS)


class _Decorator(Protocol):
    """The type of ``run_async(on_commit=..., using=...)``: a decorator for any function."""

    @overload
    def __call__(
        self, fn: Callable[P, Coroutine[Any, Any, R]], /
    ) -> Callable[P, concurrent.futures.Future[R]]: ...

    @overload
    def __call__(self, fn: Callable[P, R], /) -> Callable[P, concurrent.futures.Future[R]]: ...


@overload
def run_async(
    fn: Callable[P, Coroutine[Any, Any, R]], /
) -> Callable[P, concurrent.futures.Future[R]]: ...


@overload
def run_async(fn: Callable[P, R], /) -> Callable[P, concurrent.futures.Future[R]]: ...


@overload
def run_async(*, on_commit: bool | None = None, using: str = DEFAULT_DB_ALIAS) -> _Decorator: ...


def run_async(
    fn: Callable[P, R] | None = None,
    /,
    *,
    on_commit: bool | None = None,
    using: str = DEFAULT_DB_ALIAS,
) -> Any:
    """Decorate a function so that calling it runs it in the default pool.

    Use bare (``@run_async``) or configured (``@run_async(on_commit=False,
    using="other")``). A call captures the caller's contextvars and
    per-request state (language, time zone, urlconf, script prefix) and
    returns a ``concurrent.futures.Future``; a pool worker runs the function
    and closes its database connections afterwards. With on_commit
    (default: DJTHREADS['ON_COMMIT']) a call inside ``transaction.atomic()`` on
    ``using`` is held until the outermost commit, and cancelled on rollback.
    An ``async def`` function is run to completion in the worker (through
    asgiref's ``async_to_sync``), and the Future gets what it returns. The
    original function stays reachable as ``__wrapped__``.
    """
    if on_commit is not None and not isinstance(on_commit, bool):
        raise TypeError(
            f"run_async(on_commit=...) must be True, False or None, got {on_commit!r}."
        )
    if not isinstance(using, str):
        raise TypeError(f"run_async(using=...) must be a database alias, got {using!r}.")

    def decorate(func: Callable[P, R]) -> Callable[P, concurrent.futures.Future[R]]:
        check_callable(
            func, "run_async", " Use @run_async or @run_async(on_commit=..., using=...)."
        )

        def wrapper(*args: P.args, **kwargs: P.kwargs) -> concurrent.futures.Future[R]:
            return dispatch(func, args, kwargs, on_commit=on_commit, using=using)

        return functools.update_wrapper(wrapper, func)

    if fn is None:
        return decorate
    return decorate(fn)
