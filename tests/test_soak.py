"""A soak across every kind of work: each task is accounted for exactly once (issue 9).

The default pool, a user DjangoExecutor, djthreads.map, ThreadPoolBackend and
DjangoThreads run side by side, with failures mixed in; the djthreads
``task_finished`` signal must arrive once per task id, every side effect must
happen once, and the account must be empty at the end.
"""

from __future__ import annotations

import collections
import random
import threading
from typing import Any

import pytest
from django.test import override_settings

import djthreads
from djthreads import DjangoExecutor, DjangoThread
from djthreads.signals import task_finished
from tests import backend_tasks as bt

pytestmark = pytest.mark.timeout(120)

PER_KIND = 600

ran: collections.Counter[str] = collections.Counter()
ran_lock = threading.Lock()


def step(key: str, fail: bool) -> str:
    with ran_lock:
        ran[key] += 1
    if fail:
        raise ValueError(key)
    return key


@override_settings(
    DJTHREADS={"MAX_WORKERS": 4, "MAX_QUEUE": 10_000},
    TASKS={"default": {"BACKEND": "djthreads.backends.ThreadPoolBackend"}},
)
def test_every_task_of_every_kind_ends_exactly_once() -> None:
    rng = random.Random(9)
    finished: collections.Counter[str] = collections.Counter()
    failed_ids: set[str] = set()
    lock = threading.Lock()

    def on_finished(sender: object, *, task_id: str, exception: Any, **kwargs: Any) -> None:
        with lock:
            finished[task_id] += 1
            if exception is not None:
                failed_ids.add(task_id)

    ran.clear()
    bt.soak_ran.clear()
    task_finished.connect(on_finished)
    pool = DjangoExecutor(3, "soakpool", max_queue=10_000)
    try:
        fails = {kind: [rng.random() < 0.1 for _ in range(PER_KIND)] for kind in "PEBT"}
        pool_futures = [djthreads.submit(step, f"P{n}", fails["P"][n]) for n in range(PER_KIND)]
        user_futures = [pool.submit(step, f"E{n}", fails["E"][n]) for n in range(PER_KIND)]
        backend_results = [bt.soak.enqueue(n, fails["B"][n]) for n in range(PER_KIND)]
        threads = [DjangoThread(target=step, args=(f"T{n}", fails["T"][n])) for n in range(60)]
        for thread in threads:
            thread.start()
        mapped = djthreads.map(lambda n: step(f"M{n}", False), range(PER_KIND), max_workers=3)
        assert mapped == [f"M{n}" for n in range(PER_KIND)]
        for thread in threads:
            thread.join(30)
            assert not thread.is_alive()
        djthreads.wait_for_tasks(timeout=60)
        pool.wait_for_tasks(timeout=60)
    finally:
        pool.shutdown(timeout=30)
        task_finished.disconnect(on_finished)

    # Every side effect exactly once.
    expected_keys = (
        {f"P{n}" for n in range(PER_KIND)}
        | {f"E{n}" for n in range(PER_KIND)}
        | {f"M{n}" for n in range(PER_KIND)}
        | {f"T{n}" for n in range(60)}
    )
    assert set(ran) == expected_keys
    assert set(ran.values()) == {1}
    assert bt.soak_ran == dict.fromkeys(range(PER_KIND), 1)

    # Every outcome as expected, and each task finished exactly once.
    for n, future in enumerate(pool_futures):
        assert (future.exception(0) is not None) == fails["P"][n]
    for n, future in enumerate(user_futures):
        assert (future.exception(0) is not None) == fails["E"][n]
    for n, thread in enumerate(threads):
        assert thread.exitcode == (1 if fails["T"][n] else 0)
    for n, result in enumerate(backend_results):
        result.refresh()
        assert (result.status == "FAILED") == fails["B"][n], result.status
        assert finished[result.id] == 1
        assert (result.id in failed_ids) == fails["B"][n]
    total = 3 * PER_KIND + 60 + PER_KIND  # map: one task per item (chunk_size 1)
    assert sum(finished.values()) == total
    assert set(finished.values()) == {1}
    assert len(failed_ids) == sum(sum(fails[k]) for k in "PEB") + sum(fails["T"][:60])
