"""djthreads.test: eager mode, TestCase and TransactionTestCase.

The TransactionTestCase checks fail a test at its end, so the cases that must
fail are defined here (``__test__ = False`` keeps pytest from collecting them)
and run with unittest inside a transactional pytest test, which then looks at
the unittest result.
"""

from __future__ import annotations

import logging
import re
import textwrap
import threading
import unittest
from pathlib import Path
from typing import Any, ClassVar

import pytest
from django.db import DEFAULT_DB_ALIAS, connection, connections, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.test import override_settings

import djthreads
from djthreads import DjangoThread, eager, run_async, submit
from djthreads import test as djtest
from djthreads.checks import check_settings
from tests import tasks
from tests.conftest import held_connections, postgres_only, settled_connections, uses_pool
from tests.models import Item

pytest_plugins = ["pytester"]
pytestmark = pytest.mark.timeout(90)


@run_async
def count_items() -> int:
    return Item.objects.count()


# -- eager() and DJTHREADS['EAGER'] -----------------------------------------------


def test_eager_runs_inline_and_returns_a_completed_future() -> None:
    with eager():
        future = submit(tasks.thread_name)
        assert future.done()
        assert future.result(0) == threading.current_thread().name
    # Outside the block, tasks go to the pool again.
    assert submit(tasks.thread_name).result(10) != threading.current_thread().name


def test_eager_is_a_decorator() -> None:
    @eager()
    def submit_and_look() -> str:
        return submit(tasks.thread_name).result(0)

    assert submit_and_look() == threading.current_thread().name
    assert submit_and_look.__name__ == "submit_and_look"


def test_eager_exception_reraises_in_the_caller_and_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with (
        caplog.at_level(logging.ERROR, logger="djthreads"),
        eager(),
        pytest.raises(ValueError, match="inline"),
    ):
        submit(tasks.fail, "inline")
    assert any("tests.tasks.fail" in r.getMessage() for r in caplog.records)


def test_eager_propagate_false_keeps_the_exception_on_the_future(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.ERROR, logger="djthreads"), eager(propagate=False):
        future = submit(tasks.fail, "kept")
    assert isinstance(future.exception(0), ValueError)
    assert [r.exc_info is not None for r in caplog.records if r.name == "djthreads"] == [True]


def test_eager_rejects_a_non_bool_propagate() -> None:
    with pytest.raises(TypeError, match=r"eager\(propagate=...\) must be True or False"):
        eager(propagate="yes")  # type: ignore[arg-type]


@override_settings(DJTHREADS={"EAGER": True})
def test_the_eager_setting_runs_tasks_inline() -> None:
    assert submit(tasks.thread_name).result(0) == threading.current_thread().name


def test_an_invalid_eager_setting_is_check_e009() -> None:
    with override_settings(DJTHREADS={"EAGER": "yes"}):
        errors = check_settings()
    assert [e.id for e in errors] == ["djthreads.E009"]
    assert errors[0].msg == "DJTHREADS['EAGER'] must be True or False, got 'yes'."


@pytest.mark.django_db(transaction=True)
def test_eager_in_a_real_transaction_runs_after_the_commit() -> None:
    with eager():
        with transaction.atomic():
            Item.objects.create(name="a")
            held = count_items()
            assert not held.done()
        assert held.result(0) == 1
        with transaction.atomic():
            dropped = count_items()
            transaction.set_rollback(True)
        assert dropped.cancelled()


@pytest.mark.django_db
@pytest.mark.usefixtures("djthreads_eager")
def test_the_eager_fixture_sees_rows_of_the_db_fixture() -> None:
    pk = Item.objects.create(name="pytest-db").pk
    assert submit(tasks.item_exists, pk).result(0) is True
    assert connection.connection is not None


# -- djthreads.test.TestCase ---------------------------------------------------------


