"""Child process for test_account's exit tests of a user DjangoExecutor.

argv[1] picks the scenario:
- "drain": four tasks queued on DjangoExecutor(2, max_queue=10, shutdown_timeout=5)
  must all run during the exit drain (after "main thread done"/"go");
- "stuck": one task never finishes and another waits behind it: the WARNING
  names both, with their ids and arguments, after shutdown_timeout=1;
- "atexit": a handler registered before djthreads is imported submits after
  the exit drain began: refused with the stdlib's RuntimeError, never lost.
"""

from __future__ import annotations

import atexit
import logging
import sys
import threading

scenario = sys.argv[1]


def submit_late() -> None:
    # Runs after djthreads' own exit drain (atexit is last in, first out).
    try:
        pool.submit(print, "late task ran", flush=True)
    except RuntimeError as exc:
        print(f"refused: {exc}", flush=True)


if scenario == "atexit":
    atexit.register(submit_late)

import django  # noqa: E402
from django.conf import settings  # noqa: E402

settings.configure()
django.setup()
logging.basicConfig(level=logging.WARNING, stream=sys.stderr)

from djthreads import DjangoExecutor  # noqa: E402

never = threading.Event()
go = threading.Event()
printing = threading.Lock()  # two workers print: one line at a time


def wait_for_go(n: int) -> None:
    if n == 0:
        sys.stdin.readline()  # "go", sent once the interpreter is exiting
        go.set()
    go.wait(20)
    with printing:
        print(f"task {n} ran", flush=True)


def stuck(label: str) -> None:
    never.wait()


pool = DjangoExecutor(2, max_queue=10, shutdown_timeout=5 if scenario == "drain" else 1)
if scenario == "drain":
    for n in range(4):
        pool.submit(wait_for_go, n)
elif scenario == "stuck":
    pool = DjangoExecutor(1, "stuckpool", max_queue=10, shutdown_timeout=1)
    pool.submit(stuck, "first")
    pool.submit(stuck, "second")
else:
    pool.submit(int).result(10)
print("main thread done", flush=True)
