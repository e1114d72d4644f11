from __future__ import annotations

import concurrent.futures
import gc
import logging
import multiprocessing
import os
import threading
from collections.abc import Iterator
from concurrent.futures.thread import BrokenThreadPool

import pytest
from django.db import connection, connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.test import override_settings

import djthreads
from djthreads import DjangoExecutor, QueueFullError, _account
from djthreads._account import EXECUTOR, Work
from djthreads._run import capture
from djthreads._worker import new_future
from tests import tasks
from tests.conftest import settled_connections

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def executor() -> Iterator[DjangoExecutor]:
    pool = DjangoExecutor(2, max_queue=1, on_full="raise", thread_name_prefix="unit")
    yield pool
    pool.shutdown(wait=True, cancel_futures=True, timeout=10)


def test_runs_tasks_in_named_daemon_workers(executor: DjangoExecutor) -> None:
    name = executor.submit(tasks.thread_name).result(10)
    assert name.startswith("unit_")
    assert executor.submit(tasks.add, 1, 2).result(10) == 3


def test_bounded_workers_and_queue_raise_when_full(executor: DjangoExecutor) -> None:
    release = threading.Event()
    running = [executor.submit(tasks.wait_for, release) for _ in range(2)]
    queued = executor.submit(tasks.noop)
    with pytest.raises(QueueFullError, match=r"2 tasks running, 1 waiting.*MAX_QUEUE"):
        executor.submit(tasks.noop)
    assert isinstance(QueueFullError("x"), RuntimeError)
    release.set()
    assert [f.result(10) for f in running] == [True, True]
    assert queued.result(10) is None
    # Slots are released: the pool takes work again.
    assert executor.submit(tasks.add, 2, 2).result(10) == 4


def test_block_waits_for_a_slot() -> None:
    pool = DjangoExecutor(1, max_queue=0, on_full="block")
    try:
        release = threading.Event()
        first = pool.submit(tasks.wait_for, release)
        submitted = threading.Event()
        second: list[concurrent.futures.Future[int]] = []

        def submit_second() -> None:
            second.append(pool.submit(tasks.add, 1, 1))
            submitted.set()

        submitter = threading.Thread(target=submit_second)
        submitter.start()
        assert not submitted.wait(0.2)  # blocked: no slot
        release.set()
        assert submitted.wait(10)
        submitter.join(10)
        assert first.result(10) is True
        assert second[0].result(10) == 2
    finally:
        pool.shutdown(timeout=10)


def test_blocked_submitters_each_get_a_freed_slot_or_a_refusal_at_shutdown() -> None:
    pool = DjangoExecutor(1, max_queue=0, on_full="block")
    release = threading.Event()
    first = pool.submit(tasks.wait_for, release)
    outcomes: list[object] = []

    def submit() -> None:
        try:
            outcomes.append(pool.submit(tasks.add, 1, 1).result(10))
        except RuntimeError as exc:
            outcomes.append(str(exc))

    # Three submitters wait for the one slot; each freed slot wakes one.
    submitters = [threading.Thread(target=submit) for _ in range(3)]
    for thread in submitters:
        thread.start()
    release.set()
    for thread in submitters:
        thread.join(10)
    assert outcomes == [2, 2, 2]
    assert first.result(10) is True

    # Two more wait behind a held slot; shutdown() refuses both at once.
    release.clear()
    held = pool.submit(tasks.wait_for, release)
    outcomes.clear()
    submitters = [threading.Thread(target=submit) for _ in range(2)]
    for thread in submitters:
        thread.start()
    pool.shutdown(wait=False)
    for thread in submitters:
        thread.join(10)
        assert not thread.is_alive()
    assert outcomes == ["cannot schedule new futures after shutdown"] * 2
    release.set()
    assert held.result(10) is True
    pool.shutdown(timeout=10)


def _work(fn: object, *args: object) -> Work:
    # A task record as the Tasks backend's queue builds one for offer().
    return Work(fn, args, {}, capture(), EXECUTOR, new_future())  # type: ignore[arg-type]


