"""DjangoThread: a thread that closes its database connections when it ends."""

from __future__ import annotations

import functools
import os
import threading
import types
import weakref
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NoReturn

from djthreads import _account
from djthreads._account import THREAD, Work
from djthreads._run import call, capture, check_callable, clean_exit, in_task, run_task
from djthreads.exceptions import UnstoppableThreadError


def _run_target(self: DjangoThread) -> None:
    """Run the target; override ``run()`` in a subclass as with ``Thread.run``."""
    if self._djthreads_target is not None:
        self._target_result = call(
            self._djthreads_target, self._djthreads_args, self._djthreads_kwargs
        )


def _exitcode(exc: BaseException) -> int:
    # multiprocessing's Process._bootstrap: SystemExit without a code -> 0, an
    # int code -> that int, anything else (a message) -> 1; any other exception -> 1.
    if isinstance(exc, SystemExit):
        if exc.code is None:
            return 0
        if isinstance(exc.code, int):
            return int(exc.code)
    return 1


def _hygienic(run: Callable[[DjangoThread], Any]) -> Callable[[DjangoThread], None]:
    """Wrap a ``run`` method so it runs as a djthreads task in the new thread."""

    @functools.wraps(run)
    def wrapper(self: DjangoThread) -> None:
        if in_task() or threading.current_thread() is not self:
            # A subclass's run() calling super().run(): the outer call owns
            # the context, the outcome and the connection cleanup. Or run()
            # called directly, as Process.run() may be: the caller's thread is
            # not ours, so its connections are not ours to close.
            call(run, (self,), {})
            return
        work = self._work
        if work is None:  # run by a subclass's start() that skipped ours
            work = self._make_work(run)
        else:
            work.fn, work.args, work.kwargs = self._call(run)
        try:
            returned = run_task(work)
        except BaseException as exc:
            # run_task logged it once (a clean sys.exit() only at DEBUG); keep
            # it off threading.excepthook.
            self.exception = None if clean_exit(exc) else exc
            self._exitcode = _exitcode(exc)
            work.future.set_exception(exc)
        else:
            if work.fn is self._djthreads_target or self._djthreads_target is None:
                self.result = returned
            else:
                self.result = self._target_result
            self._exitcode = 0
            work.future.set_result(self.result)
        finally:
            _account.end(work)
            self._ended()

    return wrapper


