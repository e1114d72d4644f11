"""System checks of djthreads.durable (djthreads.E207, W201).

The backend's own ``check()`` (run by Django for every TASKS alias) reports
missing apps and bad OPTIONS, E201-E206. These two are registered by the
app: one needs no backend class (django-tasks-db missing), one needs the
database (``manage.py check --database default``, and ``migrate``).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from typing import Any

from django.apps import AppConfig, apps
from django.conf import settings
from django.core.checks import CheckMessage, Error
from django.core.checks import Warning as CheckWarning
from django.db import connections, router
from django.utils.module_loading import import_string

# The app labels whose tables durable tasks need.
LABELS = ("django_tasks_database", "djthreads_durable")


def check_installed(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[CheckMessage]:
    """djthreads.E207: "djthreads.durable" is installed but django-tasks-db is not."""
    if importlib.util.find_spec("django_tasks_db") is not None:
        return []
    return [
        Error(
            "'djthreads.durable' is in INSTALLED_APPS but django-tasks-db is not installed. "
            "Run pip install 'djthreads[durable]' and add 'django_tasks_db' to INSTALLED_APPS.",
            id="djthreads.E207",
        )
    ]


def _uses_durable() -> bool:
    from djthreads.durable.backend import DurableBackend

    for params in getattr(settings, "TASKS", {}).values():
        try:
            backend = import_string(params["BACKEND"])
        except (ImportError, KeyError, TypeError):
            continue  # Django's own check names a backend it cannot import
        if isinstance(backend, type) and issubclass(backend, DurableBackend):
            return True
    return False


def check_migrations(
    app_configs: Sequence[AppConfig] | None = None,
    databases: Sequence[str] | None = None,
    **kwargs: Any,
) -> list[CheckMessage]:
    """djthreads.W201: a durable backend is configured but its tables are not migrated."""
    if not databases or not apps.is_installed("django_tasks_db"):
        return []
    if importlib.util.find_spec("django_tasks_db") is None or not _uses_durable():
        return []
    from django.db.migrations.executor import MigrationExecutor
    from django_tasks_db.models import DBTaskResult

    from djthreads.durable.models import WorkerLease

    messages: list[CheckMessage] = []
    for model in (DBTaskResult, WorkerLease):
        using = router.db_for_write(model)
        if using not in databases:
            continue
        executor = MigrationExecutor(connections[using])
        label = model._meta.app_label
        targets = [node for node in executor.loader.graph.leaf_nodes() if node[0] == label]
        plan = executor.migration_plan(targets)
        if plan:
            names = ", ".join(f"{m.app_label}.{m.name}" for m, _ in plan[:3])
            if len(plan) > 3:
                names += f" and {len(plan) - 3} more"
            messages.append(
                CheckWarning(
                    f"Durable tasks need the {label!r} tables on database {using!r}, but "
                    f"migrations {names} are not applied there. Run python manage.py migrate.",
                    id="djthreads.W201",
                )
            )
    return messages
