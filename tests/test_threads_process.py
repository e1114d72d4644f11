"""DjangoThread behaves like multiprocessing.Process where a thread can."""

from __future__ import annotations

import concurrent.futures
import logging
import multiprocessing
import multiprocessing.connection
import os
import re
import sys
import threading
import unittest
from typing import Any

import pytest

import djthreads
from djthreads import DjangoThread, DjThreadsError, UnstoppableThreadError
from djthreads import test as djtest
from djthreads.signals import task_finished
from tests import tasks


def _plain(message: str) -> str:
    """A log line without the task's id and arguments (tests/test_account.py checks those)."""
    return re.sub(r" id=\w+( args=\(.*\))?(?= )", "", message, count=1)


pytestmark = pytest.mark.timeout(60)

# sys.exit(code) -> Process.exitcode, by multiprocessing.process.BaseProcess._bootstrap.
EXIT_CODES: list[tuple[object, int]] = [
    (None, 0),
    (0, 0),
    (False, 0),
    (3, 3),
    (True, 1),
    ("bad input", 1),
]


def _errors(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "djthreads" and r.levelno >= logging.ERROR]


def _run_thread(target: Any, *args: Any) -> DjangoThread:
    thread = DjangoThread(target=target, args=args)
    thread.start()
    thread.join(10)
    assert not thread.is_alive()
    return thread


@pytest.mark.parametrize(("code", "exitcode"), EXIT_CODES)
def test_sys_exit_sets_the_exitcode_a_process_would(
    code: object, exitcode: int, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG, logger="djthreads"):
        thread = _run_thread(sys.exit, code)
    assert thread.exitcode == exitcode
    assert type(thread.exitcode) is int
    assert thread.result is None
    if exitcode == 0:
        # A clean end: nothing to report, as a Process prints nothing.
        assert thread.exception is None
        assert _errors(caplog) == []
    else:
        assert isinstance(thread.exception, SystemExit)
        [record] = _errors(caplog)
        assert _plain(record.getMessage()) == "task=sys.exit failed"
        assert record.exc_info is not None
        # Where a Process writes a non-int code to stderr, the log has it.
        assert repr(code) in repr(record.exc_info[1]) or str(code) in str(record.exc_info[1])


@pytest.mark.timeout(120)
def test_exitcodes_match_a_real_process() -> None:
    # The same targets in real (spawned) processes: the table above is Python's.
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=sys.exit, args=(code,)) for code, _ in EXIT_CODES]
    for process in processes:
        process.start()
    for process in processes:
        process.join(60)
    threads = [_run_thread(sys.exit, code) for code, _ in EXIT_CODES]
    assert [t.exitcode for t in threads] == [p.exitcode for p in processes]
    assert [p.exitcode for p in processes] == [exitcode for _, exitcode in EXIT_CODES]


@pytest.mark.parametrize("code", [None, 0])
def test_a_clean_exit_is_reported_to_signals_as_a_normal_end(code: int | None) -> None:
    seen: list[tuple[str, BaseException | None]] = []

    def receiver(*, name: str, exception: BaseException | None, **kwargs: Any) -> None:
        seen.append((name, exception))

    task_finished.connect(receiver)
    try:
        _run_thread(sys.exit, code)
    finally:
        task_finished.disconnect(receiver)
    assert seen == [("sys.exit", None)]


def test_a_clean_exit_in_a_pool_task_is_not_logged_as_an_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The Future keeps the SystemExit, as with ThreadPoolExecutor.
    with caplog.at_level(logging.DEBUG, logger="djthreads"):
        future: concurrent.futures.Future[Any] = djthreads.submit(sys.exit, 0)
        with pytest.raises(SystemExit):
            future.result(10)
    assert _errors(caplog) == []
    assert "task=sys.exit ended with sys.exit(0)" in [
        _plain(r.getMessage()) for r in caplog.records
    ]


def test_a_failing_exit_in_a_pool_task_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="djthreads"):
        future: concurrent.futures.Future[Any] = djthreads.submit(sys.exit, 2)
        assert isinstance(future.exception(10), SystemExit)
    assert [_plain(r.getMessage()) for r in _errors(caplog)] == ["task=sys.exit failed"]


def test_before_start() -> None:
    thread = DjangoThread(target=tasks.noop)
    assert thread.exitcode is None
    assert thread.ident is None
    assert thread.is_alive() is False
    with pytest.raises(ValueError, match="not started"):
        _ = thread.sentinel


def test_close_refuses_a_running_thread_and_works_after_join() -> None:
    release = threading.Event()
    thread = DjangoThread(target=tasks.wait_for, args=(release,), name="closing")
    thread.start()
    try:
        with pytest.raises(ValueError, match="Cannot close DjangoThread 'closing' while it is"):
            thread.close()
        assert thread.is_alive()  # still usable
    finally:
        release.set()
        thread.join(10)
    assert thread.exitcode == 0
    thread.close()
    thread.close()  # twice is fine, as on a Process
    assert "closed" in repr(thread)
    assert (thread.name, thread.daemon, thread.result) == ("closing", False, True)


