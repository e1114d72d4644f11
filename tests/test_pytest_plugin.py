"""djthreads.pytest_plugin, end to end: pytester runs of fresh test projects.

Each run is a new pytest process (loading the plugin through its pytest11 entry
point) with pytest-django, on this run's database settings under its own name.
"""

from __future__ import annotations

import os
import re
import textwrap
from pathlib import Path

import pytest
from django.db import connection

from tests import tasks

pytest_plugins = ["pytester"]
pytestmark = pytest.mark.timeout(180)

PYTEST_STYLE = """
import threading

import pytest
from django.db import connection, connections, transaction

import djthreads
from djthreads import DjangoThread, submit
from tests import tasks
from tests.models import Item

RELEASE = threading.Event()
KEPT = []


@pytest.fixture
def released():
    # Set up before djthreads_threads, so torn down after its check.
    yield
    RELEASE.set()
    djthreads.wait_for_tasks(timeout=20)


def query_then_wait(event):
    tasks.select_one()
    return event.wait(30)


def keep_a_connection():
    tasks.select_one()
    KEPT.append(connections["default"])


def test_eager_sees_the_uncommitted_row(db, djthreads_eager):
    pk = Item.objects.create(name="eager").pk
    assert submit(tasks.item_exists, pk).result(0) is True
    assert connection.connection is not None


def test_eager_on_commit(db, djthreads_eager, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        with transaction.atomic():
            future = submit(tasks.add, 1, 2)
            assert not future.done()
    assert future.result(0) == 3


def test_threads_see_committed_rows(djthreads_threads):
    pk = Item.objects.create(name="committed").pk
    assert submit(tasks.item_exists, pk).result(10) is True
    thread = DjangoThread(target=tasks.create_item, args=("from a thread",))
    thread.start()
    thread.join(10)
    assert Item.objects.count() == 2
    djthreads_threads.assert_no_leaked_connections()


@pytest.mark.djthreads(expected=(ValueError,))
def test_marker_expects_an_exception():
    assert not connection.in_atomic_block  # transactional_db, not db
    submit(tasks.fail, "allowed")


def test_assert_task_raises(djthreads_threads):
    with djthreads_threads.assert_task_raises(ValueError) as raised:
        submit(tasks.fail, "expected")
    assert str(raised.exception) == "expected"


@pytest.mark.djthreads(timeout=0.5)
def test_stuck_task(released, djthreads_threads):
    submit(query_then_wait, RELEASE)


def test_unexpected_exception(djthreads_threads):
    submit(tasks.fail, "unexpected")


def test_leaked_connection(djthreads_threads):
    thread = threading.Thread(target=keep_a_connection, name="leaky")
    thread.start()
    thread.join(10)
"""

UNITTEST_STYLE = """
import threading

from django.db import connection, connections

from djthreads import submit
from djthreads.test import TestCase, TransactionTestCase
from tests import tasks
from tests.models import Item

KEPT = []


def keep_a_connection():
    tasks.select_one()
    KEPT.append(connections["default"])


class ThreadsTests(TransactionTestCase):
    def test_rows(self):
        pk = Item.objects.create(name="committed").pk
        self.assertIs(submit(tasks.item_exists, pk).result(10), True)

    def test_expected(self):
        with self.assertTaskRaises(ValueError):
            submit(tasks.fail, "expected")

    def test_leak(self):
        thread = threading.Thread(target=keep_a_connection, name="leaky-unittest")
        thread.start()
        thread.join(10)


class EagerTests(TestCase):
    def test_rows(self):
        pk = Item.objects.create(name="uncommitted").pk
        self.assertIs(submit(tasks.item_exists, pk).result(0), True)
        self.assertIsNotNone(connection.connection)
"""


@pytest.fixture
def project(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> str:
    """Point the pytester run at this checkout and this run's settings; return its run name."""
    name = f"{os.environ.get('DJTHREADS_PG_NAME', 'djthreads')}_plugin"
    monkeypatch.setenv("DJTHREADS_PG_NAME", name)
    monkeypatch.setenv("PYTHONPATH", str(Path(tasks.__file__).parent.parent))
    return name


@pytest.mark.django_db  # to look for the run's test database afterwards
def test_the_fixtures_and_the_test_cases_from_a_fresh_project(
    pytester: pytest.Pytester, project: str
) -> None:
    pytester.makepyfile(
        test_pytest_style=textwrap.dedent(PYTEST_STYLE),
        test_unittest_style=textwrap.dedent(UNITTEST_STYLE),
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--timeout=60", timeout=150)
    output = result.stdout.str()
    result.assert_outcomes(passed=11, failed=1, errors=3)
    result.stdout.fnmatch_lines(
        [
            "FAILED test_unittest_style.py::ThreadsTests::test_leak - *",
            "ERROR test_pytest_style.py::test_stuck_task - *",
            "ERROR test_pytest_style.py::test_unexpected_exception - *",
            "ERROR test_pytest_style.py::test_leaked_connection - *",
        ]
    )
    assert "1 djthreads task(s) still running 0.5 s after the test: " in output
    assert re.search(
        r"test_pytest_style\.query_then_wait id=\w+ args=\(.*\) \(default pool", output
    )
    assert "@pytest.mark.djthreads(timeout=...)" in output
    assert "ValueError: unexpected" in output
    assert "`with djthreads_threads.assert_task_raises(ValueError):`" in output
    assert "Thread 'leaky-unittest' ended and left its connection" in output
    if connection.vendor == "postgresql":
        # The leaked connections were closed: DROP DATABASE was not refused.
        assert "being accessed by other users" not in output
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_database WHERE datname = %s", [f"test_{project}"]
            )
            row = cursor.fetchone()
        assert row == (0,)


NO_DJANGO = """
import sys


def test_plugin_loaded_without_django_settings(request, djthreads_eager):
    assert request.config.pluginmanager.has_plugin("djthreads")
    assert "djthreads.test" not in sys.modules
    assert "django.test" not in sys.modules
"""


def test_the_plugin_loads_in_a_project_without_django_settings(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DJANGO_SETTINGS_MODULE")
    pytester.makepyfile(test_plain=textwrap.dedent(NO_DJANGO))
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", timeout=60)
    result.assert_outcomes(passed=1)
    markers = pytester.runpytest_subprocess("--markers", timeout=60)
    markers.stdout.fnmatch_lines(["@pytest.mark.djthreads(timeout=10.0, expected=()): *"])
    fixtures = pytester.runpytest_subprocess("--fixtures", timeout=60)
    fixtures.stdout.fnmatch_lines(
        ["djthreads_eager*", "*Run ``run_async``/``submit`` calls inline*", "djthreads_threads*"]
    )
