"""Optional: huey (Redis, 8 thread workers) against djthreads for in-process work.

Usage: python benchmarks/huey_bench.py TASKS
Starts its own redis-server on a free 127.0.0.1 port (no persistence) and
stops it at the end. Both run no-op tasks that record when they started (same
process, so one clock). Latency: LATENCY_TASKS tasks enqueued one at a time,
each after the previous one started; p50/p99 of enqueue-to-start. Throughput:
TASKS enqueued in a burst; tasks / time from the first enqueue to the last start.
Prints one JSON line per runner, or one saying why it was skipped (no
redis-server, or huey/redis not installed).
"""

from __future__ import annotations

import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

from _common import emit, setup

TASKS = int(sys.argv[1])
setup({"MAX_WORKERS": 8, "MAX_QUEUE": TASKS})

import djthreads  # noqa: E402

try:
    from huey import RedisHuey
    from huey.consumer import Consumer
except ImportError:
    emit({"bench": "huey", "skipped": "huey or redis is not installed (pip install -e .[bench])"})
    sys.exit(0)


LATENCY_TASKS = min(1000, TASKS)


class Recorder:
    """Collects start times; runs in the workers (djthreads' or huey's threads)."""

    def __init__(self) -> None:
        self.changed = threading.Condition()
        self.latencies: list[float] = []
        self.last = 0.0

    def record(self, enqueued_at: float) -> None:
        now = time.perf_counter()
        with self.changed:
            self.latencies.append(now - enqueued_at)
            self.last = now
            self.changed.notify_all()

    def wait_count(self, count: int, name: str) -> None:
        with self.changed:
            if not self.changed.wait_for(lambda: len(self.latencies) >= count, 120):
                raise TimeoutError(f"{name}: {len(self.latencies)} of {count} tasks ran in 120 s")


def measure(name: str, enqueue: Callable[[float], object], recorder: Recorder) -> None:
    for n in range(LATENCY_TASKS):
        enqueue(time.perf_counter())
        recorder.wait_count(n + 1, name)
    lat = sorted(recorder.latencies)
    recorder.latencies.clear()
    start = time.perf_counter()
    for _ in range(TASKS):
        enqueue(time.perf_counter())
    recorder.wait_count(TASKS, name)
    emit(
        {
            "bench": "huey",
            "runner": name,
            "tasks": TASKS,
            "p50_ms": round(statistics.median(lat) * 1000, 3),
            "p99_ms": round(lat[int(len(lat) * 0.99) - 1] * 1000, 3),
            "tasks_per_s": round(TASKS / (recorder.last - start)),
        }
    )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_redis(port: int, workdir: str) -> subprocess.Popen[bytes]:
    server = subprocess.Popen(
        [
            *("redis-server", "--port", str(port), "--bind", "127.0.0.1"),
            *("--save", "", "--appendonly", "no", "--dir", workdir),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return server
        except OSError:
            if time.monotonic() > deadline or server.poll() is not None:
                server.kill()
                raise RuntimeError(f"redis-server did not start on 127.0.0.1:{port}") from None
            time.sleep(0.05)


def main() -> None:
    if shutil.which("redis-server") is None:
        emit({"bench": "huey", "skipped": "redis-server is not installed"})
        return
    dj = Recorder()
    measure("djthreads (8 workers)", lambda t: djthreads.submit(dj.record, t), dj)
    djthreads.wait_for_tasks(timeout=60)

    port = free_port()
    workdir = tempfile.mkdtemp(prefix="djthreads-redis-")
    server = start_redis(port, workdir)
    try:
        huey = RedisHuey("djthreads-bench", host="127.0.0.1", port=port, blocking=True)
        hu = Recorder()
        record: Any = huey.task()(hu.record)
        consumer = Consumer(huey, workers=8, worker_type="thread", periodic=False)
        consumer.start()
        try:
            measure("huey + Redis (8 thread workers)", record, hu)
        finally:
            consumer.stop(graceful=True)
    finally:
        server.terminate()
        server.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)


main()
