"""Start a pool's workers, and open their connections, ahead of the first burst.

A fresh pool starts a worker per task submitted while none is idle, and each
worker opens its connections with its first query: the first burst pays for
``max_workers`` thread starts and connection handshakes (and, on Django's
psycopg 3 pool, for filling the pool). ``DjangoExecutor.warm_up()`` pays
them at startup instead.

It also pays for the first full garbage collection. Django's startup leaves
tens of thousands of objects that no full collection has examined yet; the
first burst's allocations (about a dozen tracked objects per queued task)
trigger the full collection that examines them all, and it holds the GIL
while every worker waits: 13-33 ms in the first batch of 640 tasks at 32
workers, about 0.015 of its efficiency (``benchmarks/scaling.py ... gc-log``
shows each batch's collections). Collected at warm-up time, when nothing
waits on it, the first burst pays only the young collections every batch
pays.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import gc
import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING

from django.db import connections

if TYPE_CHECKING:
    from djthreads.executor import DjangoExecutor


def _connect(databases: tuple[str, ...], everyone: threading.Barrier) -> None:
    # Runs in a worker. Waiting for the others keeps this worker busy, so
    # each warm-up task starts (or takes) a worker of its own.
    try:
        for alias in databases:
            connections[alias].ensure_connection()
    except BaseException:
        everyone.abort()  # the others stop waiting; warm_up() raises this
        raise
    with contextlib.suppress(threading.BrokenBarrierError):
        everyone.wait()  # broken: warm_up() gave up waiting, and says so


def warm_up(
    executor: DjangoExecutor, databases: Iterable[str], timeout: float | None, collect: bool
) -> None:
    """See ``DjangoExecutor.warm_up``."""
    aliases = tuple(databases)
    for alias in aliases:
        if alias not in connections.settings:
            raise ValueError(
                f"warm_up() got the database alias {alias!r}, which is not in "
                f"settings.DATABASES ({', '.join(connections.settings)})."
            )
    everyone = threading.Barrier(executor.max_workers, timeout=timeout)
    futures = [executor.submit(_connect, aliases, everyone) for _ in range(executor.max_workers)]
    done, not_done = concurrent.futures.wait(futures, timeout)
    for future in done:
        future.result()  # a connection that could not be opened raises here
    if not_done or everyone.broken:
        everyone.abort()
        raise TimeoutError(
            f"warm_up() could not get all {executor.max_workers} workers of "
            f"pool={executor.thread_name_prefix} within {timeout} s: some are busy with "
            "tasks. Warm a pool up before its first burst, or pass a longer timeout."
        )
    if collect:
        gc.collect()  # in the calling thread, with every worker idle (module docstring)
