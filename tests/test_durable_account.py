"""Durable tasks in djthreads' account of outstanding work: waits and the test helpers."""

from __future__ import annotations

import datetime
import threading
import unittest
from typing import Any, ClassVar

import pytest
from django.test import override_settings
from django.utils import timezone

import djthreads
from djthreads import test as djtest
from djthreads._tasks_compat import task_finished
from tests import backend_tasks as bt

pytest.importorskip("django_tasks_db")

from django_tasks_db.models import DBTaskResult

pytestmark = [pytest.mark.timeout(60), pytest.mark.django_db(transaction=True)]

DURABLE = {
    "default": {
        "BACKEND": "djthreads.durable.DurableBackend",
        "OPTIONS": {"POLL_INTERVAL": 0.05},
    }
}


@override_settings(TASKS=DURABLE)
def test_wait_for_tasks_waits_for_a_durable_task_until_its_row_says_so() -> None:
    bt.gates["account"] = threading.Event()
    bt.started["account"] = threading.Event()
    try:
        held = bt.hold.enqueue("account")
        assert bt.started["account"].wait(10)
        with pytest.raises(TimeoutError, match=f"tests.backend_tasks.hold id={held.id}"):
            djthreads.wait_for_tasks(timeout=0.1)
    finally:
        bt.gates["account"].set()
    djthreads.wait_for_tasks(timeout=10)
    # Once the wait returns, the outcome is in the database.
    assert DBTaskResult.objects.get(pk=held.id).status == "SUCCESSFUL"


@override_settings(TASKS=DURABLE)
def test_wait_for_tasks_does_not_wait_for_a_deferred_durable_task() -> None:
    later = bt.add.using(run_after=timezone.now() + datetime.timedelta(hours=1)).enqueue(1, 2)
    djthreads.wait_for_tasks(timeout=5)
    assert DBTaskResult.objects.get(pk=later.id).status == "READY"


@override_settings(TASKS=DURABLE, DJTHREADS={"MAX_WORKERS": 1})
class DurableThreads(djtest.TransactionTestCase):
    __test__ = False
    task_timeout = 10.0
    seen: ClassVar[list[str]] = []

    def test_failure(self) -> None:
        type(self).seen[:] = [bt.fail.enqueue("from a durable task").id]

    def test_ready_tasks_finish_before_the_end(self) -> None:
        type(self).seen[:] = [bt.add.enqueue(n, 1).id for n in range(5)]


def run_case(name: str) -> list[str]:
    result = unittest.TestResult()
    unittest.TestSuite([DurableThreads(name)]).run(result)
    return [text for _, text in result.failures + result.errors]


def test_a_failing_durable_task_fails_the_test_with_its_name_and_id() -> None:
    [text] = run_case("test_failure")
    [task_id] = DurableThreads.seen
    assert f"djthreads task tests.backend_tasks.fail id={task_id}" in text
    assert "ValueError: from a durable task" in text


def test_the_test_helpers_wait_for_every_durable_task() -> None:
    # One worker, five tasks: the end of the test must wait for the queued ones too.
    statuses: dict[str, str] = {}

    def record(sender: object, task_result: Any, **kwargs: Any) -> None:
        statuses[task_result.id] = task_result.status

    task_finished.connect(record)
    try:
        problems = run_case("test_ready_tasks_finish_before_the_end")
        at_the_end = dict(statuses)
    finally:
        task_finished.disconnect(record)
    assert problems == []
    assert [at_the_end.get(pk) for pk in DurableThreads.seen] == ["SUCCESSFUL"] * 5
