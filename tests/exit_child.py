"""Child process for test_exit: submits tasks, then lets the interpreter exit.

stdin's first line releases the "in time" task, after the main thread has
returned (so during the exit wait); the "stuck" task never finishes.
"""

from __future__ import annotations

import logging
import sys
import threading

import django
from django.conf import settings

settings.configure(DJTHREADS={"SHUTDOWN_TIMEOUT": float(sys.argv[1])})
django.setup()
logging.basicConfig(level=logging.WARNING, stream=sys.stderr)

import djthreads  # noqa: E402

never = threading.Event()


def stuck_task() -> None:
    never.wait()


def in_time_task() -> None:
    sys.stdin.readline()
    print("in-time task finished", flush=True)


djthreads.submit(stuck_task)
djthreads.submit(in_time_task)
print("main thread done", flush=True)
