"""Per-task overhead: djthreads.submit against a raw ThreadPoolExecutor(8).

Usage: python benchmarks/overhead.py MODE ROUNDS
  MODE close — psycopg2, close after every task (the default);
       reuse — psycopg2, DJTHREADS['REUSE_CONNECTIONS'] with CONN_MAX_AGE=None;
       pool  — psycopg 3 with Django's connection pool (run in the psycopg 3 venv).

djthreads runs with ON_COMMIT=False. Each round runs, in rotating order, K
no-op tasks and K ``SELECT 1`` tasks on the raw pool and on djthreads, each
with 8 workers; a figure is wall time / K (throughput, not latency). The raw
pool's threads keep their connections for the whole run (nobody closes them:
the floor "with reused connections"); in pool mode a second raw pool gives
each task's connection back to Django's pool (the floor "with the pool's
cycle"). Prints one JSON line per (task, variant): median µs per task over the
rounds and the median of each round's ratio to the raw figure of the same
round.
"""

from __future__ import annotations

import concurrent.futures
import gc
import sys
from collections.abc import Callable

from _common import emit, median, setup, timed

MODE = sys.argv[1]
ROUNDS = int(sys.argv[2])
# ON_COMMIT=False: the submitter is in no transaction, so the check would only
# add its ~1 µs read of in_atomic_block (profile_hotpath.py times it).
if MODE == "pool":
    setup({"ON_COMMIT": False}, pool=True)
elif MODE == "reuse":
    setup({"ON_COMMIT": False, "REUSE_CONNECTIONS": True}, conn_max_age=None)
else:
    setup({"ON_COMMIT": False})

from django.db import connections  # noqa: E402

import djthreads  # noqa: E402

K = {"noop": 20_000, "select1": 600 if MODE == "close" else 3_000}


def noop() -> None:
    return None


def select_one(alias: str) -> None:
    with connections[alias].cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()


raw = concurrent.futures.ThreadPoolExecutor(8)


def run_raw(task: str) -> Callable[[], object]:
    args = () if task == "noop" else ("persistent",)
    fn = noop if task == "noop" else select_one

    def go() -> object:
        futures = [raw.submit(fn, *args) for _ in range(K[task])]
        return [f.result() for f in futures]

    return go


def run_djthreads(task: str) -> Callable[[], object]:
    args = () if task == "noop" else ("default",)
    fn = noop if task == "noop" else select_one

    def go() -> object:
        futures = [djthreads.submit(fn, *args) for _ in range(K[task])]
        return [f.result() for f in futures]

    return go


raw_cycle = concurrent.futures.ThreadPoolExecutor(8)


def select_then_hand_back() -> None:
    # What a request thread does on Django's pool: check a connection out for
    # the work, give it back at the end (close_old_connections() at request end).
    try:
        select_one("default")
    finally:
        connections["default"].close()


def run_raw_cycle(task: str) -> Callable[[], object]:
    def go() -> object:
        fn = noop if task == "noop" else select_then_hand_back
        futures = [raw_cycle.submit(fn) for _ in range(K[task])]
        return [f.result() for f in futures]

    return go


variants = {"raw": run_raw, "djthreads": run_djthreads}
if MODE == "pool":
    # A second floor: the raw pool paying Django's pool checkout and return per
    # task, as djthreads must (a worker never sits on a pool slot between tasks).
    variants["raw-cycle"] = run_raw_cycle
times: dict[tuple[str, str], list[float]] = {}
ratios: dict[tuple[str, str], list[float]] = {}
for task in K:
    # Warm up: threads started, raw connections opened, pool filled.
    for make in variants.values():
        make(task)()
for r in range(ROUNDS):
    for task in K:
        order = list(variants) if r % 2 == 0 else list(reversed(variants))
        round_us = {}
        for name in order:
            gc.collect()  # each variant starts from the same heap, outside the timing
            round_us[name] = timed(variants[name](task)) / K[task] * 1e6
        for name, us in round_us.items():
            times.setdefault((task, name), []).append(us)
            ratios.setdefault((task, name), []).append(us / round_us["raw"])
for (task, name), values in times.items():
    emit(
        {
            "bench": "overhead",
            "mode": MODE,
            "task": task,
            "variant": name,
            "tasks_per_round": K[task],
            "rounds": ROUNDS,
            "us_per_task": round(median(values), 1),
            "ratio": round(median(ratios[(task, name)]), 2),
            # The spread across rounds, so a target met in only some is visible.
            "ratio_min": round(min(ratios[(task, name)]), 2),
            "ratio_max": round(max(ratios[(task, name)]), 2),
        }
    )
djthreads.wait_for_tasks(timeout=60)
raw.shutdown()
raw_cycle.shutdown()
