"""I/O-bound scaling: N tasks of one query plus L ms of waiting, on W workers.

Usage: python benchmarks/scaling.py APPROACH WORKERS N L_MS [warm-up] [no-gc] [gc-log]
  serial          — one thread runs every task (WORKERS is ignored: W=1);
  djthreads       — djthreads.submit on the default pool, MAX_WORKERS=W;
  djthreads-reuse — the same with DJTHREADS['REUSE_CONNECTIONS'] and
                    CONN_MAX_AGE=None (psycopg2);
  djthreads-pool  — the same on Django's psycopg 3 pool (max_size=W; run in
                    the psycopg 3 venv);
  multiprocessing — the seeds' approach: N split into W chunks, one forked
                    multiprocessing.Process per chunk, connections.close_all()
                    before start;
  asgiref         — sync_to_async(task, thread_sensitive=False) on a W-thread
                    executor, awaited with asyncio.gather;
  raw             — the floor: a stdlib ThreadPoolExecutor(W) whose threads
                    keep their psycopg2 connections for good (nobody closes
                    them: the hygiene djthreads exists for is left out);
  raw-pool        — the floor on Django's psycopg 3 pool: the same stdlib
                    pool, each task giving its connection back to the pool
                    after it (close_old_connections(), as Django does at the
                    end of a request; run in the psycopg 3 venv).

Prints one JSON line: elapsed seconds, efficiency against the ideal
ceil(N/W)·L, peak server connections and peak memory (PSS summed over this
process and its children) during the run, and connections still open after it.
The thread-based approaches run the batch twice: "cold" is the first batch of
a fresh process (threads started and connections opened on the way), "warm"
the second, as in a long-running process whose pool already exists. With
``warm-up`` (djthreads and raw approaches) the pool's threads are started and
connected before the first batch, outside the timing, as a server does at
startup: ``get_executor().warm_up(databases=["default"])`` for djthreads
(which then also runs the full garbage collection the first batch would
otherwise pay), W connecting tasks held at a barrier for the raw pool.
``no-gc`` disables the cyclic garbage collector for the whole run; ``gc-log``
adds, per batch, the collections that ran during it: for each generation, how
many and the milliseconds they took (``gc.callbacks``; the GIL is held
throughout each one).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import math
import multiprocessing
import sys
import threading
import time

from _common import Sampler, emit, setup, wait_for_connections

APPROACH = sys.argv[1]
WORKERS = 1 if APPROACH == "serial" else int(sys.argv[2])
N = int(sys.argv[3])
LATENCY = int(sys.argv[4]) / 1000
OPTIONS = set(sys.argv[5:])
WARM_UP = "warm-up" in OPTIONS
if "no-gc" in OPTIONS:
    gc.disable()  # benchmarks/cold_batch.py: what the first batch loses to the collector
if APPROACH == "djthreads-reuse":
    setup({"MAX_WORKERS": WORKERS, "REUSE_CONNECTIONS": True}, conn_max_age=None)
elif APPROACH == "raw":
    setup(conn_max_age=None)
elif APPROACH == "raw-pool":
    setup(pool=True, pool_size=WORKERS)
elif APPROACH == "djthreads-pool":
    setup({"MAX_WORKERS": WORKERS}, pool=True, pool_size=WORKERS)
else:
    setup({"MAX_WORKERS": WORKERS})

from asgiref.sync import sync_to_async  # noqa: E402
from django.db import close_old_connections, connection, connections  # noqa: E402

import djthreads  # noqa: E402


def task() -> None:
    """One query, then the simulated network wait of a slow API call."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    time.sleep(LATENCY)


def run_serial() -> None:
    for _ in range(N):
        task()


def run_djthreads() -> None:
    futures = [djthreads.submit(task) for _ in range(N)]
    for future in futures:
        future.result()


def run_chunk(count: int) -> None:
    for _ in range(count):
        task()
    connections.close_all()


