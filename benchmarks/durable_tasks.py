"""The benchmark's task, importable by db_worker processes too."""

from __future__ import annotations

import time

try:
    from django.tasks import task
except ImportError:  # Django < 6.0: the django-tasks backport
    from django_tasks import task  # type: ignore[no-redef]


@task
def stamp() -> float:
    """A no-op that returns when it started (time.time(), one clock on one machine)."""
    return time.time()
