"""The job as Django Tasks: the same per-item work, on whichever backend TASKS names.

With ``djthreads.backends.ThreadPoolBackend`` the items run in this process's
djthreads pool; with django-tasks-db (or Celery, or RQ) they run in worker
processes on any machine. This module does not change between the two.
"""

from __future__ import annotations

from typing import Any

# The ignores cover the other Django line: mypy sees one of the two imports
# fail (or untyped) on each, whichever Django the venv has.
try:
    from django.tasks import task  # type: ignore[import-untyped, unused-ignore]
except ImportError:  # Django < 6.0: the django-tasks backport
    from django_tasks import task  # type: ignore[no-redef, import-not-found, unused-ignore]

from example.harvest.jobs import fetch_record, run_job
from example.harvest.models import Job


@task  # type: ignore[untyped-decorator, unused-ignore]
def fetch_record_task(job_id: int, number: int) -> int:
    """Fetch and store one item of the job (see ``jobs.fetch_record``)."""
    return fetch_record(job_id, number)


@task  # type: ignore[untyped-decorator, unused-ignore]
def run_job_task(job_id: int) -> int:
    """Run the whole job (``jobs.run_job``) as one task; return how many records it stored."""
    return run_job(job_id).done


def enqueue_job(job_id: int) -> list[Any]:
    """Mark the job running and enqueue one task per item; return their results.

    Runs in the calling thread; the items run where the Tasks backend runs them.
    """
    job = Job.objects.get(pk=job_id)
    Job.objects.filter(pk=job_id).update(status=Job.Status.RUNNING)
    return [fetch_record_task.enqueue(job_id, number) for number in range(job.total)]
