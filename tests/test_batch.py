"""djthreads.map: order, first error, bounded memory, connections, progress."""

from __future__ import annotations

import logging
import sys
import threading
import warnings
from collections.abc import Iterator

import pytest
from django.db import connection
from django.test import override_settings

import djthreads
from djthreads import DjangoThread, run_async
from tests import tasks
from tests.conftest import postgres_only, settled_connections
from tests.models import Item

pytestmark = pytest.mark.timeout(60)


def test_results_come_back_in_input_order() -> None:
    last_may_finish = threading.Event()

    def item(i: int) -> int:
        if i == 0:
            # Item 0 finishes last: only after item 3 has finished.
            assert last_may_finish.wait(10)
        if i == 3:
            last_may_finish.set()
        return i * 10

    assert djthreads.map(item, range(4), max_workers=4) == [0, 10, 20, 30]
    assert djthreads.map(item, [], max_workers=2) == []


def test_chunks_keep_the_order() -> None:
    result = djthreads.map(str, range(25), chunk_size=4)
    assert result == [str(i) for i in range(25)]


def test_serial_first_error_stops_everything_behind_it() -> None:
    started: list[int] = []

    def item(i: int) -> int:
        started.append(i)
        if i == 2:
            raise ValueError(f"item {i} failed")
        return i

    with pytest.raises(ValueError, match="item 2 failed"):
        djthreads.map(item, range(20), max_workers=1)
    # Items 3.. were queued behind item 2 and never started.
    assert started == [0, 1, 2]


class _Said(logging.Handler):
    """Sets an event when djthreads.map logs that it stopped."""

    def __init__(self) -> None:
        super().__init__()
        self.stopped = threading.Event()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())
        if "stopped at its first error" in record.getMessage():
            self.stopped.set()


def test_first_error_cancels_queued_waits_for_running_and_reraises() -> None:
    release = threading.Event()
    started: set[int] = set()
    finished: set[int] = set()
    lock = threading.Lock()

    def item(i: int) -> int:
        with lock:
            started.add(i)
        if i == 3:
            raise ValueError("item 3 failed")
        if i < 3:
            assert release.wait(20)
        with lock:
            finished.add(i)
        return i

    said = _Said()
    logger = logging.getLogger("djthreads")
    logger.addHandler(said)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    try:
        # 4 workers: items 0-2 block, item 3 fails, items 4-7 wait in the queue.
        job = DjangoThread(
            target=djthreads.map, args=(item, range(100)), kwargs={"max_workers": 4}
        )
        job.start()
        assert said.stopped.wait(20)
        # Items 0-2 are still running, so map has not returned.
        assert job.is_alive()
        release.set()
        job.join(20)
    finally:
        release.set()
        logger.removeHandler(said)
        logger.setLevel(old_level)
    assert isinstance(job.exception, ValueError)
    assert str(job.exception) == "item 3 failed"
    assert started == {0, 1, 2, 3}
    assert finished == {0, 1, 2}  # waited for, not abandoned
    # How many items were queued (and cancelled) when item 3 failed depends on
    # how far the map thread got; the three running ones are certain.
    assert any(" waiting_for=3" in m for m in said.messages), said.messages
    assert any("tests.test_batch" in m and "failed" in m for m in said.messages)


def test_iterable_error_is_raised_after_running_items() -> None:
    second_started = threading.Event()
    release = threading.Event()
    done: list[int] = []

    def item(i: int) -> None:
        if i == 2:
            second_started.set()
            assert release.wait(10)
        done.append(i)

    def items() -> Iterator[int]:
        yield 1
        yield 2
        assert second_started.wait(10)
        release.set()
        raise RuntimeError("source broke")

    with pytest.raises(RuntimeError, match="source broke"):
        djthreads.map(item, items(), max_workers=2)
    assert sorted(done) == [1, 2]  # item 2 was running: map waited for it