def test_offer_takes_a_free_slot_or_returns_false_and_queues_nothing() -> None:
    pool = DjangoExecutor(2, max_queue=0, on_full="block")
    try:
        release = threading.Event()
        held = [pool.submit(tasks.wait_for, release) for _ in range(2)]  # full-grown, full
        refused = _work(tasks.add, 1, 1)
        assert pool.offer(refused) is False
        assert refused.owner is None
        assert not refused.future.done()
        release.set()
        assert [future.result(10) for future in held] == [True, True]
        # The freed slots are handed on (without the submitters' lock).
        offered = [_work(tasks.add, n, 1) for n in range(2)]
        assert [pool.offer(work) for work in offered] == [True, True]
        assert [work.future.result(10) for work in offered] == [1, 2]
        assert pool.submit(tasks.add, 2, 2).result(10) == 4  # the count is still right
    finally:
        pool.shutdown(timeout=10)
    with pytest.raises(RuntimeError, match="after shutdown"):
        pool.offer(_work(tasks.noop))


class _ShutsDownWhileOffering(DjangoExecutor):
    # shutdown() runs after offer() found the pool open and before it queues
    # the work without the lock: the work lands behind shutdown's sentinel.
    def _place(self, work: Work) -> None:
        if work.fn is tasks.add:
            self.shutdown(wait=False)
        super()._place(work)


def test_offer_racing_shutdown_refuses_the_task_rather_than_leave_it_unrun() -> None:
    pool = _ShutsDownWhileOffering(1, max_queue=0, on_full="block")
    release = threading.Event()
    first = pool.submit(tasks.wait_for, release)  # full-grown, its slot held
    release.set()
    assert first.result(10) is True  # its slot is freed: offer() takes it lock-free
    late = _work(tasks.add, 1, 1)
    with pytest.raises(RuntimeError, match="after shutdown"):
        pool.offer(late)
    # Claimed back: not queued, not outstanding; the caller settles its Future.
    assert not pool._queued
    assert late.number not in {work.number for work in _account.outstanding()}
    assert not late.future.done()
    pool.shutdown(timeout=10)


def test_nested_submit_in_full_pool_runs_inline() -> None:
    pool = DjangoExecutor(1, max_queue=0, on_full="block")

    def outer() -> tuple[int, str, str]:
        inner = pool.submit(tasks.thread_name)
        return inner.result(10) is not None, threading.current_thread().name, inner.result(10)

    try:
        ok, outer_thread, inner_thread = pool.submit(outer).result(10)
    finally:
        pool.shutdown(timeout=10)
    assert ok
    assert inner_thread == outer_thread


def test_exception_is_set_and_logged(
    executor: DjangoExecutor, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="djthreads"):
        future = executor.submit(tasks.fail, "bad input")
        with pytest.raises(ValueError, match="bad input"):
            future.result(10)
    records = [r for r in caplog.records if "tests.tasks.fail" in r.getMessage()]
    assert len(records) == 1
    assert records[0].exc_info is not None


def test_invalid_arguments_say_what_is_wrong() -> None:
    with pytest.raises(ValueError, match="max_workers must be greater than 0, got 0"):
        DjangoExecutor(0)
    with pytest.raises(ValueError, match="max_queue must be an integer >= 0, got -1"):
        DjangoExecutor(1, max_queue=-1)
    with pytest.raises(ValueError, match="on_full must be 'block' or 'raise'"):
        DjangoExecutor(1, max_queue=1, on_full="drop")  # type: ignore[arg-type]


def test_submit_after_shutdown_raises() -> None:
    pool = DjangoExecutor(1, max_queue=1)
    pool.shutdown()
    with pytest.raises(RuntimeError, match="cannot schedule new futures after shutdown"):
        pool.submit(tasks.noop)


def test_shutdown_finishes_queued_tasks() -> None:
    pool = DjangoExecutor(1, max_queue=10)
    release = threading.Event()
    first = pool.submit(tasks.wait_for, release)
    rest = [pool.submit(tasks.add, i, 0) for i in range(5)]
    release.set()
    pool.shutdown(wait=True)
    assert first.result(0) is True
    assert [f.result(0) for f in rest] == list(range(5))