class EagerTestCaseTests(djtest.TestCase):
    """Collected by pytest: djthreads.test.TestCase itself under test."""

    item_pk: ClassVar[int]

    @classmethod
    def setUpTestData(cls) -> None:
        cls.item_pk = submit(tasks.create_item, "from setUpTestData").result(0)

    def test_a_task_sees_the_uncommitted_rows_and_leaves_the_connection_open(self) -> None:
        pk = Item.objects.create(name="uncommitted").pk
        raw = connection.connection
        assert submit(tasks.item_exists, pk).result(0) is True
        assert submit(tasks.item_exists, self.item_pk).result(0) is True
        # The test's own connection, still open and still in its transaction.
        assert raw is not None
        assert connection.connection is raw
        assert not connection.closed_in_transaction
        assert connection.in_atomic_block
        assert Item.objects.count() == 2

    def test_a_task_inside_an_atomic_block_waits_for_the_on_commit_callbacks(self) -> None:
        with self.captureOnCommitCallbacks(execute=True) as callbacks:
            with transaction.atomic():
                Item.objects.create(name="held")
                future = count_items()
            assert not future.done()
        assert len(callbacks) == 1
        assert future.result(0) == 2

    def test_a_rolled_back_atomic_block_cancels_its_task(self) -> None:
        with self.captureOnCommitCallbacks(execute=True) as callbacks, transaction.atomic():
            future = count_items()
            transaction.set_rollback(True)
        assert callbacks == []
        assert future.cancelled()

    def test_an_exception_reraises_in_the_test(self) -> None:
        with self.assertRaisesMessage(ValueError, "eager"):
            submit(tasks.fail, "eager")


# -- djthreads.test.TransactionTestCase ------------------------------------------------

RELEASE = threading.Event()


def run_case(case: type[unittest.TestCase], name: str) -> unittest.TestResult:
    result = unittest.TestResult()
    unittest.TestSuite([case(name)]).run(result)
    return result


def failures(result: unittest.TestResult) -> list[str]:
    return [text for _, text in result.failures + result.errors]


class Threads(djtest.TransactionTestCase):
    __test__ = False
    task_timeout = 0.5  # the stuck cases wait this long
    connection_settle_timeout = 2.0
    kept: ClassVar[list[BaseDatabaseWrapper]] = []
    done_at_flush: ClassVar[list[bool]] = []
    late: ClassVar[Any] = None

    def _fixture_teardown(self) -> None:
        # Django's flush, which the stubs do not declare: is the late task done?
        if self.late is not None:
            type(self).done_at_flush.append(self.late.done())
        super()._fixture_teardown()  # type: ignore[misc]

    def test_tasks_and_threads_see_committed_rows(self) -> None:
        pk = Item.objects.create(name="committed").pk
        assert submit(tasks.item_exists, pk).result(10) is True
        thread = DjangoThread(target=tasks.create_item, args=("from a thread",))
        thread.start()
        thread.join(10)
        assert Item.objects.count() == 2

    def test_ends_with_a_task_released_by_a_cleanup(self) -> None:
        release = threading.Event()
        type(self).late = submit(tasks.wait_for, release)
        self.addCleanup(release.set)  # runs before the end-of-test wait

    def test_stuck_pool_task(self) -> None:
        submit(tasks.wait_for, RELEASE)

    def test_stuck_thread(self) -> None:
        DjangoThread(target=tasks.wait_for, args=(RELEASE,), name="stuck-thread").start()

    def test_unexpected_exceptions(self) -> None:
        submit(tasks.fail, "from the pool")
        DjangoThread(target=tasks.fail, args=("from a thread",), name="failing-thread").start()

    def test_expected_exception(self) -> None:
        with self.assertTaskRaises(ValueError) as raised:
            submit(tasks.fail, "expected")
        assert str(raised.exception) == "expected"

    def test_expected_exception_that_no_task_raises(self) -> None:
        with self.assertTaskRaises(ValueError):
            submit(tasks.noop)

    def test_eager_exception_caught_by_the_test(self) -> None:
        with eager(), pytest.raises(ValueError, match="seen by the test"):
            submit(tasks.fail, "seen by the test")

    def test_plain_thread_leaks(self) -> None:
        thread = threading.Thread(target=query_and_keep, args=(self.kept,), name="leaky")
        thread.start()
        thread.join(10)

    def test_leak_found_by_an_explicit_check(self) -> None:
        thread = threading.Thread(target=query_and_keep, args=(self.kept,), name="leaky-2")
        thread.start()
        thread.join(10)
        with self.assertRaisesMessage(AssertionError, "'leaky-2' ended and left its"):
            self.assertNoLeakedConnections()


class ExpectingThreads(Threads):
    __test__ = False
    expected_task_exceptions = (ValueError,)


