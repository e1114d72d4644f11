from __future__ import annotations

import gc
import logging
import threading
from typing import Any

import pytest
from django.db import connection, connections
from django.utils import translation

from djthreads import DjangoThread
from djthreads.signals import task_finished
from tests import tasks
from tests.conftest import held_connections, postgres_only, settled_connections, uses_pool

pytestmark = pytest.mark.timeout(60)


def test_result_and_exitcode() -> None:
    thread = DjangoThread(target=tasks.add, args=(2, 3))
    assert thread.exitcode is None
    thread.start()
    thread.join(10)
    assert thread.result == 5
    assert thread.exception is None
    assert thread.exitcode == 0


def test_kwargs_and_process_signature() -> None:
    # The multiprocessing.Process(group, target, name, args, kwargs, *, daemon) shape.
    thread = DjangoThread(None, tasks.add, "adder", (), {"a": 1, "b": 1}, daemon=True)
    thread.start()
    thread.join(10)
    assert (thread.name, thread.daemon, thread.result) == ("adder", True, 2)


def test_exception_is_kept_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    hooked: list[Any] = []
    old_hook = threading.excepthook
    threading.excepthook = hooked.append
    try:
        thread = DjangoThread(target=tasks.fail, args=("boom",))
        with caplog.at_level(logging.ERROR, logger="djthreads"):
            thread.start()
            thread.join(10)
    finally:
        threading.excepthook = old_hook
    assert isinstance(thread.exception, ValueError)
    assert thread.exitcode == 1
    assert thread.result is None
    records = [r for r in caplog.records if r.name == "djthreads"]
    assert len(records) == 1
    assert "tests.tasks.fail" in records[0].getMessage()
    assert records[0].exc_info is not None
    assert hooked == []  # not reported a second time by threading.excepthook


class CountingThread(DjangoThread):
    def __init__(self) -> None:
        super().__init__()
        self.vendor = ""

    def run(self) -> int:  # type: ignore[override]
        self.vendor = connection.vendor
        return tasks.select_one()


@pytest.mark.django_db(transaction=True)
def test_subclass_run_closes_connections() -> None:
    thread = CountingThread()
    thread.start()
    thread.join(10)
    assert thread.result == 1
    assert thread.exitcode == 0
    assert thread.vendor == connection.vendor


class SuperCallingThread(DjangoThread):
    def run(self) -> None:
        super().run()


def test_subclass_calling_super_run_keeps_target_result() -> None:
    thread = SuperCallingThread(target=tasks.add, args=(4, 4))
    thread.start()
    thread.join(10)
    assert thread.result == 8
    assert thread.exitcode == 0


@pytest.mark.django_db(transaction=True)
def test_connection_is_closed_in_the_thread() -> None:
    seen: dict[str, Any] = {}

    def work() -> None:
        tasks.select_one()
        seen["wrapper"] = connections["default"]
        seen["open_during"] = connections["default"].connection is not None

    thread = DjangoThread(target=work)
    thread.start()
    thread.join(10)
    assert seen["open_during"] is True
    assert seen["wrapper"].connection is None


def test_contextvars_and_language_are_copied() -> None:
    token = tasks.request_id.set("req-42")
    try:
        with translation.override("fr"):
            thread = DjangoThread(
                target=lambda: (tasks.current_request_id(), tasks.current_language())
            )
            thread.start()
        thread.join(10)
    finally:
        tasks.request_id.reset(token)
    assert thread.result == ("req-42", "fr")


def test_signal_sent_from_the_thread() -> None:
    names: list[str] = []

    def receiver(**kwargs: Any) -> None:
        names.append(threading.current_thread().name)

    task_finished.connect(receiver)
    try:
        thread = DjangoThread(target=tasks.noop, name="signal-thread")
        thread.start()
        thread.join(10)
    finally:
        task_finished.disconnect(receiver)
    assert names == ["signal-thread"]


@postgres_only
@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("no_gc")
def test_200_threads_in_waves_leave_no_connection() -> None:
    before = held_connections()
    for _wave in range(4):
        threads = [DjangoThread(target=tasks.select_one) for _ in range(50)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert [t.exitcode for t in threads] == [0] * 50
    assert before == 0
    assert settled_connections(0) == 0


@postgres_only
@pytest.mark.skipif(uses_pool(), reason="a leaked pool slot would starve the rest of the run")
@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("no_gc")
def test_plain_threads_do_leak_which_is_why_this_exists() -> None:
    # The control experiment: without djthreads the connections stay open.
    threads = [threading.Thread(target=tasks.select_one) for _ in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert settled_connections(5) == 5
    # The leaked connections are unreachable reference cycles: only the
    # collector can close them, which is what this test proved.
    gc.collect()
    assert settled_connections(0) == 0


@pytest.mark.django_db(transaction=True)
def test_run_called_directly_leaves_the_callers_connection_alone() -> None:
    tasks.select_one()
    mine = connections["default"]
    assert mine.connection is not None
    thread = DjangoThread(target=tasks.select_one)
    thread.run()  # as Process.run() may be called: in this thread
    assert mine.connection is not None
    assert thread.exitcode is None


class RecordingThread(DjangoThread):
    def run(self) -> None:
        tasks.select_one()
        self.wrapper = connections["default"]


@pytest.mark.django_db(transaction=True)
def test_subclass_connection_is_closed() -> None:
    thread = RecordingThread()
    thread.start()
    thread.join(10)
    assert thread.exitcode == 0
    assert thread.wrapper.connection is None
