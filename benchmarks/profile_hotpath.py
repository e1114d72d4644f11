"""Where a no-op task's time goes: perf_counter_ns per step, both threads.

Usage: cd benchmarks && ../.venv/bench-pg2/bin/python profile_hotpath.py [--sample]
  (run by hand, not by ``make bench``; ``--sample`` adds a pyinstrument
  sampling profile of the submitting thread and of one worker.)

Submitter: each step of ``djthreads.submit`` (ON_COMMIT=False) timed alone
over many calls, and the whole submit with every worker blocked (so only the
submit path is measured) against ``ThreadPoolExecutor.submit``. Worker: the
task's own path (``run_task`` of a no-op Work) against a bare call. Then the
end-to-end no-op throughput of both pools with 8 workers, with the cyclic
garbage collector on and off, and the objects it tracks per queued task: a
queued task's objects are walked by every collection until it runs, which
made most of what a no-op task cost over the raw pool. Prints one JSON line
per figure (µs per call; objects per task).
"""

from __future__ import annotations

import concurrent.futures
import gc
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import _common
from _common import median, setup

setup({"ON_COMMIT": False, "MAX_QUEUE": 100_000})

import djthreads  # noqa: E402
from djthreads import _account  # noqa: E402
from djthreads._dispatch import in_transaction  # noqa: E402
from djthreads._run import capture, run_task  # noqa: E402
from djthreads._worker import new_future  # noqa: E402

CALLS = 20_000
ROUNDS = 5


def noop() -> None:
    return None


def per_call(step: Callable[[], Any], calls: int = CALLS) -> float:
    """Median over ROUNDS of the mean µs per call of ``step``."""
    return _common.per_call(step, calls, ROUNDS)


def submit_path(submit: Callable[[], Any], block: Callable[[threading.Event], None]) -> float:
    """µs per submit with every worker held, so only the submitting thread works."""
    results = []
    for _ in range(ROUNDS):
        release = threading.Event()
        block(release)
        start = time.perf_counter_ns()
        futures = [submit() for _ in range(CALLS)]
        elapsed = time.perf_counter_ns() - start
        release.set()
        concurrent.futures.wait(futures, 60)
        results.append(elapsed / CALLS / 1000)
    return median(results)


def throughput(submit: Callable[[], concurrent.futures.Future[Any]]) -> float:
    results = []
    for _ in range(ROUNDS):
        start = time.perf_counter_ns()
        futures = [submit() for _ in range(CALLS)]
        for future in futures:
            future.result(60)
        results.append((time.perf_counter_ns() - start) / CALLS / 1000)
    return median(results)


raw = concurrent.futures.ThreadPoolExecutor(8)
pool = djthreads.get_executor()


def hold_raw(release: threading.Event) -> None:
    for _ in range(8):
        raw.submit(release.wait)


def hold_djthreads(release: threading.Event) -> None:
    for _ in range(8):
        djthreads.submit(release.wait)


def tracked_per_task(submit: Callable[[], Any], block: Callable[[threading.Event], None]) -> float:
    """Objects the cyclic GC tracks per queued task, every worker held."""
    release = threading.Event()
    block(release)
    gc.collect()
    before = len(gc.get_objects())
    futures = [submit() for _ in range(1000)]
    queued = len(gc.get_objects())
    release.set()
    concurrent.futures.wait(futures, 60)
    return (queued - before) / 1000


def without_gc(measure: Callable[[], float]) -> float:
    gc.disable()
    try:
        return measure()
    finally:
        gc.enable()


work = _account.Work(noop, (), {}, capture(), _account.POOL, new_future())
figures = {
    # The submitter's steps, each alone.
    "step capture()": per_call(capture),
    "step Work()+Future": per_call(lambda: _account.Work(noop, (), {}, capture(), "x")),
    "step new_future()": per_call(new_future),
    "step concurrent.futures.Future()": per_call(concurrent.futures.Future),
    # What ON_COMMIT=True adds to a submit made outside any transaction.
    "step on-commit check": per_call(lambda: in_transaction(True, "default")),
    # The whole submit path, workers blocked.
    "submit raw ThreadPoolExecutor": submit_path(lambda: raw.submit(noop), hold_raw),
    "submit djthreads.submit": submit_path(lambda: djthreads.submit(noop), hold_djthreads),
    # The worker's path for one no-op task, run in this thread.
    "worker bare call": per_call(noop),
    "worker run_task(noop)": per_call(lambda: run_task(work)),
    # End to end, 8 workers each.
    "e2e raw ThreadPoolExecutor": throughput(lambda: raw.submit(noop)),
    "e2e djthreads.submit": throughput(lambda: djthreads.submit(noop)),
    # The same with the cyclic GC off: what is left is the work itself.
    "e2e raw, gc off": without_gc(lambda: throughput(lambda: raw.submit(noop))),
    "e2e djthreads, gc off": without_gc(lambda: throughput(lambda: djthreads.submit(noop))),
    # Objects per queued task (not µs): each is walked by every collection while queued.
    "tracked objects, raw": tracked_per_task(lambda: raw.submit(noop), hold_raw),
    "tracked objects, djthreads": tracked_per_task(lambda: djthreads.submit(noop), hold_djthreads),
}
_common.emit_steps(
    "hotpath", figures, "e2e ratio", "e2e djthreads.submit", "e2e raw ThreadPoolExecutor"
)

if "--sample" in sys.argv:
    from pyinstrument import Profiler

    profiler = Profiler(interval=0.0001)
    release = threading.Event()
    hold_djthreads(release)
    with profiler:
        futures = [djthreads.submit(noop) for _ in range(CALLS)]
    release.set()
    concurrent.futures.wait(futures, 60)
    print(profiler.output_text(unicode=False, color=False), file=sys.stderr)
    profiler = Profiler(interval=0.0001)
    with profiler:
        for _ in range(CALLS):
            run_task(work)
    print(profiler.output_text(unicode=False, color=False), file=sys.stderr)

djthreads.wait_for_tasks(timeout=60)
raw.shutdown()
