"""Hand a task to the default executor now, or when the transaction commits."""

from __future__ import annotations

import concurrent.futures
import functools
import logging
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

from django.db import connections, transaction

from djthreads import _eager
from djthreads._account import EAGER, POOL, Work
from djthreads._default import get_executor
from djthreads._run import capture
from djthreads._worker import new_future
from djthreads.conf import get_settings

logger = logging.getLogger("djthreads")

R = TypeVar("R")


def _cancel_rolled_back(work: Work) -> None:
    # Runs in whichever thread dropped the on_commit callback (rollback).
    if work.future.cancel():
        work.future.set_running_or_notify_cancel()  # wake concurrent.futures.wait()
        logger.info("task=%s cancelled: its transaction rolled back", work.describe())


class _Held:
    """The callable registered with ``transaction.on_commit`` for held work.

    Django has no rollback hook, but it drops its callbacks on rollback (and on
    a savepoint rollback), and then this object's finalizer calls
    ``on_rollback``. The finalizer holds no reference to this object, so with
    gc disabled too the drop frees it and the rollback action runs at once.
    """

    __slots__ = ("__weakref__", "action", "finalizer")

    def __init__(self, action: Callable[[], None], on_rollback: Callable[[], None]) -> None:
        self.action = action
        self.finalizer = weakref.finalize(self, on_rollback)

    def __call__(self) -> None:
        # Runs in the committing thread, after the commit.
        self.finalizer.detach()
        self.action()


def in_transaction(on_commit: bool, using: str) -> bool:
    """Return True when work submitted now must wait for ``using``'s commit.

    Runs in the submitting thread; the connection is only looked at when
    on_commit is on.
    """
    return on_commit and connections[using].in_atomic_block


def hold_until_commit(
    using: str, action: Callable[[], None], on_rollback: Callable[[], None]
) -> None:
    """Call ``action`` after the outermost commit on ``using``, or ``on_rollback``.

    ``on_rollback`` runs, in the rolling-back thread, when Django drops the
    callback: a rollback, or a rollback of the savepoint it was registered in.
    Neither callable may reference the other's holder (see ``_Held``).
    """
    transaction.on_commit(_Held(action, on_rollback), using=using)


def _submit_after_commit(work: Work, mode: _eager._Mode | None) -> None:
    # Runs in the committing thread, after the commit.
    if mode is not None:
        # Eager (tests): run in the committing thread, as Django runs any
        # on_commit callback; a propagating exception fails the commit's caller.
        _eager.run_inline(work, mode)
        return
    try:
        get_executor().submit_work(work)
    except Exception as exc:
        # Raising here would fail the code after the user's commit; the
        # error goes to the Future and the log instead.
        logger.exception("task=%s could not be queued after commit", work.describe())
        if work.future.set_running_or_notify_cancel():
            work.future.set_exception(exc)


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
    mode = _eager.current()
    work = Work(fn, args, kwargs, capture(), POOL if mode is None else EAGER, new_future())
    if mode is None:
        held = in_transaction(on_commit, using)
    else:
        held = on_commit and _eager.in_code_atomic_block(using)
    if held:
        hold_until_commit(
            using,
            functools.partial(_submit_after_commit, work, mode),
            functools.partial(_cancel_rolled_back, work),
        )
    elif mode is not None:
        _eager.run_inline(work, mode)
    else:
        get_executor().submit_work(work)
    return work.future
