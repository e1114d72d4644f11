"""DjangoThread: a thread that closes its database connections when it ends."""

from __future__ import annotations

import functools
import threading
import types
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from djthreads import _account
from djthreads._account import THREAD, Work
from djthreads._run import capture, in_task, run_task


def _run_target(self: DjangoThread) -> None:
    """Run the target; override ``run()`` in a subclass as with ``Thread.run``."""
    if self._djthreads_target is not None:
        self._target_result = self._djthreads_target(
            *self._djthreads_args, **self._djthreads_kwargs
        )


def _hygienic(run: Callable[[DjangoThread], Any]) -> Callable[[DjangoThread], None]:
    """Wrap a ``run`` method so it runs as a djthreads task in the new thread."""

    @functools.wraps(run)
    def wrapper(self: DjangoThread) -> None:
        if in_task() or threading.current_thread() is not self:
            # A subclass's run() calling super().run(): the outer call owns
            # the context, the outcome and the connection cleanup. Or run()
            # called directly, as Process.run() may be: the caller's thread is
            # not ours, so its connections are not ours to close.
            run(self)
            return
        work = self._work
        if work is None:  # run by a subclass's start() that skipped ours
            work = self._make_work(run)
        else:
            work.fn, work.args, work.kwargs = self._call(run)
        try:
            returned = run_task(work)
        except BaseException as exc:
            # run_task logged it once; keep it off threading.excepthook.
            self.exception = exc
            self.exitcode = 1
            work.future.set_exception(exc)
            _account.end(work)
        else:
            if work.fn is self._djthreads_target or self._djthreads_target is None:
                self.result = returned
            else:
                self.result = self._target_result
            self.exitcode = 0
            work.future.set_result(self.result)
            _account.end(work)

    return wrapper


class DjangoThread(threading.Thread):
    """A ``threading.Thread`` whose work ends with ``connections.close_all()``.

    A drop-in for ``multiprocessing.Process(target=..., args=...)`` with
    ``start()``/``join()``. The new thread runs ``target`` (or an overridden
    ``run()``) in a copy of the starting thread's contextvars and language,
    then closes its database connections in a ``finally`` block. After
    ``join()``: ``result`` is what the target (or ``run()``) returned,
    ``exception`` what it raised (logged once at ERROR on ``djthreads``, and
    not re-raised), ``exitcode`` None until finished, then 0 or 1 as on
    Process. Unlike a Process it shares memory and cannot be terminated.
    """

    result: Any
    exception: BaseException | None
    exitcode: int | None

    def __init__(
        self,
        group: None = None,
        target: Callable[..., object] | None = None,
        name: str | None = None,
        args: Iterable[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        *,
        daemon: bool | None = None,
    ) -> None:
        super().__init__(group, target, name, args, kwargs, daemon=daemon)
        # Our own copies: Thread keeps these in private attributes.
        self._djthreads_target = target
        self._djthreads_args = tuple(args)
        self._djthreads_kwargs = dict(kwargs or {})
        self._target_result: Any = None
        self._work: Work | None = None
        self.result = None
        self.exception = None
        self.exitcode = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "run" in cls.__dict__:
            cls.run = _hygienic(cls.__dict__["run"])

    def _call(
        self, run: Callable[[DjangoThread], Any]
    ) -> tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]:
        # Plain DjangoThread(target=...): name the target in logs and signals.
        target = self._djthreads_target
        if run is _run_target and target is not None:
            return target, self._djthreads_args, self._djthreads_kwargs
        return types.MethodType(run, self), (), {}

    def _make_work(self, run: Callable[[DjangoThread], Any]) -> Work:
        fn, args, kwargs = self._call(run)
        work = Work(fn, args, kwargs, capture(), THREAD)
        work.future.set_running_or_notify_cancel()
        return work

    def start(self) -> None:
        """Capture the calling thread's context, count the thread as outstanding, start it."""
        work = self._make_work(type(self).run.__wrapped__)  # type: ignore[attr-defined]
        self._work = work
        _account.add(work)
        try:
            super().start()
        except BaseException:
            _account.end(work)
            self._work = None
            raise

    run = _hygienic(_run_target)
