"""DurableBackend in one process: rows, the on-commit wake, backpressure, hygiene."""

from __future__ import annotations

import datetime
import logging
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from django.core.signals import request_started
from django.db import transaction
from django.db.models import Count
from django.test import override_settings
from django.utils import timezone

from djthreads import signals as djthreads_signals
from djthreads._tasks_compat import AnyTaskResult, TaskResultStatus, task_backends, task_started
from tests import backend_tasks as bt
from tests import durable_tasks as dt
from tests.backend_tasks import Finished
from tests.conftest import postgres_only, settled_connections
from tests.models import Item

django_tasks_db = pytest.importorskip("django_tasks_db")

from django_tasks_db.models import DBTaskResult  # noqa: E402

from djthreads.durable import DurableBackend  # noqa: E402

pytestmark = [pytest.mark.timeout(60), pytest.mark.django_db(transaction=True)]

BACKEND = "djthreads.durable.DurableBackend"


def durable(**options: Any) -> dict[str, Any]:
    return {"default": {"BACKEND": BACKEND, "OPTIONS": options}}


@pytest.fixture
def finished() -> Iterator[Finished]:
    with Finished.connected() as collector:
        yield collector


def refreshed(result: AnyTaskResult) -> AnyTaskResult:
    result.refresh()
    return result


def value_of(result: AnyTaskResult) -> Any:
    """Refresh ``result`` and return its return value."""
    result.refresh()
    return result.return_value


@override_settings(TASKS=durable(POLL_INTERVAL=0.05))
def test_enqueue_writes_a_row_that_a_pool_worker_runs(finished: Finished) -> None:
    result = bt.add.enqueue(2, 3)
    assert result.status == TaskResultStatus.READY
    assert DBTaskResult.objects.filter(pk=result.id).exists()
    finished.wait([result])
    fetched = task_backends["default"].get_result(result.id)
    assert fetched.status == TaskResultStatus.SUCCESSFUL
    assert fetched.return_value == 5
    assert fetched.worker_ids[-1].startswith("djthreads:")


@override_settings(TASKS=durable(POLL_INTERVAL=0.05))
def test_rollback_leaves_no_row_and_no_run(finished: Finished) -> None:
    with pytest.raises(RuntimeError, match="roll back"), transaction.atomic():
        rolled_back = dt.record.enqueue("rolled-back")
        assert DBTaskResult.objects.filter(pk=rolled_back.id).exists()  # in the transaction
        raise RuntimeError("roll back")
    assert not DBTaskResult.objects.filter(pk=rolled_back.id).exists()
    # A committed task behind it runs; the rolled-back one never did.
    committed = dt.record.enqueue("committed")
    finished.wait([committed])
    assert refreshed(committed).status == TaskResultStatus.SUCCESSFUL
    assert list(Item.objects.values_list("name", flat=True)) == ["committed"]
    assert DBTaskResult.objects.count() == 1
    assert rolled_back.id not in finished.ids


@override_settings(TASKS=durable(POLL_INTERVAL=60.0))
def test_the_commit_wakes_the_dispatcher_without_waiting_for_the_poll(
    finished: Finished,
) -> None:
    first = bt.add.enqueue(1, 1)  # starts the dispatcher; its first look is this poll
    finished.wait([first])
    with transaction.atomic():
        second = bt.add.enqueue(2, 2)
    # The next poll is a minute away: only the commit can have woken it.
    finished.wait([second], timeout=10)
    assert refreshed(second).return_value == 4


@override_settings(TASKS=durable(POLL_INTERVAL=0.05), DJTHREADS={"MAX_WORKERS": 2})
def test_claims_no_more_rows_than_free_pool_workers(finished: Finished) -> None:
    names = [f"bp{n}" for n in range(6)]
    for name in names:
        bt.gates[name] = threading.Event()
        bt.started[name] = threading.Event()
    try:
        results = [bt.hold.enqueue(name) for name in names]
        first_two = [name for name in names[:2]]
        for name in first_two:
            assert bt.started[name].wait(10)
        statuses = dict(
            DBTaskResult.objects.values_list("status").annotate(n=Count("id")).order_by()
        )
        assert statuses == {"RUNNING": 2, "READY": 4}
        assert not any(bt.started[name].is_set() for name in names[2:])
    finally:
        for name in names:
            bt.gates[name].set()
    finished.wait(results)
    assert {refreshed(r).status for r in results} == {TaskResultStatus.SUCCESSFUL}