def run_multiprocessing() -> None:
    ctx = multiprocessing.get_context("fork")
    sizes = [N // WORKERS + (1 if i < N % WORKERS else 0) for i in range(WORKERS)]
    connections.close_all()  # never share the parent's socket with the children
    processes = [ctx.Process(target=run_chunk, args=(size,)) for size in sizes]
    for process in processes:
        process.start()
    for process in processes:
        process.join()
        assert process.exitcode == 0


executor = concurrent.futures.ThreadPoolExecutor(WORKERS)


def task_then_close() -> None:
    try:
        task()
    finally:
        close_old_connections()


def run_raw() -> None:
    fn = task_then_close if APPROACH == "raw-pool" else task
    futures = [executor.submit(fn) for _ in range(N)]
    for future in futures:
        future.result()


def run_asgiref() -> None:
    fn = sync_to_async(task, thread_sensitive=False, executor=executor)

    async def main() -> None:
        await asyncio.gather(*(fn() for _ in range(N)))

    asyncio.run(main())


def warm_up() -> None:
    """Start the pool's W threads and open their connections (outside the timing)."""
    if APPROACH.startswith("djthreads"):
        djthreads.get_executor().warm_up(databases=["default"])
        return
    everyone = threading.Barrier(WORKERS)

    def connect() -> None:
        connection.ensure_connection()
        everyone.wait(30)
        if APPROACH == "raw-pool":
            close_old_connections()

    for future in [executor.submit(connect) for _ in range(WORKERS)]:
        future.result()


runs = {
    "serial": run_serial,
    "djthreads": run_djthreads,
    "djthreads-reuse": run_djthreads,
    "djthreads-pool": run_djthreads,
    "multiprocessing": run_multiprocessing,
    "asgiref": run_asgiref,
    "raw": run_raw,
    "raw-pool": run_raw,
}
run = runs[APPROACH]
batches = 1 if APPROACH in ("serial", "multiprocessing") else 2
elapsed = []
collections: list[dict[int, list[float]]] = []  # per batch: generation -> [count, ms]
collection_started = [0.0]


def note_collection(phase: str, info: dict[str, int]) -> None:
    """gc.callbacks hook (``gc-log``): time each collection into the current batch."""
    if phase == "start":
        collection_started[0] = time.perf_counter()
        return
    ms = (time.perf_counter() - collection_started[0]) * 1000
    figure = collections[-1].setdefault(info["generation"], [0, 0.0])
    figure[0] += 1
    figure[1] += ms


if WARM_UP:
    warm_up()
if "gc-log" in OPTIONS:
    gc.callbacks.append(note_collection)
with Sampler() as sampler:
    for _ in range(batches):
        collections.append({})
        start = time.perf_counter()
        run()
        elapsed.append(time.perf_counter() - start)
if "gc-log" in OPTIONS:
    gc.callbacks.remove(note_collection)
executor.shutdown()
if APPROACH.startswith("djthreads"):
    # Outside the timing: the pool's shutdown closes what reuse kept open.
    djthreads.get_executor().shutdown(wait=True, timeout=30)
ideal = math.ceil(N / WORKERS) * LATENCY
emit(
    {
        "bench": "scaling",
        "approach": APPROACH,
        "warm_up": WARM_UP,
        "workers": WORKERS,
        "n": N,
        "latency_ms": LATENCY * 1000,
        "elapsed_s": round(elapsed[0], 3),
        "ideal_s": round(ideal, 3),
        "efficiency": round(ideal / elapsed[0], 3),
        "warm_elapsed_s": round(elapsed[-1], 3) if batches > 1 else None,
        "warm_efficiency": round(ideal / elapsed[-1], 3) if batches > 1 else None,
        "peak_connections": sampler.peak_connections,
        "peak_pss_mib": round(sampler.peak_pss_kib / 1024, 1),
        # Closed backends linger a moment in pg_stat_activity; leaked ones stay.
        "open_after": wait_for_connections(0, timeout=3),
    }
    | (
        {
            "collections": [
                {f"gen{gen}": [count, round(ms, 2)] for gen, (count, ms) in sorted(batch.items())}
                for batch in collections
            ]
        }
        if "gc-log" in OPTIONS
        else {}
    )
)
