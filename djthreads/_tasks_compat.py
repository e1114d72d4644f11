"""One import point for Django's Tasks framework on every supported Django.

Django >= 6.0 ships it as ``django.tasks``; on Django 5.2 the
``django-tasks`` package backports it as ``django_tasks``. Both have the same
classes, signals and behaviour; only two exception names differ, and this
module exports them under Django 6's names.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any, TypeAlias

import django

# mypy cannot see which Django is installed, only the Python version it checks
# for. Our typing matrix pairs Python 3.13 with Django 6 and Python 3.11 with
# Django 5.2 + django-tasks, so the version test picks the right stubs there;
# at run time the Django version decides.
if TYPE_CHECKING:
    if sys.version_info >= (3, 12):
        from django.tasks import task_backends
        from django.tasks.backends.base import BaseTaskBackend
        from django.tasks.base import (
            DEFAULT_TASK_BACKEND_ALIAS,
            Task,
            TaskContext,
            TaskError,
            TaskResult,
            TaskResultStatus,
            task,
        )
        from django.tasks.exceptions import InvalidTask, TaskResultDoesNotExist
        from django.tasks.signals import task_enqueued, task_finished, task_started
        from django.utils.json import normalize_json

        AnyTaskResult: TypeAlias = TaskResult[Any, Any]
        AnyTaskContext: TypeAlias = TaskContext[Any, Any]
    else:
        from django_tasks import task_backends
        from django_tasks.backends.base import BaseTaskBackend
        from django_tasks.base import (
            DEFAULT_TASK_BACKEND_ALIAS,
            Task,
            TaskContext,
            TaskError,
            TaskResult,
            TaskResultStatus,
            task,
        )
        from django_tasks.exceptions import InvalidTaskError as InvalidTask
        from django_tasks.exceptions import TaskResultDoesNotExist
        from django_tasks.signals import task_enqueued, task_finished, task_started
        from django_tasks.utils import normalize_json

        AnyTaskResult: TypeAlias = TaskResult[Any]
        AnyTaskContext: TypeAlias = TaskContext
elif django.VERSION >= (6, 0):
    from django.tasks import task_backends
    from django.tasks.backends.base import BaseTaskBackend
    from django.tasks.base import (
        DEFAULT_TASK_BACKEND_ALIAS,
        Task,
        TaskContext,
        TaskError,
        TaskResult,
        TaskResultStatus,
        task,
    )
    from django.tasks.exceptions import InvalidTask, TaskResultDoesNotExist
    from django.tasks.signals import task_enqueued, task_finished, task_started
    from django.utils.json import normalize_json

    AnyTaskResult = TaskResult
    AnyTaskContext = TaskContext
else:
    try:
        import django_tasks  # noqa: F401
    except ModuleNotFoundError as e:
        raise ImportError(
            f"djthreads.backends needs Django's Tasks framework: Django {django.__version__} "
            "does not include it. Install the backport with "
            "pip install 'djthreads[tasks]' (or 'django-tasks'), or upgrade to Django 6.0+."
        ) from e
    from django_tasks import task_backends
    from django_tasks.backends.base import BaseTaskBackend
    from django_tasks.base import (
        DEFAULT_TASK_BACKEND_ALIAS,
        Task,
        TaskContext,
        TaskError,
        TaskResult,
        TaskResultStatus,
        task,
    )
    from django_tasks.exceptions import InvalidTaskError as InvalidTask
    from django_tasks.exceptions import TaskResultDoesNotExist
    from django_tasks.signals import task_enqueued, task_finished, task_started
    from django_tasks.utils import normalize_json

    AnyTaskResult = TaskResult
    AnyTaskContext = TaskContext

AnyTask: TypeAlias = "Task[..., Any]"

__all__ = [
    "DEFAULT_TASK_BACKEND_ALIAS",
    "AnyTask",
    "AnyTaskContext",
    "AnyTaskResult",
    "BaseTaskBackend",
    "InvalidTask",
    "Task",
    "TaskContext",
    "TaskError",
    "TaskResult",
    "TaskResultDoesNotExist",
    "TaskResultStatus",
    "normalize_json",
    "task",
    "task_backends",
    "task_enqueued",
    "task_finished",
    "task_started",
]