@override_settings(TASKS=durable(POLL_INTERVAL=0.05), DJTHREADS={"MAX_WORKERS": 1})
def test_higher_priority_runs_first(finished: Finished) -> None:
    bt.gates["prio"] = threading.Event()
    bt.started["prio"] = threading.Event()
    try:
        blocker = bt.hold.enqueue("prio")
        assert bt.started["prio"].wait(10)
        with transaction.atomic():
            low = bt.ordered.using(priority=-10).enqueue("low")
            normal = bt.ordered.enqueue("normal")
            high = bt.ordered.using(priority=10).enqueue("high")
    finally:
        bt.gates["prio"].set()
    finished.wait([blocker, low, normal, high])
    order = [value_of(r) for r in (high, normal, low)]
    assert order == sorted(order)


@override_settings(TASKS=durable(POLL_INTERVAL=60.0))
def test_deferred_task_starts_no_earlier_than_run_after(finished: Finished) -> None:
    run_after = timezone.now() + datetime.timedelta(milliseconds=400)
    result = dt.stamp.using(run_after=run_after).enqueue("deferred")
    assert refreshed(result).status == TaskResultStatus.READY
    # The poll is a minute away: the dispatcher's own timer starts it.
    finished.wait([result], timeout=10)
    started = datetime.datetime.fromisoformat(value_of(result))
    assert started >= run_after


@override_settings(TASKS=durable(POLL_INTERVAL=0.05))
def test_async_task_and_takes_context(finished: Finished) -> None:
    added = bt.async_add.enqueue(20, 22)
    created = bt.async_create_item.enqueue("async")
    context = bt.with_context.enqueue(7)
    finished.wait([added, created, context])
    assert refreshed(added).return_value == 42
    assert Item.objects.get(pk=value_of(created)).name == "async"
    value = refreshed(context).return_value
    assert value == {"id": context.id, "attempt": 1, "value": 7}


@override_settings(TASKS=durable(POLL_INTERVAL=0.05))
def test_failure_is_recorded_and_logged_with_the_task_id(
    finished: Finished, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="djthreads.durable")
    failed = bt.fail.enqueue("boom")
    unserializable = bt.unserializable.enqueue()
    finished.wait([failed, unserializable])
    result = task_backends["default"].get_result(failed.id)
    assert result.status == TaskResultStatus.FAILED
    assert result.errors[0].exception_class_path == "builtins.ValueError"
    assert "ValueError: boom" in result.errors[0].traceback
    assert refreshed(unserializable).status == TaskResultStatus.FAILED
    assert f"id={failed.id} started" in caplog.text
    assert f"id={failed.id} finished status=FAILED" in caplog.text
    errors = [r for r in caplog.records if r.levelno == logging.ERROR and failed.id in r.message]
    assert errors
    assert errors[0].exc_info is not None  # Django's receiver, with the traceback


@override_settings(TASKS=durable(POLL_INTERVAL=0.05))
def test_django_and_djthreads_signals_are_sent(finished: Finished) -> None:
    seen: list[tuple[str, object]] = []

    def on_django(sender: object, task_result: AnyTaskResult, **kwargs: Any) -> None:
        seen.append(("django", sender))

    def on_djthreads(sender: object, name: str, **kwargs: Any) -> None:
        seen.append(("djthreads", name))

    task_started.connect(on_django)
    djthreads_signals.task_started.connect(on_djthreads)
    try:
        result = bt.add.enqueue(1, 2)
        finished.wait([result])
    finally:
        task_started.disconnect(on_django)
        djthreads_signals.task_started.disconnect(on_djthreads)
    assert ("django", DurableBackend) in seen
    assert ("djthreads", "tests.backend_tasks.add") in seen


@postgres_only
@override_settings(TASKS=durable(POLL_INTERVAL=0.05))
def test_no_connection_left_open_after_the_tasks(finished: Finished) -> None:
    results = [bt.select_one.enqueue() for _ in range(12)]
    finished.wait(results)
    assert settled_connections(0) == 0


@override_settings(TASKS=durable(RUN_TASKS=False))
def test_run_tasks_off_only_enqueues_until_another_process_runs_it(finished: Finished) -> None:
    result = bt.add.enqueue(3, 4)
    assert not [t for t in threading.enumerate() if t.name.startswith("djthreads-durable")]
    assert refreshed(result).status == TaskResultStatus.READY
    # The same row, now in a "process" that runs tasks: the first request starts it.
    with override_settings(TASKS=durable(POLL_INTERVAL=0.05)):
        request_started.send(sender=None)
        finished.wait([result])
    assert refreshed(result).return_value == 7