def test_shutdown_timeout_cancels_queued_and_names_stuck(
    caplog: pytest.LogCaptureFixture,
) -> None:
    pool = DjangoExecutor(1, max_queue=10)
    stuck = threading.Event()
    running = pool.submit(tasks.wait_for, stuck, 30)
    queued = pool.submit(tasks.noop)
    with caplog.at_level(logging.WARNING, logger="djthreads"):
        pool.shutdown(wait=True, timeout=0.2)
    assert queued.cancelled()
    message = "\n".join(r.getMessage() for r in caplog.records)
    assert "tests.tasks.wait_for" in message
    assert "tests.tasks.noop" in message
    stuck.set()
    assert running.result(10) is True


def test_cancel_futures() -> None:
    pool = DjangoExecutor(1, max_queue=10)
    release = threading.Event()
    first = pool.submit(tasks.wait_for, release)
    queued = [pool.submit(tasks.noop) for _ in range(3)]
    pool.shutdown(wait=False, cancel_futures=True)
    release.set()
    assert first.result(10) is True
    assert all(f.cancelled() for f in queued)


def test_wait_for_tasks_times_out_naming_tasks() -> None:
    pool = DjangoExecutor(2, max_queue=2)
    release = threading.Event()
    try:
        pool.submit(tasks.wait_for, release)
        with pytest.raises(TimeoutError, match="tests.tasks.wait_for"):
            pool.wait_for_tasks(timeout=0.1)
        release.set()
        pool.wait_for_tasks(timeout=10)
        assert pool.pending() == []
    finally:
        release.set()
        pool.shutdown(timeout=10)


def _child_uses_default_pool(conn: multiprocessing.connection.Connection) -> None:
    try:
        result = djthreads.submit(tasks.add, 20, 22).result(10)
        conn.send(("ok", result, os.getpid()))
    except BaseException as exc:
        conn.send(("error", repr(exc), os.getpid()))
    conn.close()


def _child_uses_explicit_pool(
    pool: DjangoExecutor, conn: multiprocessing.connection.Connection
) -> None:
    try:
        pool.submit(tasks.noop)
        conn.send("no error")
    except RuntimeError as exc:
        conn.send(str(exc))
    conn.close()


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # fork() with threads running
def test_after_fork_child_gets_a_fresh_default_pool() -> None:
    assert djthreads.submit(tasks.add, 1, 1).result(10) == 2  # parent pool exists
    ctx = multiprocessing.get_context("fork")
    parent_conn, child_conn = ctx.Pipe()
    child = ctx.Process(target=_child_uses_default_pool, args=(child_conn,))
    child.start()
    assert parent_conn.poll(20)
    status, value, pid = parent_conn.recv()
    child.join(20)
    assert (status, value) == ("ok", 42)
    assert pid != os.getpid()
    assert child.exitcode == 0
    # The parent's pool keeps working.
    assert djthreads.submit(tasks.add, 2, 2).result(10) == 4


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_explicit_pool_refuses_use_after_fork(executor: DjangoExecutor) -> None:
    executor.submit(tasks.noop).result(10)
    ctx = multiprocessing.get_context("fork")
    parent_conn, child_conn = ctx.Pipe()
    child = ctx.Process(target=_child_uses_explicit_pool, args=(executor, child_conn))
    child.start()
    assert parent_conn.poll(20)
    message = parent_conn.recv()
    child.join(20)
    assert "cannot be used after os.fork()" in message


# -- ThreadPoolExecutor's constructor and worker life cycle -----------------------


def _workers(prefix: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(f"{prefix}_")]


