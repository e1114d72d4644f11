"""Hand a task to the default executor now, or when the transaction commits."""

from __future__ import annotations

import concurrent.futures
import logging
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

from django.db import connections, transaction

from djthreads import _eager
from djthreads._default import get_executor
from djthreads._run import Carried, capture, task_name
from djthreads.conf import get_settings

logger = logging.getLogger("djthreads")

R = TypeVar("R")


def _cancel_rolled_back(future: concurrent.futures.Future[Any], name: str) -> None:
    # Runs in whichever thread dropped the on_commit callback (rollback).
    if future.cancel():
        future.set_running_or_notify_cancel()  # wake concurrent.futures.wait()
        logger.info("task=%s cancelled: its transaction rolled back", name)


class _OnCommit:
    """The callable registered with ``transaction.on_commit`` for a held task.

    Django has no rollback hook, but it drops its callbacks on rollback (and on
    a savepoint rollback), and then this object's finalizer cancels the Future.
    The finalizer holds no reference to this object, so with gc disabled too
    the drop frees it and cancels at once.
    """

    __slots__ = (
        "__weakref__",
        "args",
        "carried",
        "finalizer",
        "fn",
        "future",
        "kwargs",
        "mode",
    )

    def __init__(
        self,
        future: concurrent.futures.Future[Any],
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        carried: Carried,
        mode: _eager._Mode | None = None,
    ) -> None:
        self.future = future
        self.mode = mode  # eager mode at submit time: run inline after the commit
        self.fn = fn
        self.args = args
        self.kwargs = kwargs
        self.carried = carried
        self.finalizer = weakref.finalize(self, _cancel_rolled_back, future, task_name(fn))

    def __call__(self) -> None:
        # Runs in the committing thread, after the commit.
        self.finalizer.detach()
        if self.mode is not None:
            # Eager (tests): run in the committing thread, as Django runs any
            # on_commit callback; a propagating exception fails the commit's caller.
            _eager.run_inline(
                self.future, self.fn, self.args, self.kwargs, self.carried, self.mode
            )
            return
        try:
            get_executor().submit_future(
                self.future, self.fn, self.args, self.kwargs, self.carried
            )
        except Exception as exc:
            # Raising here would fail the code after the user's commit; the
            # error goes to the Future and the log instead.
            logger.exception("task=%s could not be queued after commit", task_name(self.fn))
            if not self.future.done():
                self.future.set_exception(exc)


def dispatch(
    fn: Callable[..., R],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    *,
    on_commit: bool | None,
    using: str,
) -> concurrent.futures.Future[R]:
    """Submit ``fn`` to the default executor, held until commit when in a transaction.

    Runs in the submitting thread. With on_commit (default: DJTHREADS['ON_COMMIT'])
    and an atomic block open on ``using``, the task waits for the outermost
    commit; on rollback its Future is cancelled and it never runs. In eager
    mode (``djthreads.eager()``, DJTHREADS['EAGER']) the task runs inline in
    the calling thread instead of the pool, once any atomic block of the code
    under test has committed (see ``djthreads._eager``).
    """
    if on_commit is None:
        on_commit = get_settings().ON_COMMIT
    future: concurrent.futures.Future[R] = concurrent.futures.Future()
    carried = capture()
    mode = _eager.current()
    if mode is None:
        in_atomic = connections[using].in_atomic_block
    else:
        in_atomic = _eager.in_code_atomic_block(using)
    if on_commit and in_atomic:
        transaction.on_commit(_OnCommit(future, fn, args, kwargs, carried, mode), using=using)
    elif mode is not None:
        _eager.run_inline(future, fn, args, kwargs, carried, mode)
    else:
        get_executor().submit_future(future, fn, args, kwargs, carried)
    return future
