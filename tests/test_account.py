"""One account of every task: waits, in-task waits, exit, the Tasks backend, log lines.

Issue 9's behaviours, each on SQLite and PostgreSQL and on both Django lines.
"""

from __future__ import annotations

import concurrent.futures
import functools
import logging
import re
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.test import override_settings

import djthreads
from djthreads import DjangoExecutor
from djthreads._tasks_compat import AnyTaskResult, TaskResultStatus, task_finished, task_started
from djthreads.backends import ThreadPoolBackend
from djthreads.signals import task_finished as djthreads_finished
from tests import backend_tasks as bt
from tests import tasks
from tests.conftest import run_exiting_child

pytestmark = pytest.mark.timeout(60)

BACKEND = "djthreads.backends.ThreadPoolBackend"


class SubclassBackend(ThreadPoolBackend):
    """A backend subclass: its signals must name it, not ThreadPoolBackend."""


@pytest.fixture
def one_worker() -> Iterator[None]:
    with override_settings(DJTHREADS={"MAX_WORKERS": 1}, TASKS={"default": {"BACKEND": BACKEND}}):
        yield


# -- wait_for_tasks() ------------------------------------------------------------------


@pytest.mark.usefixtures("one_worker")
def test_wait_for_tasks_waits_for_ready_backend_tasks() -> None:
    bt.gates["w"] = threading.Event()
    bt.started["w"] = threading.Event()
    first = bt.hold.enqueue("w")
    rest = [bt.add.enqueue(n, 1) for n in range(4)]
    assert bt.started["w"].wait(10)
    bt.gates["w"].set()
    djthreads.wait_for_tasks(timeout=20)
    results: list[AnyTaskResult] = [first, *rest]
    for result in results:
        result.refresh()
    assert [r.status for r in results] == [TaskResultStatus.SUCCESSFUL] * 5


@pytest.mark.usefixtures("one_worker")
def test_wait_for_tasks_inside_a_task_waits_for_its_children_not_itself() -> None:
    # One worker: the children can only run if the waiting task runs them itself.
    result = bt.fan_out.enqueue(3)
    djthreads.wait_for_tasks(timeout=20)
    result.refresh()
    assert result.status == TaskResultStatus.SUCCESSFUL, result.errors
    assert result.return_value == 0 + 2 + 4


@override_settings(DJTHREADS={"MAX_WORKERS": 1})
def test_waiting_on_a_queued_child_future_runs_it_in_the_waiting_worker() -> None:
    def parent() -> tuple[str, str]:
        child = djthreads.submit(tasks.thread_name)
        return threading.current_thread().name, child.result(10)

    outer, inner = djthreads.submit(parent).result(20)
    assert outer == inner  # the only worker ran the child itself, inline


@override_settings(DJTHREADS={"MAX_WORKERS": 1})
def test_waiting_on_a_queued_child_exception_runs_it_too() -> None:
    def parent() -> str:
        exc = djthreads.submit(tasks.fail, "child").exception(10)
        return repr(exc)

    assert djthreads.submit(parent).result(20) == "ValueError('child')"


def test_wait_for_tasks_does_not_wait_for_later_unrelated_work() -> None:
    release = threading.Event()
    early = djthreads.submit(tasks.noop)
    djthreads.wait_for_tasks(timeout=10)
    assert early.done()
    held = djthreads.submit(tasks.wait_for, release)
    with pytest.raises(TimeoutError, match=r"tests\.tasks\.wait_for id=\w+ args=\(<threading"):
        djthreads.wait_for_tasks(timeout=0.2)
    release.set()
    assert held.result(10) is True


def test_a_shut_down_default_pool_is_replaced_by_a_fresh_one() -> None:
    old = djthreads.get_executor()
    old.shutdown(wait=True)
    assert djthreads.submit(tasks.add, 1, 1).result(10) == 2
    assert djthreads.get_executor() is not old


# -- exit -------------------------------------------------------------------------------


def test_exit_drains_a_user_executor() -> None:
    returncode, out, err = run_exiting_child("executor_exit_child.py", "drain", timeout=30)
    assert returncode == 0, err
    assert sorted(out.split("\n")[:-1]) == [f"task {n} ran" for n in range(4)]
    assert "WARNING" not in err


def test_exit_names_each_unfinished_task_of_a_user_executor() -> None:
    returncode, _, err = run_exiting_child("executor_exit_child.py", "stuck", timeout=30)
    assert returncode == 0, err
    assert re.search(
        r"WARNING:djthreads:exit: shutdown_timeout=1\.0s expired for pool=stuckpool: "
        r"running=\[__main__\.stuck id=\w+ args=\('first',\)\] "
        r"cancelled=\[__main__\.stuck id=\w+ args=\('second',\)\]",
        err,
    ), err


def test_a_submit_after_the_exit_drain_is_refused_not_lost() -> None:
    returncode, out, err = run_exiting_child("executor_exit_child.py", "atexit", timeout=30)
    assert returncode == 0, err
    assert out == "refused: cannot schedule new futures after interpreter shutdown\n", err


