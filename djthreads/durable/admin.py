"""django-tasks-db's admin page, plus an action that re-enqueues failed tasks as new ones.

Loaded by the admin's autodiscovery when "djthreads.durable" is in
INSTALLED_APPS; it replaces django-tasks-db's registration of DBTaskResult
with a subclass of django-tasks-db's own ModelAdmin (same columns, filters
and read-only pages).
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.contrib.auth import get_permission_codename
from django.db import router, transaction
from django.db.models import QuerySet
from django.http import HttpRequest
from django_tasks_db.admin import DBTaskResultAdmin
from django_tasks_db.models import DBTaskResult

from djthreads._tasks_compat import AnyTaskResult


def requeue_failed(
    rows: QuerySet[DBTaskResult[..., Any]],
) -> tuple[list[AnyTaskResult], list[str]]:
    """Enqueue every FAILED task among ``rows`` again, as a new task; all or none.

    Runs in the calling thread, in one transaction: each new task has the old
    one's path, arguments, priority, queue and backend, and runs as soon as a
    worker is free. Returns (the new results, why each other row was skipped).
    """
    created: list[AnyTaskResult] = []
    skipped: list[str] = []
    with transaction.atomic(using=router.db_for_write(DBTaskResult)):
        for row in rows.order_by("enqueued_at"):
            if row.status != "FAILED":
                skipped.append(f"{row.id} is {row.status}, not FAILED")
                continue
            try:
                task = row.task.using(run_after=None)
            except Exception as exc:
                skipped.append(f"{row.id}: {row.task_path} cannot be loaded ({exc})")
                continue
            arguments = row.args_kwargs
            created.append(task.enqueue(*arguments["args"], **arguments["kwargs"]))
    return created, skipped


class DurableTaskResultAdmin(DBTaskResultAdmin):
    """django-tasks-db's task admin with the "Re-enqueue" action."""

    actions = ("requeue_failed_tasks",)

    @admin.action(
        description="Re-enqueue selected failed tasks as new tasks",
        permissions=["requeue"],
    )
    def requeue_failed_tasks(
        self, request: HttpRequest, queryset: QuerySet[DBTaskResult[..., Any]]
    ) -> None:
        """The admin action: re-enqueue, then say what was done and what was skipped."""
        created, skipped = requeue_failed(queryset)
        if created:
            self.message_user(
                request,
                f"Re-enqueued {len(created)} failed task(s) as new tasks: "
                + ", ".join(result.id for result in created),
                messages.SUCCESS,
            )
        if skipped:
            self.message_user(request, "Skipped: " + "; ".join(skipped) + ".", messages.WARNING)

    def has_requeue_permission(self, request: HttpRequest) -> bool:
        # django-tasks-db's admin allows no additions; re-enqueueing adds rows,
        # so it takes the model's "add" permission.
        codename = get_permission_codename("add", self.opts)
        user: Any = request.user  # the admin's users have permissions (PermissionsMixin)
        return bool(user.has_perm(f"{self.opts.app_label}.{codename}"))


if admin.site.is_registered(DBTaskResult):
    admin.site.unregister(DBTaskResult)
admin.site.register(DBTaskResult, DurableTaskResultAdmin)