def query_and_keep(kept: list[BaseDatabaseWrapper]) -> None:
    tasks.select_one()
    kept.append(connections[DEFAULT_DB_ALIAS])


@pytest.fixture
def release() -> Any:
    RELEASE.clear()
    yield RELEASE
    RELEASE.set()
    djthreads.wait_for_tasks(timeout=20)


transactional = pytest.mark.django_db(transaction=True)


@transactional
def test_tasks_and_threads_pass() -> None:
    result = run_case(Threads, "test_tasks_and_threads_see_committed_rows")
    assert failures(result) == []
    assert result.testsRun == 1


@transactional
def test_the_end_of_the_test_waits_for_running_tasks_before_the_flush() -> None:
    Threads.done_at_flush.clear()
    result = run_case(Threads, "test_ends_with_a_task_released_by_a_cleanup")
    Threads.late = None
    assert failures(result) == []
    assert Threads.done_at_flush == [True]


@transactional
@pytest.mark.usefixtures("release")
def test_a_stuck_pool_task_fails_the_test_with_its_name() -> None:
    result = run_case(Threads, "test_stuck_pool_task")
    [text] = failures(result)
    assert "1 djthreads task(s) still running 0.5 s after the test" in text
    assert re.search(r"tests\.tasks\.wait_for id=\w+ args=\(.*\) \(default pool", text)
    assert "raise Threads.task_timeout (now 0.5 s)" in text
    assert result.failures  # a failure, not an error


@transactional
@pytest.mark.usefixtures("release")
def test_a_stuck_django_thread_fails_the_test_with_its_name() -> None:
    result = run_case(Threads, "test_stuck_thread")
    [text] = failures(result)
    assert re.search(
        r"tests\.tasks\.wait_for id=\w+ args=\(.*\) \(DjangoThread in thread 'stuck-thread'", text
    )


@transactional
def test_unexpected_task_exceptions_fail_the_test_with_their_tracebacks() -> None:
    result = run_case(Threads, "test_unexpected_exceptions")
    [text] = failures(result)
    assert re.search(
        r"djthreads task tests\.tasks\.fail id=\w+ args=\(.*\) "
        r"raised an exception in thread 'djthreads_",
        text,
    )
    assert "ValueError: from the pool" in text
    assert "in thread 'failing-thread'" in text
    assert "ValueError: from a thread" in text
    assert 'tests/tasks.py", line' in text  # the task's traceback
    assert "with self.assertTaskRaises(ValueError):" in text


@transactional
def test_an_expected_task_exception_does_not_fail_the_test() -> None:
    assert failures(run_case(Threads, "test_expected_exception")) == []


@transactional
def test_the_class_flag_expects_exceptions_of_every_test() -> None:
    assert failures(run_case(ExpectingThreads, "test_unexpected_exceptions")) == []


@transactional
def test_assert_task_raises_fails_when_no_task_raises() -> None:
    [text] = failures(run_case(Threads, "test_expected_exception_that_no_task_raises"))
    assert "No djthreads task raised ValueError inside self.assertTaskRaises()" in text


@transactional
def test_an_eager_exception_the_test_caught_is_not_reported_again() -> None:
    assert failures(run_case(Threads, "test_eager_exception_caught_by_the_test")) == []


@transactional
@pytest.mark.usefixtures("no_gc")
def test_a_plain_thread_that_queries_is_caught_as_a_leak_and_closed() -> None:
    Threads.kept.clear()
    result = run_case(Threads, "test_plain_thread_leaks")
    [text] = failures(result)
    assert "Thread 'leaky' ended and left its connection to database alias 'default' open" in text
    [leaked] = Threads.kept
    assert leaked.connection is None  # closed by the check, with gc disabled
    if connection.vendor == "postgresql":
        assert settled_connections(0) == 0


@transactional
@pytest.mark.usefixtures("no_gc")
def test_assert_no_leaked_connections_fails_and_cleans_up() -> None:
    Threads.kept.clear()
    assert failures(run_case(Threads, "test_leak_found_by_an_explicit_check")) == []
    assert Threads.kept[0].connection is None


