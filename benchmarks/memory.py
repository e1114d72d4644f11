"""Memory while 1,000,000 no-op tasks go through djthreads' bounded queue.

Usage: python benchmarks/memory.py TASKS
MAX_WORKERS=8, MAX_QUEUE=1000, ON_FULL="block": the submitter waits for a
slot, so at most 1,008 tasks exist at once. The Futures are dropped as they
are made (fire and forget). RSS is read every TASKS/20 submissions; the figure
is max - min after the first sample (imports and thread stacks settled).
"""

from __future__ import annotations

import os
import sys
import time

from _common import emit, setup

TASKS = int(sys.argv[1])
setup({"MAX_WORKERS": 8, "MAX_QUEUE": 1000, "ON_FULL": "block"})

import djthreads  # noqa: E402

PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE / 2**20


def noop() -> None:
    return None


step = TASKS // 20
samples = []
start = time.perf_counter()
for i in range(TASKS):
    djthreads.submit(noop)
    if i % step == step - 1:
        samples.append(rss_mib())
djthreads.wait_for_tasks(timeout=120)
elapsed = time.perf_counter() - start
settled = samples[1:]
emit(
    {
        "bench": "memory",
        "tasks": TASKS,
        "elapsed_s": round(elapsed, 1),
        "rss_first_mib": round(samples[0], 1),
        "rss_min_mib": round(min(settled), 1),
        "rss_max_mib": round(max(settled), 1),
        "growth_mib": round(max(settled) - min(settled), 1),
        "samples_mib": [round(s, 1) for s in samples],
    }
)
