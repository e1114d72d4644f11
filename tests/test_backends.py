"""ThreadPoolBackend: the Django Tasks API on the djthreads pool, on both Django lines."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import gc
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.db import connection, transaction
from django.test import override_settings
from django.utils import timezone, translation

import djthreads
from djthreads import QueueFullError, backends
from djthreads._tasks_compat import (
    AnyTaskResult,
    InvalidTask,
    TaskResult,
    TaskResultDoesNotExist,
    TaskResultStatus,
    task_backends,
    task_enqueued,
    task_finished,
    task_started,
)
from djthreads.backends import ThreadPoolBackend
from tests import backend_tasks as bt
from tests.backend_tasks import Finished
from tests.conftest import (
    held_connections,
    postgres_only,
    run_exiting_child,
    settled_connections,
    uses_pool,
)
from tests.models import Item
from tests.tasks import request_id

pytestmark = pytest.mark.timeout(60)

BACKEND = "djthreads.backends.ThreadPoolBackend"


def tasks_setting(**options: Any) -> dict[str, Any]:
    return {"default": {"BACKEND": BACKEND, "OPTIONS": options}}


@pytest.fixture(autouse=True)
def backend() -> Iterator[None]:
    """Make ThreadPoolBackend the default task backend for the test."""
    with override_settings(TASKS=tasks_setting()):
        yield


@pytest.fixture
def finished() -> Iterator[Finished]:
    with Finished.connected() as collector:
        yield collector


def refreshed(result: AnyTaskResult) -> AnyTaskResult:
    result.refresh()
    return result


def value_of(result: AnyTaskResult) -> Any:
    """Refresh ``result`` and return its return value (raises if it did not succeed)."""
    result.refresh()
    return result.return_value


def test_enqueue_returns_ready_result_and_runs_in_a_pool_worker(finished: Finished) -> None:
    result = bt.add.enqueue(2, 3)
    assert result.status == TaskResultStatus.READY
    assert result.backend == "default"
    assert result.args == [2, 3]
    finished.wait([result])
    assert result.status == TaskResultStatus.READY  # a snapshot, until refresh()
    done = refreshed(result)
    assert done.status == TaskResultStatus.SUCCESSFUL
    assert done.return_value == 5
    assert done.attempts == 1
    assert done.enqueued_at is not None
    assert done.started_at is not None
    assert done.finished_at is not None
    assert done.enqueued_at <= done.started_at <= done.finished_at
    named = bt.thread_name.enqueue()
    finished.wait([named])
    name = value_of(named)
    assert name.startswith("djthreads_")
    assert named.worker_ids[0].endswith(name)


@pytest.mark.usefixtures("no_gc")
def test_finished_tasks_leave_no_reference_cycle(finished: Finished) -> None:
    # A cycle per task (the Work and its Future's done-callback, say) would
    # leave ~20 objects a task that only gc can free, a third of a no-op
    # task's cost under load (benchmarks/backend_bench.py).
    results = [bt.add.enqueue(n, n) for n in range(100)]
    finished.wait(results)
    djthreads.wait_for_tasks(timeout=10)
    gc.set_debug(gc.DEBUG_SAVEALL)  # what gc finds stays in gc.garbage, to look at
    try:
        gc.collect()
        left = [type(o).__name__ for o in gc.garbage if type(o).__name__ in ("Work", "_Job")]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
    assert left == []


def test_get_result_by_id_and_unknown_id(finished: Finished) -> None:
    result = bt.add.enqueue(1, 1)
    finished.wait([result])
    fetched = bt.add.get_result(result.id)
    assert fetched.status == TaskResultStatus.SUCCESSFUL
    assert fetched.return_value == 2
    assert task_backends["default"].get_result(result.id).id == result.id
    with pytest.raises(TaskResultDoesNotExist, match="per process"):
        task_backends["default"].get_result("no-such-id")


def test_aenqueue_aget_result_and_arefresh(finished: Finished) -> None:
    async def scenario() -> AnyTaskResult:
        return await bt.add.aenqueue(20, 22)

    result = asyncio.run(scenario())
    finished.wait([result])

    async def fetch() -> tuple[AnyTaskResult, AnyTaskResult]:
        await result.arefresh()
        return result, await bt.add.aget_result(result.id)

    refreshed_result, fetched = asyncio.run(fetch())
    assert refreshed_result.return_value == 42
    assert fetched.return_value == 42


def _still_kept(results: list[AnyTaskResult]) -> list[AnyTaskResult]:
    """The results the default backend still holds, fetched fresh."""
    kept = []
    for result in results:
        with contextlib.suppress(TaskResultDoesNotExist):
            kept.append(task_backends["default"].get_result(result.id))
    return kept


def test_finished_results_are_bounded_per_alias(finished: Finished) -> None:
    with override_settings(TASKS=tasks_setting(MAX_RESULTS=3)):
        results = [bt.ordered.enqueue(str(n)) for n in range(5)]
        finished.wait(results)
        kept = _still_kept(results)
        assert len(kept) == 3
        assert all(result.is_finished for result in kept)


def test_concurrent_finishes_keep_exactly_max_results(finished: Finished) -> None:
    # Workers record and evict without a lock: each evicts at most one
    # result, only while more than MAX_RESULTS are kept, so finishing side
    # by side never leaves fewer (or more) than MAX_RESULTS.
    with override_settings(TASKS=tasks_setting(MAX_RESULTS=20)):
        results = [bt.add.enqueue(n, 1) for n in range(400)]
        finished.wait(results)
        kept = _still_kept(results)
        assert len(kept) == 20
        assert all(result.is_finished for result in kept)


def test_a_new_tasks_setting_drops_old_results(finished: Finished) -> None:
    result = bt.add.enqueue(1, 2)
    finished.wait([result])
    assert task_backends["default"].get_result(result.id).return_value == 3
    with override_settings(TASKS=tasks_setting()), pytest.raises(TaskResultDoesNotExist):
        task_backends["default"].get_result(result.id)


@pytest.mark.parametrize("assembled", [True, False], ids=["assembled", "constructor"])
def test_the_ready_result_is_the_one_the_taskresult_constructor_makes(
    assembled: bool, monkeypatch: pytest.MonkeyPatch, finished: Finished
) -> None:
    # enqueue() assembles its two READY results field by field, or, should
    # Django's TaskResult fields change, falls back to the constructor.
    monkeypatch.setattr(backends, "_assemble_ready", assembled)
    result = bt.add.enqueue(2, b=3)
    expected: AnyTaskResult = TaskResult(
        task=bt.add,
        id=result.id,
        status=TaskResultStatus.READY,
        enqueued_at=result.enqueued_at,
        started_at=None,
        finished_at=None,
        last_attempted_at=None,
        args=[2],
        kwargs={"b": 3},
        backend="default",
        errors=[],
        worker_ids=[],
    )
    assert result == expected
    assert type(result.args) is list
    finished.wait([result])
    assert refreshed(result).return_value == 5
    with pytest.raises(TypeError, match="Unsupported type"):
        bt.add.enqueue(object(), 1)  # type: ignore[arg-type]


def test_a_task_is_validated_again_after_a_settings_change(finished: Finished) -> None:
    # enqueue() skips validating the Task it validated last, until a setting changes.
    with override_settings(USE_TZ=False):
        naive = bt.add.using(run_after=datetime.datetime(2000, 1, 1))
        result = naive.enqueue(1, 2)
        finished.wait([result])
        assert refreshed(result).return_value == 3
    with pytest.raises(InvalidTask, match="aware"):
        naive.enqueue(1, 2)


def test_failure_is_recorded_with_class_path_and_traceback(finished: Finished) -> None:
    result = bt.fail.enqueue("boom")
    finished.wait([result])
    result.refresh()
    assert result.status == TaskResultStatus.FAILED
    assert result.finished_at is not None
    [error] = result.errors
    assert error.exception_class_path == "builtins.ValueError"
    assert error.exception_class is ValueError
    assert "ValueError: boom" in error.traceback
    assert "in fail" in error.traceback
    with pytest.raises(ValueError, match="failed"):
        result.return_value  # noqa: B018


def test_a_return_value_that_is_not_json_fails_the_task(finished: Finished) -> None:
    result = bt.unserializable.enqueue()
    finished.wait([result])
    result.refresh()
    assert result.status == TaskResultStatus.FAILED
    assert result.errors[0].exception_class_path == "builtins.TypeError"


def test_signals_are_sent_in_order_from_the_right_threads(finished: Finished) -> None:
    seen: list[tuple[str, str, str, type]] = []
    lock = threading.Lock()

    def receiver(name: str) -> Callable[..., None]:
        def receive(sender: type, task_result: AnyTaskResult, **kwargs: Any) -> None:
            with lock:
                seen.append((name, task_result.id, threading.current_thread().name, sender))

        return receive

    receivers = {
        task_enqueued: receiver("enqueued"),
        task_started: receiver("started"),
        task_finished: receiver("finished"),
    }
    for signal, receive in receivers.items():
        signal.connect(receive, weak=False)
    try:
        result = bt.add.enqueue(1, 2)
        finished.wait([result])
    finally:
        for signal, receive in receivers.items():
            signal.disconnect(receive)
    mine = [entry for entry in seen if entry[1] == result.id]
    assert [entry[0] for entry in mine] == ["enqueued", "started", "finished"]
    assert mine[0][2] == threading.current_thread().name
    assert mine[1][2].startswith("djthreads_")
    assert mine[2][2] == mine[1][2]
    assert all(entry[3] is ThreadPoolBackend for entry in mine)


def test_takes_context_gets_the_task_result(finished: Finished) -> None:
    result = bt.with_context.enqueue(7)
    finished.wait([result])
    assert refreshed(result).return_value == {"id": result.id, "attempt": 1, "value": 7}


def test_async_task_runs_to_completion_in_the_worker(finished: Finished) -> None:
    result = bt.async_add.enqueue(3, 4)
    finished.wait([result])
    assert refreshed(result).return_value == 7


@pytest.mark.django_db(transaction=True)
def test_async_task_database_access_leaves_no_connection(finished: Finished) -> None:
    results = [bt.async_create_item.enqueue(f"async-{n}") for n in range(10)]
    finished.wait(results)
    pks = [value_of(result) for result in results]
    assert Item.objects.filter(pk__in=pks).count() == 10
    if connection.vendor == "postgresql":
        assert (held_connections() if uses_pool() else settled_connections(0)) == 0


def test_context_and_language_are_carried_from_the_enqueuer(finished: Finished) -> None:
    token = request_id.set("req-42")
    try:
        with translation.override("fr"):
            result = bt.carried.enqueue()
    finally:
        request_id.reset(token)
    finished.wait([result])
    assert refreshed(result).return_value == {"request_id": "req-42", "language": "fr"}


def test_higher_priority_overtakes_queued_lower_ones(finished: Finished) -> None:
    bt.gates["prio"], bt.started["prio"] = threading.Event(), threading.Event()
    with override_settings(DJTHREADS={"MAX_WORKERS": 1}):
        blocker = bt.hold.enqueue("prio")
        try:
            assert bt.started["prio"].wait(10)
            low = [bt.ordered.using(priority=-10).enqueue(f"low-{n}") for n in range(5)]
            high = bt.ordered.using(priority=10).enqueue("high")
            middle = [bt.ordered.enqueue(f"middle-{n}") for n in range(3)]  # priority 0
        finally:
            bt.gates["prio"].set()
        finished.wait([blocker, *low, high, *middle])
    lows = [value_of(result) for result in low]
    middles = [value_of(result) for result in middle]
    assert value_of(high) < min(middles)
    assert max(middles) < min(lows)
    assert lows == sorted(lows)  # equal priorities: first come, first served
    assert middles == sorted(middles)


def test_a_ready_task_runs_after_the_pool_cancels_the_one_ahead_of_it(
    finished: Finished,
) -> None:
    # The only worker is busy with other work, so the first task waits in the
    # pool's queue and the second in ours. Shutting the pool down cancels the
    # first; the slot it held must go to the second (in the new default pool).
    gate = threading.Event()
    with override_settings(DJTHREADS={"MAX_WORKERS": 1}):
        pool = djthreads.get_executor()
        busy = pool.submit(gate.wait, 10)
        try:
            queued = bt.add.enqueue(1, 1)
            waiting = bt.add.enqueue(2, 2)
            pool.shutdown(wait=False, cancel_futures=True)
            finished.wait([queued, waiting])
        finally:
            gate.set()
        assert busy.result(timeout=10) is True
    assert refreshed(queued).status == TaskResultStatus.FAILED
    assert "the djthreads pool shut down" in queued.errors[0].traceback
    assert value_of(waiting) == 4


def test_run_after_is_honoured_without_a_thread_per_task(finished: Finished) -> None:
    def others() -> set[threading.Thread]:
        return {t for t in threading.enumerate() if not t.name.startswith("djthreads_")}

    before = others()
    run_after = timezone.now() + datetime.timedelta(milliseconds=300)
    deferred = [bt.ordered.using(run_after=run_after).enqueue(str(n)) for n in range(20)]
    new = others() - before
    assert len(new) <= 1, new
    assert all(thread.name == "djthreads-tasks-dispatcher" for thread in new)
    finished.wait(deferred)
    for result in deferred:
        result.refresh()
        assert result.status == TaskResultStatus.SUCCESSFUL
        assert result.started_at is not None
        assert result.started_at >= run_after


def test_run_after_must_be_aware() -> None:
    with pytest.raises(InvalidTask, match="aware"):
        bt.add.using(run_after=datetime.datetime(2030, 1, 1))


@pytest.mark.django_db(transaction=True)
def test_enqueue_on_commit_waits_for_the_commit(finished: Finished) -> None:
    enqueued: list[str] = []

    def receive(sender: type, task_result: AnyTaskResult, **kwargs: Any) -> None:
        enqueued.append(task_result.id)

    task_enqueued.connect(receive, weak=False)
    try:
        with transaction.atomic():
            result = bt.create_item.enqueue("committed")
            assert enqueued == []
            assert task_backends["default"].get_result(result.id).status == "READY"
        assert enqueued == [result.id]
    finally:
        task_enqueued.disconnect(receive)
    finished.wait([result])
    assert Item.objects.filter(pk=value_of(result), name="committed").exists()


@pytest.mark.django_db(transaction=True)
def test_enqueue_on_commit_drops_the_task_on_rollback(finished: Finished) -> None:
    class Rollback(Exception):
        pass

    with pytest.raises(Rollback), transaction.atomic():
        dropped = bt.create_item.enqueue("rolled-back")
        raise Rollback
    with pytest.raises(TaskResultDoesNotExist):
        task_backends["default"].get_result(dropped.id)
    later = bt.create_item.enqueue("later")
    finished.wait([later])
    assert list(Item.objects.values_list("name", flat=True)) == ["later"]


@pytest.mark.django_db(transaction=True)
def test_enqueue_on_commit_false_runs_inside_the_transaction(finished: Finished) -> None:
    with override_settings(TASKS=tasks_setting(ENQUEUE_ON_COMMIT=False)):
        with transaction.atomic():
            result = bt.create_item.enqueue("not-held")
            finished.wait([result])  # would time out if held until the commit
        assert refreshed(result).status == TaskResultStatus.SUCCESSFUL


def test_full_queue_raises_when_on_full_is_raise(finished: Finished) -> None:
    bt.gates["full"], bt.started["full"] = threading.Event(), threading.Event()
    limits = {"MAX_WORKERS": 1, "MAX_QUEUE": 1, "ON_FULL": "raise"}
    with override_settings(DJTHREADS=limits):
        blocker = bt.hold.enqueue("full")
        try:
            assert bt.started["full"].wait(10)
            waiting = bt.add.enqueue(1, 1)
            with pytest.raises(QueueFullError, match="MAX_QUEUE"):
                bt.add.enqueue(2, 2)
        finally:
            bt.gates["full"].set()
        finished.wait([blocker, waiting])
    assert refreshed(waiting).return_value == 2


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"ENQUEUE_ON_COMMIT": "yes"}, "ENQUEUE_ON_COMMIT'] must be True or False, got 'yes'"),
        ({"USING": "nowhere"}, "USING'] must be a database alias"),
        ({"MAX_RESULTS": 0}, "MAX_RESULTS'] must be a positive integer, got 0"),
        ({"MAX_WORKERS": 4}, "unknown key 'MAX_WORKERS'"),
    ],
)
def test_bad_options_are_reported_by_check_and_enqueue(
    options: dict[str, Any], message: str
) -> None:
    with override_settings(TASKS=tasks_setting(**options)):
        backend = task_backends["default"]
        errors = backend.check()
        assert [error.id for error in errors if message in error.msg]
        with pytest.raises(ImproperlyConfigured, match="TASKS\\['default'\\]\\['OPTIONS'\\]"):
            bt.add.enqueue(1, 1)


def test_good_options_pass_the_check() -> None:
    options = {"ENQUEUE_ON_COMMIT": False, "USING": "default", "MAX_RESULTS": 10}
    with override_settings(TASKS=tasks_setting(**options)):
        assert list(task_backends["default"].check()) == []


@postgres_only
@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(120)
@pytest.mark.usefixtures("no_gc")
def test_no_connection_left_after_1000_tasks(finished: Finished) -> None:
    results = [bt.select_one.enqueue() for _ in range(1000)]
    finished.wait(results, timeout=90)
    statuses = {task_backends["default"].get_result(r.id).status for r in results}
    assert statuses == {TaskResultStatus.SUCCESSFUL}
    if uses_pool():
        assert held_connections() == 0
    else:
        assert settled_connections(0) == 0


def test_exit_runs_queued_tasks_and_names_the_deferred_ones() -> None:
    # After "main thread done" the interpreter is exiting; "ready" still
    # waits behind "gate" until run_exiting_child sends "go".
    returncode, out, err = run_exiting_child("backend_exit_child.py")
    assert returncode == 0, err
    assert out == "gate done\nready ran\n"
    [warning] = [line for line in err.splitlines() if "never started" in line]
    assert warning.startswith("WARNING:djthreads.backends:exit: tasks=[__main__.later id=")
