"""The path past one machine: the example job's @task, unchanged, on ThreadPoolBackend
and on django-tasks-db with a real ``db_worker`` process, leaves the same database state."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.db import connection
from django.test import override_settings

from djthreads._tasks_compat import TaskResultStatus, task_backends
from example.harvest.models import Job, Record
from example.harvest.tasks import enqueue_job
from tests.backend_tasks import Finished

if os.environ.get("CI") != "true":
    pytest.importorskip("django_tasks_db", reason="pip install django-tasks-db (.ci/venv.sh does)")

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(
        settings.DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql",
        reason="the db_worker process shares the test database on PostgreSQL; "
        "the PostgreSQL runs cover it",
    ),
    pytest.mark.django_db(transaction=True),
]

ROOT = Path(__file__).resolve().parents[1]
ITEMS = 12
WORKER_TIMEOUT = 90.0


def database_state(job: Job) -> list[tuple[Any, ...]]:
    """The records the job left in the database, minus who fetched them."""
    records = Record.objects.filter(job=job).order_by("number")
    return [tuple(row) for row in records.values_list("number", "title", "price")]


def run_db_worker() -> subprocess.CompletedProcess[str]:
    """Run ``manage.py db_worker --batch`` on this session's test database until the
    queue is empty; killed after WORKER_TIMEOUT seconds whatever happens."""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings_worker",
        "DJTHREADS_WORKER_SETTINGS": os.environ["DJANGO_SETTINGS_MODULE"],
        "DJTHREADS_WORKER_DB": str(connection.settings_dict["NAME"]),
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    command = [sys.executable, "-m", "django", "db_worker", "--batch", "--no-startup-delay"]
    process = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        output, _ = process.communicate(timeout=WORKER_TIMEOUT)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate(timeout=10)
    return subprocess.CompletedProcess(command, process.returncode, output)


@override_settings(HARVEST_LATENCY=0.0)
def test_example_job_same_state_on_thread_pool_and_django_tasks_db() -> None:
    thread_pool = {"default": {"BACKEND": "djthreads.backends.ThreadPoolBackend"}}
    with override_settings(TASKS=thread_pool), Finished.connected() as finished:
        first = Job.objects.create(total=ITEMS)
        results = enqueue_job(first.pk)
        finished.wait(results)
        for result in results:
            result.refresh()
            assert result.status == TaskResultStatus.SUCCESSFUL, result.errors
    thread_pool_state = database_state(first)
    assert [number for number, _, _ in thread_pool_state] == list(range(ITEMS))
    pool_threads = set(Record.objects.filter(job=first).values_list("fetched_by", flat=True))
    assert all(name.startswith("djthreads_") for name in pool_threads)

    database = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend"}}
    with override_settings(TASKS=database), Finished.connected() as finished:
        second = Job.objects.create(total=ITEMS)
        results = enqueue_job(second.pk)
        assert database_state(second) == []  # nothing runs in this process
        worker = run_db_worker()
        assert worker.returncode == 0, worker.stdout
        for result in results:
            # Read back from the database: results are cross-process now.
            fetched = task_backends["default"].get_result(result.id)
            assert fetched.status == TaskResultStatus.SUCCESSFUL, fetched.errors
            assert fetched.return_value == result.args[1]
            assert result.id not in finished.ids  # the worker, not this process, ran it
    assert database_state(second) == thread_pool_state
    fetched_by = set(Record.objects.filter(job=second).values_list("fetched_by", flat=True))
    assert fetched_by == {"MainThread"}  # db_worker runs tasks in its main thread
    assert "django_tasks_db" in settings.INSTALLED_APPS
