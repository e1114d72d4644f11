"""Module-level Django ``@task`` functions for the durable backend's tests.

Each task that counts writes an ``Item`` named after its key, so a test can
count how many times each task ran, whichever process ran it.
"""

from __future__ import annotations

import os
import sys
import threading

from django.utils import timezone

from djthreads._tasks_compat import task
from tests.models import Item


@task
def record(key: str) -> str:
    """Record one run of ``key``."""
    Item.objects.create(name=key)
    return key


@task
def record_unless_held(key: str, hold_pid: int) -> str:
    """Block (without recording) in process ``hold_pid``; record anywhere else.

    The child that the crash tests SIGKILL is ``hold_pid``: the tasks it
    claimed are RUNNING there, forever, until the kill.
    """
    if os.getpid() == hold_pid:
        threading.Event().wait(600)
    Item.objects.create(name=key)
    return key


@task
def stamp(key: str) -> str:
    """Record ``key`` with the time the task started, as ``key|<isoformat>``."""
    started = timezone.now()
    Item.objects.create(name=f"{key}|{started.isoformat()}")
    return started.isoformat()


@task
def record_after_stdin(key: str) -> str:
    """Wait for a line on stdin (sent while the process exits), then record."""
    sys.stdin.readline()
    Item.objects.create(name=key)
    return key


@task
def stuck(seconds: float) -> None:
    """Run far longer than the shutdown timeout of the child that runs it."""
    threading.Event().wait(seconds)


@task
def nul() -> str:
    """Return text PostgreSQL's jsonb refuses (a NUL character)."""
    return "a\x00b"
