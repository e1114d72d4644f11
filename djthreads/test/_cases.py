"""The test case classes of ``djthreads.test``."""

from __future__ import annotations

import contextlib
import unittest
from collections.abc import Iterable
from typing import Any, ClassVar

import django.test
from django.db import connections

from djthreads._eager import eager
from djthreads.test._connections import check_databases
from djthreads.test._tracker import RaisedInTasks, TaskTracker


def _aliases(databases: Any) -> Iterable[str]:
    return list(connections) if databases == "__all__" else sorted(databases)


class TransactionTestCase(django.test.TransactionTestCase):
    """``django.test.TransactionTestCase`` for tests that run real threads.

    Tasks run in pool workers and DjangoThreads with their own connections and
    see the committed rows of the test. After each test (after ``tearDown``
    and the cleanups, before Django flushes the database) the test's thread
    waits up to ``task_timeout`` seconds for every task of the default pool
    and every DjangoThread started during the test, then fails the test when
    one is still running (naming it), when a task or DjangoThread raised an
    exception the test did not expect (with its traceback), or when a thread
    of the test left a database connection open (``assertNoLeakedConnections``).
    Leaked connections are then closed, so the flush and the final
    ``DROP DATABASE`` on PostgreSQL are not refused.

    Refuses SQLite's in-memory test database (ImproperlyConfigured, naming the
    setting to change): threads cannot share it.
    """

    task_timeout: ClassVar[float] = 10.0
    """Seconds the end of each test waits for its tasks and DjangoThreads."""

    expected_task_exceptions: ClassVar[tuple[type[BaseException], ...]] = ()
    """Exception classes a task of any test of the class may raise without failing it."""

    connection_settle_timeout: ClassVar[float] = 5.0
    """Seconds PostgreSQL gets to drop a closed backend from pg_stat_activity."""

    _djthreads_tracker: TaskTracker | None = None

    @classmethod
    def setUpClass(cls) -> None:
        check_databases(_aliases(cls.databases), "djthreads.test.TransactionTestCase")
        super().setUpClass()

    def run(self, result: unittest.TestResult | None = None) -> unittest.TestResult | None:
        self._djthreads_start()
        return super().run(result)

    def debug(self) -> None:
        self._djthreads_start()
        super().debug()

    def _djthreads_start(self) -> None:
        method = getattr(self, self._testMethodName)
        if getattr(type(self), "__unittest_skip__", False) or getattr(
            method, "__unittest_skip__", False
        ):
            return  # unittest runs no cleanup for a skipped test
        tracker = TaskTracker(
            _aliases(self.databases),
            timeout=self.task_timeout,
            expected=self.expected_task_exceptions,
            settle_timeout=self.connection_settle_timeout,
            api="self.assertTaskRaises",
            hint=f", or raise {type(self).__name__}.task_timeout (now {self.task_timeout} s)",
            expect_hint=" or list the class in expected_task_exceptions",
        )
        tracker.start()
        self._djthreads_tracker = tracker
        # Registered before setUp, so it runs after every other cleanup.
        self.addCleanup(self._djthreads_finish, tracker)

    def _djthreads_finish(self, tracker: TaskTracker) -> None:
        message = tracker.finish()
        if message:
            self.fail(message)

    def _tracker(self, name: str) -> TaskTracker:
        if self._djthreads_tracker is None:
            raise RuntimeError(f"{name}() works inside a test method, after setUp() started.")
        return self._djthreads_tracker

    def assertTaskRaises(
        self, *exceptions: type[BaseException]
    ) -> contextlib.AbstractContextManager[RaisedInTasks]:
        """Expect a task started in the ``with`` block to raise one of ``exceptions``.

        At the end of the block the test's thread waits for the test's tasks
        (up to ``task_timeout``), then fails unless one of them raised one of
        ``exceptions``; those exceptions then do not fail the test. The
        context value has ``.exception`` and ``.exceptions``.
        """
        return self._tracker("assertTaskRaises").assert_task_raises(*exceptions)

    def assertNoLeakedConnections(self) -> None:
        """Fail if a thread of this test left a database connection open.

        Waits for the test's tasks first. On PostgreSQL it counts the server's
        connections (pg_stat_activity), so it proves closing, not garbage
        collection; with Django's psycopg 3 pool it counts checked-out slots;
        everywhere it checks that each connection another thread opened through
        Django was closed. Runs at the end of every test too.
        """
        self._tracker("assertNoLeakedConnections").assert_no_leaked_connections()


class TestCase(django.test.TestCase):
    """``django.test.TestCase`` with djthreads' eager mode on, for the fast path.

    ``run_async``/``submit`` calls (in setUpTestData, setUp, the test and
    tearDown) run inline in the test's thread, inside the test's transaction,
    so tasks see its uncommitted rows, and the test's connection stays open.
    The atomic blocks TestCase wraps around the class and each test do not
    count for on_commit: a task submitted outside any atomic block of the
    code under test runs at once, as in production; one submitted inside one
    is held by Django's rules and runs in ``captureOnCommitCallbacks(execute=True)``.
    An exception in a task re-raises in the code that submitted it.
    ``DjangoThread`` still starts a real thread, which cannot see the test's
    rows: use TransactionTestCase for that.
    """

    @classmethod
    def setUpClass(cls) -> None:
        mode = eager()
        mode.__enter__()
        cls.addClassCleanup(mode.__exit__, None, None, None)
        super().setUpClass()