class DjangoThread(threading.Thread):
    """A ``threading.Thread`` whose work ends with ``connections.close_all()``.

    A drop-in for ``multiprocessing.Process(target=..., args=...)``. The new
    thread runs ``target`` (or an overridden ``run()``) in a copy of the
    starting thread's contextvars, language, time zone, urlconf and script
    prefix, then closes its database connections in a ``finally`` block. An
    ``async def`` target is run to completion in the thread (through asgiref's
    ``async_to_sync``). After ``join()``: ``result`` is what the target (or
    ``run()``) returned, ``exception`` what it raised (logged once at ERROR on
    ``djthreads``, and not re-raised), ``exitcode`` None until finished, then
    as on a Process: 0, the code of ``sys.exit(code)``, or 1 after an
    exception. ``close()``, ``sentinel`` and the closed-object ValueErrors
    behave as on a Process; ``terminate()`` and ``kill()`` raise
    :class:`~djthreads.exceptions.UnstoppableThreadError`, because nothing can
    stop a thread from outside.
    """

    result: Any
    exception: BaseException | None

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
        if target is not None:
            check_callable(target, "DjangoThread(target=...)")
        super().__init__(group, target, name, args, kwargs, daemon=daemon)
        # Our own copies: Thread keeps these in private attributes.
        self._djthreads_target = target
        self._djthreads_args = tuple(args)
        self._djthreads_kwargs = dict(kwargs or {})
        self._target_result: Any = None
        self._work: Work | None = None
        self.result = None
        self.exception = None
        self._exitcode: int | None = None
        self._closed = False
        # Guards the sentinel pipe against the thread ending meanwhile.
        self._end_lock = threading.Lock()
        self._has_ended = False
        self._sentinel_fds: tuple[int, int | None] | None = None  # (read, write or None)
        self._sentinel_finalizer: weakref.finalize[Any, Any] | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "run" in cls.__dict__:
            cls.run = _hygienic(cls.__dict__["run"])

    def __repr__(self) -> str:
        if self._closed:
            # Thread.__repr__ calls is_alive(), which a closed thread refuses.
            return f"<{type(self).__name__}({self.name}, closed)>"
        return super().__repr__()

    def _check_closed(self) -> None:
        if self._closed:
            raise ValueError(f"DjangoThread {self.name!r} is closed")

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
        self._check_closed()
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

    def join(self, timeout: float | None = None) -> None:
        """Wait for the thread to end, as ``Thread.join``; ValueError once closed."""
        self._check_closed()
        super().join(timeout)

    def is_alive(self) -> bool:
        """Return whether the thread is running; ValueError once closed."""
        self._check_closed()
        return super().is_alive()

    @property
    def ident(self) -> int | None:
        """The thread's identifier (None before start); ValueError once closed."""
        self._check_closed()
        return super().ident

    @property
    def pid(self) -> NoReturn:
        """Raise AttributeError, since a thread runs in its starter's process and has no pid."""
        # Not os.getpid(): the usual thing done with a Process's pid is
        # os.kill(pid, ...), which would signal this whole process.
        raise AttributeError(
            f"DjangoThread {self.name!r} has no pid: it runs inside this process "
            f"(os.getpid() is {os.getpid()}), so signalling a pid cannot stop it. Use "
            "ident or native_id to identify the thread."
        )

    @property
    def exitcode(self) -> int | None:
        """None until the thread has ended; then 0, the ``sys.exit()`` code, or 1.

        Follows ``multiprocessing.Process``: ``sys.exit()``/``sys.exit(0)`` is
        0, ``sys.exit(n)`` with an int is n, ``sys.exit("message")`` and any
        other exception are 1 (the message is in the ERROR log's traceback,
        where a Process writes it to stderr). ValueError once closed.
        """
        self._check_closed()
        return self._exitcode

    @property
    def sentinel(self) -> int:
        """A file descriptor that becomes ready when the thread ends, as on a Process.

        For ``multiprocessing.connection.wait()`` or ``select``: the read end
        of a pipe whose write end the thread closes as its last act (after
        ``exitcode`` is set). Created on first use; closed by ``close()`` or
        when this object is collected. ValueError before ``start()`` and once
        closed.
        """
        self._check_closed()
        if super().ident is None:
            raise ValueError(f"DjangoThread {self.name!r} is not started")
        with self._end_lock:
            if self._sentinel_fds is None:
                read, write = os.pipe()
                if self._has_ended:
                    os.close(write)
                    self._sentinel_fds = (read, None)
                else:
                    self._sentinel_fds = (read, write)
                self._sentinel_finalizer = weakref.finalize(self, os.close, read)
            return self._sentinel_fds[0]

    def _ended(self) -> None:
        # The thread's last act: make the sentinel ready.
        with self._end_lock:
            self._has_ended = True
            fds = self._sentinel_fds
            if fds is not None and fds[1] is not None:
                self._sentinel_fds = (fds[0], None)
                os.close(fds[1])

    def close(self) -> None:
        """Release what the thread object holds, as ``Process.close()``.

        Raises ValueError while the thread runs (join() it first: a thread
        cannot be terminated). Afterwards ``start()``, ``join()``,
        ``is_alive()``, ``exitcode``, ``ident``, ``sentinel``, ``terminate()``
        and ``kill()`` raise ValueError; ``name``, ``daemon``, ``result`` and
        ``exception`` stay readable. Closing twice is fine.
        """
        if threading.Thread.is_alive(self):
            raise ValueError(
                f"Cannot close DjangoThread {self.name!r} while it is still running: "
                "call join() first (a thread cannot be terminated)."
            )
        if self._sentinel_finalizer is not None:
            self._sentinel_finalizer()  # closes the sentinel's read end, once
        self._djthreads_target = None
        self._djthreads_args = ()
        self._djthreads_kwargs = {}
        self._target_result = None
        self._carried = None
        self._closed = True

    def terminate(self) -> NoReturn:
        """Raise UnstoppableThreadError: a thread cannot be stopped from outside."""
        self._refuse_to_stop("terminate")

    def kill(self) -> NoReturn:
        """Raise UnstoppableThreadError: a thread cannot be stopped from outside."""
        self._refuse_to_stop("kill")

    def _refuse_to_stop(self, method: str) -> NoReturn:
        self._check_closed()
        # Raised whether or not the thread still runs, so code that relies on
        # terminate() fails in its first test, not when a thread hangs in production.
        raise UnstoppableThreadError(
            f"DjangoThread {self.name!r} cannot {method}(): Python cannot stop a thread from "
            "outside. Have the target return when a stop flag it checks is set (pass it a "
            "threading.Event and check event.is_set() in its loop), or run the work in a "
            "djthreads.DjangoProcess, which terminate() and kill() can stop."
        )
