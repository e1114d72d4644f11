"""The test helpers see ThreadPoolBackend tasks as they see pool tasks (issue 9)."""

from __future__ import annotations

import datetime
import logging
import re
import textwrap
from typing import Any, ClassVar

import pytest
from django.test import override_settings
from django.utils import timezone

import djthreads
from djthreads import _account
from djthreads import test as djtest
from djthreads._tasks_compat import (
    TaskResultStatus,
    task_finished,
)
from tests import backend_tasks as bt
from tests.test_pytest_plugin import project as project  # a fixture
from tests.test_test import failures, run_case

pytest_plugins = ["pytester"]
pytestmark = [pytest.mark.timeout(120), pytest.mark.django_db(transaction=True)]

BACKEND = {"default": {"BACKEND": "djthreads.backends.ThreadPoolBackend"}}


@override_settings(TASKS=BACKEND, DJTHREADS={"MAX_WORKERS": 1})
class BackendThreads(djtest.TransactionTestCase):
    __test__ = False
    task_timeout = 10.0
    seen: ClassVar[list[str]] = []

    def test_backend_failure(self) -> None:
        bt.fail.enqueue("from the backend")

    def test_backend_expected(self) -> None:
        with self.assertTaskRaises(ValueError) as raised:
            bt.fail.enqueue("expected from the backend")
        assert str(raised.exception) == "expected from the backend"

    def test_ready_tasks_finish_before_the_end(self) -> None:
        results = [bt.add.enqueue(n, 1) for n in range(5)]
        type(self).seen[:] = [result.id for result in results]

    def test_deferred(self) -> None:
        later = timezone.now() + datetime.timedelta(hours=1)
        result = bt.add.using(run_after=later).enqueue(1, 2)
        type(self).seen[:] = [result.id]


def test_a_failing_backend_task_fails_the_test_with_name_and_traceback() -> None:
    result = run_case(BackendThreads, "test_backend_failure")
    [text] = failures(result)
    assert re.search(
        r"djthreads task tests\.backend_tasks\.fail id=\w{32} args=\(\) raised an exception",
        text,
    ), text
    assert "ValueError: from the backend" in text
    assert 'tests/backend_tasks.py", line' in text


def test_assert_task_raises_covers_backend_tasks_and_keeps_the_log_quiet(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.DEBUG):
        result = run_case(BackendThreads, "test_backend_expected")
    assert failures(result) == []
    failed = [r for r in caplog.records if r.exc_info and "from the backend" in str(r.exc_info[1])]
    assert failed  # Django logged the task's failure...
    assert all(r.levelno == logging.DEBUG for r in failed)  # ...not as an ERROR


def test_ready_backend_tasks_all_finish_before_the_test_ends() -> None:
    # One worker, five tasks: the end of the test must wait for the queued ones too.
    statuses: dict[str, str] = {}

    def record(sender: object, task_result: Any, **kwargs: Any) -> None:
        statuses[task_result.id] = task_result.status

    task_finished.connect(record)
    try:
        result = run_case(BackendThreads, "test_ready_tasks_finish_before_the_end")
        at_the_end = dict(statuses)
    finally:
        task_finished.disconnect(record)
    assert failures(result) == []
    assert [at_the_end.get(i) for i in BackendThreads.seen] == [TaskResultStatus.SUCCESSFUL] * 5


def test_a_deferred_task_is_dropped_and_named_at_the_end_of_the_test(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="djthreads.backends"):
        result = run_case(BackendThreads, "test_deferred")
    assert failures(result) == []
    [task_id] = BackendThreads.seen
    [message] = [r.getMessage() for r in caplog.records if r.name == "djthreads.backends"]
    assert message == (
        f"task=tests.backend_tasks.add id={task_id} dropped: deferred and not due at the "
        "end of the test; it would run during a later test"
    )
    assert not [w for w in _account.outstanding() if w.id == task_id]
    djthreads.wait_for_tasks(timeout=10)


MARKER_PROJECT = """
import pytest

@pytest.mark.djthreads(expected="ValueError")
def test_string(): pass

@pytest.mark.djthreads(expected=(ValueError, 3))
def test_tuple_with_a_number(): pass

@pytest.mark.djthreads(timeout=1, expected=ValueError)
def test_fine(): pass

@pytest.mark.djthreads(10, ValueError, KeyError)
def test_too_many(): pass
"""


def test_the_marker_accepts_exception_classes_only(
    pytester: pytest.Pytester,
    project: str,
) -> None:
    pytester.makepyfile(test_marker=textwrap.dedent(MARKER_PROJECT))
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--timeout=60", timeout=150)
    result.assert_outcomes(passed=1, errors=3)
    result.stdout.fnmatch_lines(
        [
            "*TypeError: @pytest.mark.djthreads(expected=...) takes an exception class or a "
            "tuple of exception classes, got 'ValueError'.",
            "*TypeError: @pytest.mark.djthreads(expected=...) takes an exception class or a "
            "tuple of exception classes, got (<class 'ValueError'>, 3).",
            "*TypeError: *_marker_options() takes from 0 to 2 positional arguments but 3 *",
        ]
    )
