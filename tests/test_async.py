"""Coroutine functions run to completion on every path, like any task."""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
import re
import threading
from collections.abc import Callable, Coroutine
from typing import Any, assert_type

import pytest
from django.db import connection
from django.test import override_settings

import djthreads
from djthreads import DjangoExecutor, DjangoThread, run_async, submit
from djthreads.signals import task_finished, task_started
from tests import tasks
from tests.conftest import held_connections, postgres_only, settled_connections


def _plain(message: str) -> str:
    """A log line without the task's id and arguments (tests/test_account.py checks those)."""
    return re.sub(r" id=\w+( args=\(.*\))?(?= )", "", message, count=1)


pytestmark = [
    pytest.mark.timeout(60),
    # A coroutine that is never awaited warns when it is collected; make that fail.
    pytest.mark.filterwarnings("error:coroutine .* was never awaited:RuntimeWarning"),
]


def _errors(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "djthreads" and r.levelno >= logging.ERROR]


def test_submit_runs_a_coroutine_function_to_completion() -> None:
    future = submit(tasks.async_add, 2, 3)
    assert future.result(10) == 5


add_later = run_async(tasks.async_add)
add_now = run_async(on_commit=False)(tasks.async_add)


def test_static_types_unwrap_the_coroutine() -> None:
    # Checked by mypy --strict on this file: Future[int], not Future[Coroutine[...]].
    assert_type(submit(tasks.async_add, 1, 2), concurrent.futures.Future[int])
    assert_type(add_later(1, 2), concurrent.futures.Future[int])
    assert_type(add_now(1, 2), concurrent.futures.Future[int])
    # A partial of an async function returns a coroutine too: run like the function.
    mapped = djthreads.map(functools.partial(tasks.async_add, 1), [2, 3])
    assert_type(mapped, list[int])
    assert mapped == [3, 4]
    assert_type(submit(tasks.add, 1, 2), concurrent.futures.Future[int])
    assert_type(djthreads.map(str, [1]), list[str])

    def never_called() -> None:
        # With the parameters lost this ignore would be unused, an error under --strict.
        add_later("x", 2)  # type: ignore[arg-type]


def test_run_async_accepts_a_coroutine_function() -> None:
    future = add_later(4, 5)
    assert isinstance(future, concurrent.futures.Future)
    assert future.result(10) == 9
    assert add_now(1, 1).result(10) == 2


def test_an_executor_runs_a_coroutine_function() -> None:
    executor = DjangoExecutor(2)
    try:
        # Any: DjangoExecutor.submit's types do not unwrap a coroutine yet.
        result: Any = executor.submit(tasks.async_add, 20, 22).result(10)
        mapped: list[Any] = list(executor.map(tasks.async_add, [1, 2], [3, 4], timeout=10))
        assert (result, mapped) == (42, [4, 6])
    finally:
        executor.shutdown()


def test_a_django_thread_runs_a_coroutine_target() -> None:
    thread = DjangoThread(target=tasks.async_add, args=(1, 2))
    thread.start()
    thread.join(10)
    assert (thread.result, thread.exception, thread.exitcode) == (3, None, 0)


class AsyncRunThread(DjangoThread):
    async def run(self) -> int:  # type: ignore[override]
        return await tasks.async_add(2, 2)


class RecordingAsyncThread(DjangoThread):
    def __init__(self) -> None:
        super().__init__()
        self.ran_in: list[str] = []

    async def run(self) -> None:  # type: ignore[override]
        self.ran_in.append(threading.current_thread().name)


def test_an_async_run_called_directly_runs_too() -> None:
    # As Process.run() may be called directly: in the caller's thread, still awaited.
    thread = RecordingAsyncThread()
    run: Callable[[], object] = thread.run  # the wrapper __init_subclass__ put in place
    assert run() is None
    assert len(thread.ran_in) == 1
    assert thread.exitcode is None


class SuperCallingThread(DjangoThread):
    def run(self) -> None:
        super().run()


def test_async_run_and_super_run_with_a_coroutine_target() -> None:
    overridden = AsyncRunThread()
    calling_super = SuperCallingThread(target=tasks.async_add, args=(5, 5))
    for thread in (overridden, calling_super):
        thread.start()
        thread.join(10)
    assert (overridden.result, overridden.exitcode) == (4, 0)
    assert (calling_super.result, calling_super.exitcode) == (10, 0)


def test_a_failing_coroutine_fails_its_thread_once(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="djthreads"):
        thread = DjangoThread(target=tasks.async_fail, args=("async boom",))
        thread.start()
        thread.join(10)
        exiting = DjangoThread(target=tasks.async_exit, args=(4,))
        exiting.start()
        exiting.join(10)
    assert isinstance(thread.exception, ValueError)
    assert thread.exitcode == 1
    assert exiting.exitcode == 4
    assert [_plain(r.getMessage()) for r in _errors(caplog)] == [
        "task=tests.tasks.async_fail failed",
        "task=tests.tasks.async_exit failed",
    ]


def test_a_failing_coroutine_task_is_logged_and_set_on_its_future(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.ERROR, logger="djthreads"):
        future = submit(tasks.async_fail, "nope")
        with pytest.raises(ValueError, match="nope"):
            future.result(10)
    [record] = _errors(caplog)
    assert _plain(record.getMessage()) == "task=tests.tasks.async_fail failed"
    assert record.exc_info is not None


