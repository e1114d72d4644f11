"""Watch the tasks, DjangoThreads and database connections of one test.

Shared by ``djthreads.test.TransactionTestCase`` and the pytest plugin's
``djthreads_threads`` fixture.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
import traceback
from collections.abc import Iterable, Iterator

from djthreads import _account, _eager
from djthreads._account import Work
from djthreads.test._connections import ConnectionWatch

# Loggers that log a task's failure: djthreads itself, and Django's Tasks
# framework (built in, and the backport) for ThreadPoolBackend tasks.
_FAILURE_LOGGERS = ("djthreads", "django.tasks", "django_tasks")


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


class _QuietExpected(logging.Filter):
    """Log an expected task exception at DEBUG, not as an ERROR traceback."""

    def __init__(self, tracker: TaskTracker) -> None:
        super().__init__()
        self.tracker = tracker

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is not None and self.tracker._is_expected(exc):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return True


def _clean_exit(exc: BaseException) -> bool:
    return isinstance(exc, SystemExit) and exc.code in (None, 0)


class TaskTracker:
    """Track the djthreads tasks, DjangoThreads and connections of one test.

    ``start()`` runs in the test's thread; from then on every task (pool,
    DjangoExecutor, ThreadPoolBackend, DjangoThread, eager) is followed
    through djthreads' account of outstanding work, and every connection
    another thread opens through ``connection_created``. ``finish()`` waits
    ``timeout`` seconds for every outstanding task (ready and running
    backend tasks included), drops the deferred backend tasks the test
    enqueued that are not due yet (they never run in a later test; each is
    named in a WARNING), then returns a message naming what is stuck, the
    tasks that raised an exception the test did not expect, and the
    connections other threads left open (it closes those whose thread has
    ended, and terminates unknown PostgreSQL backends, so the test database
    can be flushed and dropped), or None. An exception the test expects is
    logged at DEBUG instead of as an ERROR traceback.
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
        self._lock = threading.Lock()  # guards _errors, _threads and _blocks
        self._errors: list[_TaskError] = []
        self._threads: dict[int, str] = {}  # Work.number -> the thread running it
        self._blocks: list[tuple[type[BaseException], ...]] = []  # open assert_task_raises
        self._filter = _QuietExpected(self)
        self._mark = 0
        self._active = False

    # -- lifecycle ------------------------------------------------------------

    def start(self) -> None:
        """Start tracking; runs in the test's thread (one query per PostgreSQL database)."""
        self._mark = _account.mark()
        _account.listen(self._on_event)
        for name in _FAILURE_LOGGERS:
            logging.getLogger(name).addFilter(self._filter)
        self._active = True
        self._connections.start()

    def stop(self) -> None:
        """Stop tracking and drop the references to other threads' connections."""
        _account.unlisten(self._on_event)
        for name in _FAILURE_LOGGERS:
            logging.getLogger(name).removeFilter(self._filter)
        self._connections.stop()
        self._active = False

    def finish(self) -> str | None:
        """Wait for the test's tasks, check them and stop; return what went wrong."""
        if not self._active:
            return None
        try:
            stuck = self._wait(self.timeout)
            self._drop_deferred()
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
        ``exceptions``; those no longer fail the test, and are logged at
        DEBUG rather than as ERROR tracebacks.
        """
        if not exceptions or not all(
            isinstance(e, type) and issubclass(e, BaseException) for e in exceptions
        ):
            raise TypeError(f"{self._api}() needs exception classes, got {exceptions!r}.")
        with self._lock:
            mark = len(self._errors)
            self._blocks.append(exceptions)
        raised = RaisedInTasks()
        try:
            yield raised
            stuck = self._wait(self.timeout)
        finally:
            with self._lock:
                self._blocks.remove(exceptions)
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

    # -- the account's listener (runs in the task's thread) ---------------------

    def _is_expected(self, exc: BaseException) -> bool:
        if isinstance(exc, self.expected):
            return True
        with self._lock:
            return any(isinstance(exc, block) for block in self._blocks)

    def _on_event(self, event: str, work: Work, exception: BaseException | None) -> None:
        if event == "started":
            with self._lock:
                self._threads[work.number] = threading.current_thread().name
            return
        with self._lock:
            self._threads.pop(work.number, None)
        if exception is None or _clean_exit(exception):
            return
        if _eager.raising_in_caller():
            return  # the test sees it already: it re-raises in the code under test
        error = _TaskError(work.describe(), threading.current_thread().name, exception)
        error.expected = isinstance(exception, self.expected)
        with self._lock:
            self._errors.append(error)

    # -- waiting ----------------------------------------------------------------

    def _wait(self, timeout: float) -> str | None:
        """Wait for every outstanding task; return a message naming the stuck ones, or None."""
        left = _account.wait(timeout)
        if not left:
            return None
        with self._lock:
            threads = dict(self._threads)
        items = [
            f"{work.describe()} ({work.kind}"
            + (f" in thread {threads[work.number]!r}" if work.number in threads else "")
            + f", {work.state})"
            for work in left
        ]
        return (
            f"{len(items)} djthreads task(s) still running {timeout} s after the test: "
            + "; ".join(items)
            + ". Make them finish before the test ends (set what they wait for, give "
            f"their waits a timeout){self._hint}."
        )

    def _drop_deferred(self) -> None:
        # A deferred backend task the test enqueued must never run in a later
        # test. Only the Tasks backend defers; without it nothing is imported.
        if "djthreads._taskqueue" not in sys.modules:
            return
        from djthreads import _taskqueue

        mark = self._mark
        _taskqueue.drop_deferred(
            lambda work: work.number > mark,
            "deferred and not due at the end of the test; it would run during a later test",
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