def test_a_million_item_generator_stays_bounded() -> None:
    workers, chunk = 4, 1000
    lock = threading.Lock()
    state = {"produced": 0, "done": 0, "max_ahead": 0}

    def source() -> Iterator[int]:
        for i in range(1_000_000):
            with lock:
                state["produced"] += 1
                ahead = state["produced"] - state["done"]
                state["max_ahead"] = max(state["max_ahead"], ahead)
            yield i

    def double(i: int) -> int:
        with lock:
            state["done"] += 1
        return 2 * i

    result = djthreads.map(double, source(), max_workers=workers, chunk_size=chunk)
    assert len(result) == 1_000_000
    assert result[0] == 0
    assert result[-1] == 1_999_998
    assert result[123_456] == 246_912
    # 2 x workers chunks in flight plus the one being cut: never the whole input.
    assert 0 < state["max_ahead"] <= (2 * workers + 1) * chunk


def test_unchunked_window_is_two_per_worker() -> None:
    lock = threading.Lock()
    state = {"produced": 0, "done": 0, "max_ahead": 0}

    def source() -> Iterator[int]:
        for i in range(3000):
            with lock:
                state["produced"] += 1
                state["max_ahead"] = max(state["max_ahead"], state["produced"] - state["done"])
            yield i

    def count(i: int) -> int:
        with lock:
            state["done"] += 1
        return i

    assert djthreads.map(count, source(), max_workers=3) == list(range(3000))
    assert 0 < state["max_ahead"] <= 2 * 3 + 1


@override_settings(DJTHREADS={"MAX_WORKERS": 1})
def test_map_inside_a_pool_task_runs_in_parallel() -> None:
    # The default pool has one worker, busy with the job itself: items sent to
    # it would run inline, one by one, and the barrier would break.
    barrier = threading.Barrier(4, timeout=10)

    def item(i: int) -> str:
        barrier.wait()
        return threading.current_thread().name

    @run_async(on_commit=False)
    def job() -> list[str]:
        return djthreads.map(item, range(4), max_workers=4)

    names = job().result(timeout=20)
    assert len(set(names)) == 4
    assert all(name.startswith("djthreads_map_") for name in names)


def test_items_get_the_callers_context() -> None:
    token = tasks.request_id.set("req-7")
    try:
        seen = djthreads.map(lambda _: tasks.current_request_id(), range(5), max_workers=2)
    finally:
        tasks.request_id.reset(token)
    assert seen == ["req-7"] * 5


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_workers": 0}, r"max_workers=\.\.\.\) must be a positive integer or None, got 0"),
        ({"chunk_size": -1}, r"chunk_size=\.\.\.\) must be a positive integer or None, got -1"),
        ({"max_workers": True}, "got True"),
    ],
)
def test_bad_arguments_name_the_value(kwargs: dict[str, int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        djthreads.map(str, range(3), **kwargs)  # type: ignore[call-overload]


@pytest.mark.django_db(transaction=True)
def test_items_write_to_the_database() -> None:
    pks = djthreads.map(tasks.create_item, [f"row-{i}" for i in range(40)], max_workers=8)
    names = dict(Item.objects.values_list("pk", "name"))
    assert [names[pk] for pk in pks] == [f"row-{i}" for i in range(40)]


@postgres_only
@pytest.mark.usefixtures("no_gc")
@pytest.mark.django_db(transaction=True)
def test_map_leaves_no_connection_open() -> None:
    assert settled_connections(0) == 0
    results = djthreads.map(lambda _: tasks.select_one(), range(300), max_workers=8)
    assert results == [1] * 300
    assert settled_connections(0) == 0
    connection.close()


def test_progress_bar_on_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("tqdm")
    assert djthreads.map(str, range(50), max_workers=2, progress=True) == [
        str(i) for i in range(50)
    ]
    err = capsys.readouterr().err
    assert "50/50" in err
    assert "100%" in err


def test_progress_without_tqdm_hints_once(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "tqdm", None)  # import tqdm now fails
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("default")  # Python's default: once per call site
        for _ in range(3):
            assert djthreads.map(str, range(5), progress=True) == ["0", "1", "2", "3", "4"]
    assert [str(w.message) for w in record] == [
        "djthreads.map(progress=True) shows no progress bar because tqdm is not installed; "
        "install it with: pip install 'djthreads[progress]'."
    ]
    assert record[0].filename == __file__  # points at the caller's line
    assert "5/5" not in capsys.readouterr().err