def test_initializer_runs_with_initargs_in_each_worker_before_its_tasks() -> None:
    ran: list[tuple[str, str, int]] = []

    def initializer(word: str, number: int) -> None:
        ran.append((threading.current_thread().name, word, number))

    both_running = threading.Barrier(2, timeout=10)

    def task() -> tuple[str, bool]:
        name = threading.current_thread().name
        initialized = (name, "set up", 7) in ran
        both_running.wait()  # two tasks at once: two workers
        return name, initialized

    pool = DjangoExecutor(2, "init", initializer, ("set up", 7))
    try:
        results = [f.result(10) for f in [pool.submit(task), pool.submit(task)]]
    finally:
        pool.shutdown(timeout=10)
    assert all(initialized for _, initialized in results)
    assert sorted(ran) == sorted((name, "set up", 7) for name, _ in results)
    assert len({name for name, _ in results}) == 2


@pytest.mark.django_db(transaction=True)
def test_failing_initializer_breaks_the_pool_and_closes_its_connection(
    caplog: pytest.LogCaptureFixture,
) -> None:
    opened: list[BaseDatabaseWrapper] = []
    entered = threading.Event()
    release = threading.Event()

    def initializer() -> None:
        opened.append(connections["default"])
        tasks.select_one()  # opens the worker's connection
        entered.set()
        release.wait(10)  # let tasks queue up behind the initializer
        raise ValueError("no configuration for this worker")

    pool = DjangoExecutor(1, initializer=initializer)
    try:
        pending = [pool.submit(tasks.add, i, 1) for i in range(3)]
        assert entered.wait(10)
        with caplog.at_level(logging.CRITICAL, logger="djthreads"):
            release.set()
            for future in pending:
                with pytest.raises(BrokenThreadPool, match="initializer failed"):
                    future.result(10)
        with pytest.raises(BrokenThreadPool, match="initializer failed"):
            pool.submit(tasks.noop)
    finally:
        pool.shutdown(timeout=10)
    # Closed in the worker before the pool was marked broken.
    assert opened[0].connection is None
    if connection.vendor == "postgresql":
        assert settled_connections(0) == 0
    failures = [r for r in caplog.records if r.levelno == logging.CRITICAL]
    assert len(failures) == 1
    assert failures[0].exc_info is not None
    assert "no configuration for this worker" in str(failures[0].exc_info[1])


def test_max_workers_none_reads_the_setting() -> None:
    release = threading.Event()
    with override_settings(DJTHREADS={"MAX_WORKERS": 3}):
        pool = DjangoExecutor(thread_name_prefix="from_setting")
    try:
        # Every task blocks, so each submit starts a worker until the limit.
        running = [pool.submit(tasks.wait_for, release) for _ in range(5)]
        assert pool.max_workers == 3
        assert len(_workers("from_setting")) == 3
        release.set()
        assert [f.result(10) for f in running] == [True] * 5
    finally:
        release.set()
        pool.shutdown(timeout=10)


def test_sequential_tasks_reuse_one_idle_worker() -> None:
    pool = DjangoExecutor(4, thread_name_prefix="reuse")
    try:
        names = {pool.submit(tasks.thread_name).result(10) for _ in range(3)}
        assert len(_workers("reuse")) == 1
        assert names == {"reuse_0"}
    finally:
        pool.shutdown(timeout=10)


def test_dropped_executor_lets_its_idle_workers_exit() -> None:
    pool = DjangoExecutor(2, thread_name_prefix="dropped")
    both_running = threading.Barrier(2, timeout=10)
    futures = [pool.submit(both_running.wait) for _ in range(2)]
    assert sorted(f.result(10) for f in futures) == [0, 1]
    workers = _workers("dropped")
    assert len(workers) == 2
    del pool  # never shut down; the Futures stay, and must not keep it alive
    gc.collect()
    for worker in workers:
        worker.join(10)
    assert not any(worker.is_alive() for worker in workers)


def test_thread_name_prefix_is_the_second_positional_argument() -> None:
    pool = DjangoExecutor(1, "positional")
    try:
        assert pool.submit(tasks.thread_name).result(10) == "positional_0"
    finally:
        pool.shutdown(timeout=10)


def test_max_queue_given_positionally_says_to_pass_it_by_keyword() -> None:
    with pytest.raises(TypeError, match=r"got 10: .*pass max_queue=\.\.\. by keyword"):
        DjangoExecutor(2, 10)  # type: ignore[arg-type]