@pytest.mark.parametrize(
    "use",
    [
        lambda t: t.start(),
        lambda t: t.join(1),
        lambda t: t.is_alive(),
        lambda t: t.exitcode,
        lambda t: t.ident,
        lambda t: t.sentinel,
        lambda t: t.terminate(),
        lambda t: t.kill(),
    ],
    ids=["start", "join", "is_alive", "exitcode", "ident", "sentinel", "terminate", "kill"],
)
def test_a_closed_thread_raises_value_error_like_a_closed_process(use: Any) -> None:
    thread = _run_thread(tasks.noop)
    thread.close()
    with pytest.raises(ValueError, match="DjangoThread '.*' is closed"):
        use(thread)
    process = multiprocessing.get_context("spawn").Process(target=tasks.noop)
    process.close()
    with pytest.raises(ValueError, match="process object is closed"):
        use(process)


def test_close_before_start_then_start_refuses() -> None:
    thread = DjangoThread(target=tasks.noop)
    thread.close()
    with pytest.raises(ValueError, match="is closed"):
        thread.start()


@pytest.mark.parametrize("method", ["terminate", "kill"])
def test_terminate_and_kill_explain_what_to_use_instead(method: str) -> None:
    release = threading.Event()
    thread = DjangoThread(target=tasks.wait_for, args=(release,), name="busy")
    thread.start()
    try:
        with pytest.raises(UnstoppableThreadError) as raised:
            getattr(thread, method)()
        assert thread.is_alive()  # nothing was stopped
    finally:
        release.set()
        thread.join(10)
    assert isinstance(raised.value, DjThreadsError)
    assert isinstance(raised.value, NotImplementedError)
    message = str(raised.value)
    assert f"DjangoThread 'busy' cannot {method}()" in message
    assert "threading.Event" in message
    assert "DjangoProcess" in message
    assert thread.exitcode == 0
    # Also after the end: the call is refused every time, not only when it matters.
    with pytest.raises(UnstoppableThreadError):
        getattr(thread, method)()


def test_sentinel_is_ready_when_the_thread_ends() -> None:
    release = threading.Event()
    thread = DjangoThread(target=tasks.wait_for, args=(release,))
    thread.start()
    sentinel = thread.sentinel
    assert thread.sentinel == sentinel  # one per thread
    assert multiprocessing.connection.wait([sentinel], timeout=0) == []
    release.set()
    assert multiprocessing.connection.wait([sentinel], timeout=10) == [sentinel]
    assert thread.exitcode == 0  # set before the sentinel is ready
    thread.join(10)
    thread.close()
    with pytest.raises(OSError, match="Bad file descriptor"):  # close() released it
        os.fstat(sentinel)


def test_sentinel_asked_for_after_the_end_is_ready_at_once() -> None:
    thread = _run_thread(tasks.noop)
    assert multiprocessing.connection.wait([thread.sentinel], timeout=10) == [thread.sentinel]
    thread.close()


def test_pid_is_refused_with_an_explanation() -> None:
    thread = _run_thread(tasks.noop)
    assert not hasattr(thread, "pid")
    with pytest.raises(AttributeError, match="has no pid: it runs inside this process"):
        _ = thread.pid


def test_a_coroutine_object_target_is_refused_at_construction() -> None:
    coroutine = tasks.async_add(1, 2)
    try:
        with pytest.raises(TypeError, match=r"DjangoThread\(target=\.\.\.\) got the coroutine"):
            DjangoThread(target=coroutine)  # type: ignore[arg-type]
    finally:
        coroutine.close()
    with pytest.raises(TypeError, match="expects a function, got 5"):
        DjangoThread(target=5)  # type: ignore[arg-type]


class ExitingThreads(djtest.TransactionTestCase):
    __test__ = False  # run by the test below, which looks at its result

    def test_clean_exit(self) -> None:
        thread = DjangoThread(target=sys.exit, args=(0,))
        thread.start()
        thread.join(10)
        assert thread.exitcode == 0

    def test_closed_thread_that_queried(self) -> None:
        thread = DjangoThread(target=tasks.select_one)
        thread.start()
        thread.join(10)
        thread.close()


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("name", ["test_clean_exit", "test_closed_thread_that_queried"])
def test_the_test_helpers_accept_clean_exits_and_closed_threads(name: str) -> None:
    result = unittest.TestResult()
    unittest.TestSuite([ExitingThreads(name)]).run(result)
    assert [text for _, text in result.failures + result.errors] == []
    assert result.testsRun == 1
