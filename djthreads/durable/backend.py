"""DurableBackend: django-tasks-db's backend, run by the djthreads pool of each process.

``enqueue()`` and ``get_result()`` are django-tasks-db's own: a task is a
``DBTaskResult`` row written in the caller's transaction, and a result is read
back from that row, from any process. What this class adds is who runs the
rows: a dispatcher thread in every process with ``OPTIONS['RUN_TASKS']`` on
(``djthreads.durable._dispatcher``), woken by the commit of a task enqueued
in the same process. Because it *is* a ``DatabaseBackend``, ``db_worker
--backend <alias>`` accepts the alias and shares the queue.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from asgiref.sync import sync_to_async
from django.apps import apps
from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from django.db import router

try:
    from django_tasks_db import DatabaseBackend
except ImportError as e:
    raise ImportError(
        "djthreads.durable.DurableBackend needs django-tasks-db: pip install "
        "'djthreads[durable]', then add 'django_tasks_db' and 'djthreads.durable' to "
        "INSTALLED_APPS and run python manage.py migrate."
    ) from e

from djthreads.durable import _workers

DEFAULT_OPTIONS: Mapping[str, Any] = {
    "POLL_INTERVAL": 1.0,  # seconds between looks for tasks enqueued elsewhere
    "LEASE_TIMEOUT": 60.0,  # seconds without a heartbeat before a process counts as dead
    "RUN_TASKS": True,  # False: this process only enqueues (and reads results)
}
# django-tasks-db's own option, passed through.
FOREIGN_OPTIONS = ("id_function",)


def _positive_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value > 0


def validate_options(alias: str, options: object) -> list[tuple[str, str]]:
    """Return ``(check id, message)`` for every problem in a durable backend's OPTIONS."""
    where = f"TASKS[{alias!r}]['OPTIONS']"
    if not isinstance(options, Mapping):
        return [("djthreads.E203", f"{where} must be a dict, got {options!r}.")]
    known = [*DEFAULT_OPTIONS, *FOREIGN_OPTIONS]
    errors = [
        (
            "djthreads.E203",
            f"{where} has an unknown key {key!r}; known keys: {', '.join(known)}.",
        )
        for key in options
        if key not in known
    ]
    values = {**DEFAULT_OPTIONS, **options}
    for key, check_id in (
        ("POLL_INTERVAL", "djthreads.E204"),
        ("LEASE_TIMEOUT", "djthreads.E205"),
    ):
        if not _positive_number(values[key]):
            errors.append(
                (
                    check_id,
                    f"{where}[{key!r}] must be a positive number of seconds, got {values[key]!r}.",
                )
            )
    if not isinstance(values["RUN_TASKS"], bool):
        errors.append(
            (
                "djthreads.E206",
                f"{where}['RUN_TASKS'] must be True or False, got {values['RUN_TASKS']!r}.",
            )
        )
    return errors


class DurableBackend(DatabaseBackend):
    """Store tasks in django-tasks-db's table; run them on this process's djthreads pool.

    ``enqueue`` runs in the calling thread and writes the task's row in the
    caller's transaction on the database that routes ``DBTaskResult``: a
    rollback leaves no row and nothing runs; the commit wakes this process's
    dispatcher, which claims the row as soon as a pool worker is free. Any
    process running this backend, or ``db_worker``, may run it instead, each
    task once. A pool worker runs the task and closes its connections after it.

    ``get_result`` reads the row (any process). Tasks READY at exit stay READY
    for the next process; see the documentation for crashes and shutdown.
    """

    def __init__(self, alias: str, params: dict[str, Any]) -> None:
        # django-tasks-db reads OPTIONS as a dict while it is built; a bad
        # value is kept for check() to report (djthreads.E203), not a crash.
        options = params.get("OPTIONS", {})
        safe = options if isinstance(options, Mapping) else {}
        super().__init__(alias, {**params, "OPTIONS": safe})
        self.options = options

    def _options(self) -> dict[str, Any]:
        errors = validate_options(self.alias, self.options)
        if errors:
            raise ImproperlyConfigured(" ".join(message for _, message in errors))
        return {**DEFAULT_OPTIONS, **self.options}

    def start(self) -> None:
        """Start this alias's dispatcher in this process, unless RUN_TASKS is off.

        Raises ImproperlyConfigured for bad OPTIONS.
        """
        options = self._options()
        if options["RUN_TASKS"]:
            _workers.ensure_started(self.alias, type(self), options, self.queues)

    def enqueue(self, task: Any, args: Any, kwargs: Any) -> Any:
        """Write the task's READY row (caller's transaction) and return its result.

        Raises ImproperlyConfigured for bad OPTIONS, InvalidTask as Django does.
        """
        from django_tasks_db.models import DBTaskResult

        options = self._options()
        result: Any = super().enqueue(task, args, kwargs)
        if options["RUN_TASKS"]:
            _workers.ensure_started(self.alias, type(self), options, self.queues)
            _workers.on_commit(self.alias, result, router.db_for_write(DBTaskResult))
        return result

    async def aenqueue(self, task: Any, args: Any, kwargs: Any) -> Any:
        """``enqueue`` in a thread: the on-commit wake needs the sync connection."""
        return await sync_to_async(self.enqueue, thread_sensitive=True)(task, args, kwargs)

    def check(self, **kwargs: Any) -> list[checks.CheckMessage]:
        """Report missing apps (djthreads.E201, E202) and bad OPTIONS (E203-E206)."""
        messages: list[checks.CheckMessage] = []
        for app, check_id in (
            ("django_tasks_db", "djthreads.E201"),
            ("djthreads.durable", "djthreads.E202"),
        ):
            if not apps.is_installed(app):
                messages.append(
                    checks.Error(
                        f"TASKS[{self.alias!r}] uses {type(self).__name__}, which needs "
                        f"{app!r} in INSTALLED_APPS (its tables hold the tasks and the "
                        "process leases). Add it and run python manage.py migrate.",
                        id=check_id,
                    )
                )
        messages += [
            checks.Error(message, id=check_id)
            for check_id, message in validate_options(self.alias, self.options)
        ]
        return messages