def test_signals_see_the_awaited_result() -> None:
    seen: list[tuple[str, object, object, str]] = []

    def started(sender: object, **kwargs: Any) -> None:
        seen.append(("started", sender, None, threading.current_thread().name))

    def finished(sender: object, *, result: object, **kwargs: Any) -> None:
        seen.append(("finished", sender, result, threading.current_thread().name))

    task_started.connect(started)
    task_finished.connect(finished)
    try:
        assert submit(tasks.async_add, 1, 2).result(10) == 3
    finally:
        task_started.disconnect(started)
        task_finished.disconnect(finished)
    [(_, s1, _, t1), (_, s2, result, t2)] = seen
    assert s1 is s2 is tasks.async_add
    assert result == 3
    assert t1 == t2
    assert t1.startswith("djthreads_")


@pytest.mark.django_db(transaction=True)
def test_map_runs_a_coroutine_function_for_every_item() -> None:
    assert djthreads.map(tasks.async_double, [1, 2, 3], max_workers=2) == [2, 4, 6]
    assert djthreads.map(tasks.async_double, range(5), chunk_size=2) == [0, 2, 4, 6, 8]


def test_eager_mode_runs_a_coroutine_function_inline() -> None:
    with djthreads.eager():
        future = submit(tasks.async_add, 3, 4)
        assert future.done()
    assert future.result(0) == 7


@pytest.mark.django_db(transaction=True)
def test_sync_to_async_queries_run_in_the_worker_and_are_closed() -> None:
    seen = submit(tasks.async_select_one).result(10)
    assert seen["value"] == 1
    assert seen["thread"].startswith("djthreads_")  # the worker ran the query
    assert seen["wrapper"].vendor == connection.vendor
    assert seen["wrapper"].connection is None  # and closed it after the task

    thread = DjangoThread(target=tasks.async_select_one, name="async-thread")
    thread.start()
    thread.join(10)
    assert thread.result["thread"] == "async-thread"
    assert thread.result["wrapper"].connection is None


@postgres_only
@pytest.mark.timeout(120)
@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("no_gc")
@override_settings(DJTHREADS={"MAX_WORKERS": 8})
def test_coroutine_tasks_leave_no_connection_on_the_server() -> None:
    assert held_connections() == 0
    futures = [submit(tasks.async_select_one) for _ in range(200)]
    djthreads.wait_for_tasks(timeout=100)
    assert [f.result(0)["value"] for f in futures] == [1] * 200
    threads = [DjangoThread(target=tasks.async_select_one) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert [t.result["value"] for t in threads] == [1] * 20
    assert djthreads.map(tasks.async_double, range(50), max_workers=8) == [
        2 * i for i in range(50)
    ]
    del futures, threads
    assert settled_connections(0) == 0


REFUSERS: list[tuple[str, Callable[[Coroutine[Any, Any, int]], object]]] = [
    ("djthreads.submit", lambda coroutine: submit(coroutine)),  # type: ignore[call-overload]
    ("run_async", lambda coroutine: run_async(coroutine)),  # type: ignore[call-overload]
    ("djthreads.map", lambda coroutine: djthreads.map(coroutine, [1])),  # type: ignore[call-overload]
    (r"DjangoThread\(target=\.\.\.\)", lambda coroutine: DjangoThread(target=coroutine)),  # type: ignore[arg-type]
]


@pytest.mark.parametrize(("where", "call"), REFUSERS, ids=[w for w, _ in REFUSERS])
def test_a_coroutine_object_is_refused_at_the_call(
    where: str, call: Callable[[Coroutine[Any, Any, int]], object]
) -> None:
    coroutine = tasks.async_add(1, 2)
    try:
        with pytest.raises(TypeError, match=f"{where} got the coroutine object") as raised:
            call(coroutine)
    finally:
        coroutine.close()
    assert "Pass the async function itself" in str(raised.value)


def test_awaiting_a_future_leaves_the_event_loop_free() -> None:
    # The docs' pattern for an async view: await asyncio.wrap_future(future).
    async def view() -> tuple[bool, str]:
        release = threading.Event()
        future = submit(tasks.wait_for, release)

        async def meanwhile() -> str:
            await asyncio.sleep(0)
            release.set()  # runs only if awaiting the task did not block the loop
            return "served"

        return await asyncio.gather(asyncio.wrap_future(future), meanwhile())

    waited, other = asyncio.run(view())
    assert (waited, other) == (True, "served")


def test_cancelling_the_awaiting_view_cancels_a_queued_task() -> None:
    # What docs/_parts/async.md says happens when a client goes away.
    executor = DjangoExecutor(1)
    release = threading.Event()
    ran: list[str] = []
    try:
        busy = executor.submit(tasks.wait_for, release)  # holds the only worker

        async def view(future: concurrent.futures.Future[Any], shield: bool) -> object:
            waiting = asyncio.wrap_future(future)
            return await (asyncio.shield(waiting) if shield else waiting)

        async def client_goes_away() -> tuple[bool, bool]:
            queued = executor.submit(ran.append, "queued")
            shielded = executor.submit(ran.append, "shielded")
            views = [
                asyncio.ensure_future(view(queued, False)),
                asyncio.ensure_future(view(shielded, True)),
            ]
            await asyncio.sleep(0)  # both views now await their task
            for task in views:
                task.cancel()  # what Django's ASGI handler does on a disconnect
            await asyncio.gather(*views, return_exceptions=True)
            # The cancellation reaches the task's Future through a loop callback.
            for _ in range(100):
                if queued.done():
                    break
                await asyncio.sleep(0)
            return queued.cancelled(), shielded.cancelled()

        assert asyncio.run(client_goes_away()) == (True, False)
        release.set()
        assert busy.result(10) is True
        executor.shutdown(wait=True)
    finally:
        release.set()
        executor.shutdown()
    assert ran == ["shielded"]