# -- the Tasks backend never leaves a result RUNNING -----------------------------------


def run_on_the_backend(enqueue: Callable[[], AnyTaskResult]) -> AnyTaskResult:
    """Enqueue on ThreadPoolBackend, wait for the task, return its refreshed result."""
    with override_settings(TASKS={"default": {"BACKEND": BACKEND}}):
        result = enqueue()
        djthreads.wait_for_tasks(timeout=20)
        result.refresh()
    return result


def test_keyboard_interrupt_in_a_backend_task_ends_it_failed() -> None:
    finished: list[Any] = []

    def on_finished(sender: type, task_result: Any, **kwargs: Any) -> None:
        finished.append((sender, task_result.id))

    task_finished.connect(on_finished)
    try:
        result = run_on_the_backend(bt.interrupted.enqueue)
    finally:
        task_finished.disconnect(on_finished)
    assert result.status == TaskResultStatus.FAILED
    assert result.finished_at is not None
    assert result.errors[0].exception_class_path == "builtins.KeyboardInterrupt"
    assert finished == [(ThreadPoolBackend, result.id)]


def test_a_raising_task_started_receiver_ends_the_result_failed() -> None:
    def explode(sender: type, **kwargs: Any) -> None:
        raise RuntimeError("receiver broke")

    task_started.connect(explode)
    try:
        result = run_on_the_backend(functools.partial(bt.add.enqueue, 1, 2))
    finally:
        task_started.disconnect(explode)
    assert result.status == TaskResultStatus.FAILED
    assert result.finished_at is not None
    assert result.errors[0].exception_class_path == "builtins.RuntimeError"


def test_task_signals_name_the_backends_own_class() -> None:
    senders: list[type] = []

    def record(sender: type, **kwargs: Any) -> None:
        senders.append(sender)

    backend = f"{__name__}.SubclassBackend"
    task_started.connect(record, sender=SubclassBackend)
    task_finished.connect(record, sender=SubclassBackend)
    try:
        with override_settings(TASKS={"default": {"BACKEND": backend}}):
            bt.add.enqueue(1, 2)
            djthreads.wait_for_tasks(timeout=20)
    finally:
        task_started.disconnect(record, sender=SubclassBackend)
        task_finished.disconnect(record, sender=SubclassBackend)
    assert senders == [SubclassBackend, SubclassBackend]


# -- log lines identify the work --------------------------------------------------------


def test_a_partial_is_logged_by_the_function_it_wraps_with_id_and_arguments(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ids: list[str] = []

    def record(sender: object, *, task_id: str, **kwargs: Any) -> None:
        ids.append(task_id)

    djthreads_finished.connect(record)
    try:
        with caplog.at_level(logging.ERROR, logger="djthreads"):
            future = djthreads.submit(functools.partial(tasks.fail, "x" * 500))
            assert isinstance(future.exception(10), ValueError)
            djthreads.wait_for_tasks(timeout=10)
    finally:
        djthreads_finished.disconnect(record)
    [message] = [r.getMessage() for r in caplog.records if r.name == "djthreads"]
    match = re.fullmatch(r"task=tests\.tasks\.fail id=(\w+) args=(\(.*\)) failed", message)
    assert match is not None, message
    assert match.group(1) == ids[0]
    assert len(match.group(2)) <= 120
    assert "0x" not in message


@override_settings(DJTHREADS={"LOG_ARGUMENTS": False})
def test_log_arguments_false_leaves_arguments_out(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="djthreads"):
        assert isinstance(djthreads.submit(tasks.fail, "secret").exception(10), ValueError)
        djthreads.wait_for_tasks(timeout=10)
    [message] = [r.getMessage() for r in caplog.records if r.name == "djthreads"]
    assert re.fullmatch(r"task=tests\.tasks\.fail id=\w+ failed", message), message
    assert "secret" not in message


def test_user_executor_futures_help_their_own_worker() -> None:
    pool = DjangoExecutor(1, max_queue=10)
    try:

        def parent() -> int:
            return int(pool.submit(tasks.add, 2, 3).result(10))

        assert pool.submit(parent).result(20) == 5
    finally:
        pool.shutdown(timeout=10)


def test_executor_wait_for_tasks_inside_its_own_task_does_not_wait_for_itself() -> None:
    pool = DjangoExecutor(1, max_queue=10)
    try:

        def parent() -> list[int]:
            children = [pool.submit(tasks.add, n, n) for n in range(3)]
            pool.wait_for_tasks(timeout=10)
            return [child.result(0) for child in children]

        assert pool.submit(parent).result(20) == [0, 2, 4]
    finally:
        pool.shutdown(timeout=10)


def test_account_holds_nothing_after_the_work_ends() -> None:
    from djthreads import _account

    futures = [djthreads.submit(tasks.noop) for _ in range(20)]
    concurrent.futures.wait(futures, 10)
    djthreads.wait_for_tasks(timeout=10)
    assert [w for w in _account.outstanding() if w.future in futures] == []
