"""Child process for test_backends' exit test: enqueues Django tasks, then exits.

One worker: ``gate`` holds it until stdin's first line (sent while the
interpreter exits), ``ready`` waits behind it in the queue, ``later`` is
deferred by an hour and can never start.
"""

from __future__ import annotations

import datetime
import logging
import sys

import django
from django.conf import settings

settings.configure(
    DJTHREADS={"MAX_WORKERS": 1, "SHUTDOWN_TIMEOUT": 20.0},
    TASKS={"default": {"BACKEND": "djthreads.backends.ThreadPoolBackend"}},
)
django.setup()
logging.basicConfig(level=logging.WARNING, stream=sys.stderr)

from django.utils import timezone  # noqa: E402

from djthreads._tasks_compat import task  # noqa: E402


@task
def gate() -> None:
    sys.stdin.readline()
    print("gate done", flush=True)


@task
def ready() -> None:
    print("ready ran", flush=True)


@task
def later() -> None:
    print("later ran", flush=True)


gate.enqueue()
ready.enqueue()
later.using(run_after=timezone.now() + datetime.timedelta(hours=1)).enqueue()
print("main thread done", flush=True)