@override_settings(DJTHREADS={"REUSE_CONNECTIONS": True})
class Reusing(djtest.TransactionTestCase):
    """Pool workers keep their connections between tasks: not a leak."""

    __test__ = False
    connection_settle_timeout = 2.0
    executor: ClassVar[djthreads.DjangoExecutor | None] = None

    def test_tasks(self) -> None:
        type(self).executor = djthreads.get_executor()
        for future in [submit(tasks.select_one) for _ in range(4)]:
            assert future.result(10) == 1


@pytest.fixture
def conn_max_age() -> Any:
    """CONN_MAX_AGE=60 on the default database: reuse needs persistent connections."""
    if uses_pool():
        pytest.skip("Django's pool needs CONN_MAX_AGE=0: workers give pooled connections back")
    conf = connections.settings[DEFAULT_DB_ALIAS]
    old = conf["CONN_MAX_AGE"]
    conf["CONN_MAX_AGE"] = 60
    yield
    conf["CONN_MAX_AGE"] = old


@transactional
@pytest.mark.usefixtures("conn_max_age")
def test_connections_kept_by_reusing_workers_are_not_leaks() -> None:
    result = run_case(Reusing, "test_tasks")
    assert Reusing.executor is not None
    Reusing.executor.shutdown(wait=True, timeout=10)  # its workers close them on exit
    assert failures(result) == []
    assert Reusing.executor.reuse_connections


class RawLeak(djtest.TransactionTestCase):
    """A thread opens a DB-API connection without Django: only the server sees it."""

    __test__ = False
    connection_settle_timeout = 1.0
    raw: ClassVar[list[Any]] = []

    def test_raw_connection(self) -> None:
        def connect() -> None:
            conn = connections[DEFAULT_DB_ALIAS]
            self.raw.append(conn.get_new_connection(conn.get_connection_params()))

        thread = threading.Thread(target=connect)
        thread.start()
        thread.join(10)


@postgres_only
@transactional
@pytest.mark.usefixtures("no_gc")
def test_a_connection_opened_without_django_is_counted_on_the_server() -> None:
    RawLeak.raw.clear()
    try:
        [text] = failures(run_case(RawLeak, "test_raw_connection"))
    finally:
        for raw in RawLeak.raw:
            if uses_pool():
                connection.pool.putconn(raw)  # type: ignore[attr-defined]
            else:
                raw.close()
    if uses_pool():
        assert "1 slot(s) of the connection pool of database alias 'default'" in text
    else:
        assert "PostgreSQL still shows 1 connection(s) to database" in text
        assert "They are terminated now." in text
    assert held_connections() == 0


def test_assert_task_raises_needs_a_running_test() -> None:
    case = Threads("test_expected_exception")
    with pytest.raises(RuntimeError, match=r"assertTaskRaises\(\) works inside a test method"):
        case.assertTaskRaises(ValueError)


# -- SQLite's in-memory test database --------------------------------------------------


MEMORY_PROJECT = """
import threading

import pytest

from djthreads import DjangoThread, submit
from djthreads.test import TestCase, TransactionTestCase
from tests import tasks
from tests.models import Item


class WritersTests(TransactionTestCase):
    def test_tasks_write_from_several_threads(self):
        futures = [submit(tasks.create_item, str(n)) for n in range(8)]
        threads = [DjangoThread(target=tasks.create_item, args=(str(n),)) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
        assert [f.exception(10) for f in futures] == [None] * 8


def test_fixture(djthreads_threads):
    assert submit(tasks.create_item, "x").result(10)


class EagerTests(TestCase):
    def test_eager_works_in_memory(self):
        pk = Item.objects.create(name="in memory").pk
        assert submit(tasks.item_exists, pk).result(0) is True
"""


def test_sqlite_in_memory_fails_fast_with_the_setting_to_change(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DJANGO_SETTINGS_MODULE", "tests.settings_sqlite_memory")
    monkeypatch.setenv("PYTHONPATH", str(Path(tasks.__file__).parent.parent))
    pytester.makepyfile(test_memory=textwrap.dedent(MEMORY_PROJECT))
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--timeout=60", timeout=120)
    result.assert_outcomes(passed=1, errors=2)
    output = result.stdout.str()
    assert "djthreads.test.TransactionTestCase runs tasks in other threads" in output
    assert "The djthreads_threads fixture runs tasks in other threads" in output
    assert "DATABASES['default']['TEST']['NAME'] = BASE_DIR / 'test_db.sqlite3'" in output
    assert "OperationalError" not in output
