"""Tasks the smoke test runs in djthreads' pool."""

from __future__ import annotations

import threading

from djthreads import run_async
from smokeapp.models import Note


@run_async
def add_note(text: str) -> str:
    """Store a Note in a pool thread and return that thread's name."""
    Note.objects.create(text=text)
    return threading.current_thread().name


@run_async
def explode(text: str) -> None:
    """Fail in a pool thread, after a query (so the thread has a connection)."""
    Note.objects.count()
    raise ValueError(text)
