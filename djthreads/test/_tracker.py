"""Watch the tasks, DjangoThreads and database connections of one test.

Shared by ``djthreads.test.TransactionTestCase`` and the pytest plugin's
``djthreads_threads`` fixture.
"""

from __future__ import annotations

import contextlib
import threading
import time
import traceback
from collections.abc import Iterable, Iterator
from typing import Any

from djthreads import _default, _eager
from djthreads.executor import _worker_state
from djthreads.signals import task_finished, task_started
from djthreads.test._connections import ConnectionWatch
from djthreads.threads import DjangoThread


class _TaskError:
    __slots__ = ("exception", "expected", "name", "text", "thread")

    def __init__(self, name: str, thread: str, exception: BaseException) -> None:
        self.name = name
        self.thread = thread
        self.exception = exception
        self.text = "".join(traceback.format_exception(exception)).rstrip()
        self.expected = False


class RaisedInTasks:
    """What ``assertTaskRaises()``/``assert_task_raises()`` caught, after the block."""

    def __init__(self) -> None:
        self.exceptions: list[BaseException] = []
        self.exception: BaseException | None = None  # the first one


class TaskTracker:
    """Track the djthreads tasks, DjangoThreads and connections of one test.

    ``start()`` runs in the test's thread; from then on every task (pool,
    DjangoThread, eager) is followed through ``task_started``/``task_finished``
    and every connection another thread opens through ``connection_created``.
    ``finish()`` waits ``timeout`` seconds for the default pool, the
    DjangoThreads started since ``start()`` and every running task, then
    returns a message naming what is stuck, the tasks that raised an exception
    the test did not expect, and the connections other threads left open (it
    closes those whose thread has ended, and terminates unknown PostgreSQL
    backends, so the test database can be flushed and dropped), or None.
    """

    def __init__(
        self,
        databases: Iterable[str],
        *,
        timeout: float = 10.0,
        expected: tuple[type[BaseException], ...] = (),
        settle_timeout: float = 5.0,
        api: str = "assertTaskRaises",
        hint: str = "",
        expect_hint: str = "",
    ) -> None:
        self.timeout = timeout
        self.expected = expected
        self._connections = ConnectionWatch(databases, settle_timeout)
        self._api = api
        self._hint = hint
        self._expect_hint = expect_hint
        self._lock = threading.Condition()  # guards _running and _errors
        self._running: dict[threading.Thread, list[tuple[str, object]]] = {}
        self._errors: list[_TaskError] = []
        self._thread = threading.current_thread()
        self._threads_before: set[threading.Thread] = set()
        self._active = False

    # -- lifecycle ------------------------------------------------------------

    def start(self) -> None:
        """Start tracking; runs in the test's thread (one query per PostgreSQL database)."""
        self._thread = threading.current_thread()
        self._threads_before = set(threading.enumerate())
        task_started.connect(self._on_started, weak=False)
        task_finished.connect(self._on_finished, weak=False)
        self._active = True
        self._connections.start()

    def stop(self) -> None:
        """Stop tracking and drop the references to other threads' connections."""
        task_started.disconnect(self._on_started)
        task_finished.disconnect(self._on_finished)
        self._connections.stop()
        self._active = False

    def finish(self) -> str | None:
        """Wait for the test's tasks, check them and stop; return what went wrong."""
        if not self._active:
            return None
        try:
            stuck = self._wait(self.timeout)
            problems = [stuck] if stuck else []
            problems += self._unexpected_errors()
            if not stuck:  # a stuck task still holds its connection
                problems += self._connections.leaks()
        finally:
            self.stop()
        return "\n\n".join(problems) or None

    # -- assertions -----------------------------------------------------------

    @contextlib.contextmanager
    def assert_task_raises(self, *exceptions: type[BaseException]) -> Iterator[RaisedInTasks]:
        """Expect a task run during the block to raise one of ``exceptions``.

        At the end of the block it waits for the test's tasks, as the end of
        the test does, then fails unless at least one of them raised one of
        ``exceptions``; those no longer fail the test.
        """
        if not exceptions or not all(
            isinstance(e, type) and issubclass(e, BaseException) for e in exceptions
        ):
            raise TypeError(f"{self._api}() needs exception classes, got {exceptions!r}.")
        with self._lock:
            mark = len(self._errors)
        raised = RaisedInTasks()
        yield raised
        stuck = self._wait(self.timeout)
        if stuck:
            raise AssertionError(stuck)
        with self._lock:
            new = self._errors[mark:]
        matched = [e for e in new if isinstance(e.exception, exceptions)]
        names = " or ".join(e.__name__ for e in exceptions)
        if not matched:
            seen = "; ".join(f"{e.name}: {e.exception!r}" for e in new) or "none raised"
            raise AssertionError(
                f"No djthreads task raised {names} inside {self._api}(); tasks that "
                f"raised: {seen}."
            )
        for error in matched:
            error.expected = True
        raised.exceptions = [e.exception for e in matched]
        raised.exception = raised.exceptions[0]

    def assert_no_leaked_connections(self) -> None:
        """Fail if a thread of the test left a database connection open.

        Waits for the test's tasks first. A connection opened through Django
        by another thread must be closed; on PostgreSQL the server's own list
        of backends (pg_stat_activity) must show no connection opened since
        the test started, and with Django's psycopg 3 pool no slot may still be
        checked out. Leaks are cleaned up (closed or terminated) after being
        reported.
        """
        stuck = self._wait(self.timeout)
        if stuck:
            raise AssertionError(stuck)
        leaks = self._connections.leaks()
        if leaks:
            raise AssertionError("\n".join(leaks))

    # -- signal receivers (run in the task's thread) ----------------------------

    def _on_started(self, sender: object, *, name: str, **extra: Any) -> None:
        thread = threading.current_thread()
        with self._lock:
            self._running.setdefault(thread, []).append(
                (name, getattr(_worker_state, "executor", None))
            )

    def _on_finished(
        self, sender: object, *, name: str, exception: BaseException | None, **extra: Any
    ) -> None:
        thread = threading.current_thread()
        error = None
        if exception is not None and not _eager.raising_in_caller():
            error = _TaskError(name, thread.name, exception)
            error.expected = isinstance(exception, self.expected)
        with self._lock:
            stack = self._running.get(thread)
            if stack:
                stack.pop()
                if not stack:
                    del self._running[thread]
            if error is not None:
                self._errors.append(error)
            self._lock.notify_all()

    # -- waiting ----------------------------------------------------------------

    def _new_django_threads(self) -> list[threading.Thread]:
        return [
            t
            for t in threading.enumerate()
            if isinstance(t, DjangoThread) and t not in self._threads_before
        ]

    def _others_running(self) -> bool:
        return any(thread is not self._thread for thread in self._running)

    def _wait(self, timeout: float) -> str | None:
        """Wait for the test's tasks; return a message naming the stuck ones, or None."""
        deadline = time.monotonic() + timeout
        while True:
            # A task may start a DjangoThread that submits a task...: repeat
            # until one round finds everything finished, or time is up.
            with contextlib.suppress(TimeoutError):
                _default.wait_for_tasks(max(0.0, deadline - time.monotonic()))
            threads = self._new_django_threads()
            for thread in threads:
                thread.join(max(0.0, deadline - time.monotonic()))
            with self._lock:
                self._lock.wait_for(
                    lambda: not self._others_running(), max(0.0, deadline - time.monotonic())
                )
                busy = self._others_running()
            queued = any(executor.pending() for executor in _default._executors())
            alive = any(thread.is_alive() for thread in self._new_django_threads())
            if not (busy or queued or alive):
                return None
            if time.monotonic() >= deadline:
                return self._stuck_message(timeout)

    def _stuck_message(self, timeout: float) -> str:
        executors = _default._executors()
        items = [f"{name} (default pool)" for e in executors for name in e.pending_names()]
        with self._lock:
            running = {thread: list(stack) for thread, stack in self._running.items()}
        threads = [t for t in self._new_django_threads() if t.is_alive()]
        for thread in threads:
            stack = running.pop(thread, [])
            task = stack[0][0] if stack else "its task, not started yet,"
            items.append(f"{task} (DjangoThread {thread.name!r})")
        for thread, stack in running.items():
            if thread is not self._thread and stack and stack[0][1] not in executors:
                items.append(f"{stack[0][0]} (thread {thread.name!r})")
        return (
            f"{len(items)} djthreads task(s) still running {timeout} s after the test: "
            + "; ".join(items)
            + ". Make them finish before the test ends (set what they wait for, give "
            f"their waits a timeout){self._hint}."
        )

    # -- checks -----------------------------------------------------------------

    def _unexpected_errors(self) -> list[str]:
        with self._lock:
            errors = [e for e in self._errors if not e.expected]
        return [
            f"djthreads task {e.name} raised an exception in thread {e.thread!r} during "
            f"the test:\n{e.text}\nIf the test expects it, wrap the code that starts "
            f"the task in `with {self._api}({type(e.exception).__name__}):`"
            f"{self._expect_hint}."
            for e in errors
        ]
