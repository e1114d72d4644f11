"""The job: fetch every item over HTTP and store it, serially or in threads.

``fetch_record`` is the per-item work, a plain module-level function: it
runs in a djthreads.map worker, whose database connection is closed after it.
"""

from __future__ import annotations

import functools
import json
import threading
import time
import traceback
from urllib.request import urlopen

from django.conf import settings
from django.utils import timezone

import djthreads
from djthreads import run_async
from example.harvest.failures import explain
from example.harvest.models import Job, Record
from example.harvest.source import source_url


def fetch_record(job_id: int, number: int) -> int:
    """Fetch item ``number`` from the source and store it as a Record of the job."""
    latency = getattr(settings, "HARVEST_LATENCY", 0.05)
    with urlopen(f"{source_url()}/items/{number}?latency={latency}", timeout=30) as response:
        data = json.load(response)
    Record.objects.create(
        job_id=job_id,
        number=number,
        title=data["title"],
        price=data["price"],
        fetched_by=threading.current_thread().name,
    )
    return number


def run_job(job_id: int, *, workers: int | None = None, progress: bool = False) -> Job:
    """Run the job in the calling thread; its items run in ``workers`` threads.

    ``workers=1`` runs the items one after another in the calling thread (the
    serial baseline). A failure marks the job failed, with a sentence for the
    user and the traceback, and is re-raised.
    """
    job = Job.objects.get(pk=job_id)
    workers = workers or job.workers
    Job.objects.filter(pk=job_id).update(
        status=Job.Status.RUNNING, workers=workers, started=timezone.now()
    )
    started = time.perf_counter()
    fetch = functools.partial(fetch_record, job_id)
    try:
        if workers == 1:
            for number in range(job.total):
                fetch(number)
        else:
            djthreads.map(fetch, range(job.total), max_workers=workers, progress=progress)
    except Exception as exc:
        Job.objects.filter(pk=job_id).update(
            status=Job.Status.FAILED,
            seconds=time.perf_counter() - started,
            done=Record.objects.filter(job_id=job_id).count(),
            error=explain(exc, source_url()),
            error_detail="".join(traceback.format_exception(exc)),
        )
        raise
    Job.objects.filter(pk=job_id).update(
        status=Job.Status.DONE,
        seconds=time.perf_counter() - started,
        done=Record.objects.filter(job_id=job_id).count(),
    )
    job.refresh_from_db()
    return job


def start_job(job_id: int) -> None:
    """Start the job once the view's transaction commits.

    In a djthreads pool thread; with ``settings.HARVEST_DURABLE``, as a durable
    task instead (``tasks.run_job_task``): a database row written in the
    view's transaction, which survives a restart until a process runs it.
    """
    if getattr(settings, "HARVEST_DURABLE", False):
        from example.harvest.tasks import run_job_task

        run_job_task.enqueue(job_id)
    else:
        _run_job_in_a_thread(job_id)


@run_async
def _run_job_in_a_thread(job_id: int) -> None:
    run_job(job_id)
