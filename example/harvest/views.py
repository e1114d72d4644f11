"""Two pages: a form that starts a job, and the job's self-refreshing status."""

from __future__ import annotations

from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render

from example.harvest.forms import JobForm
from example.harvest.jobs import start_job
from example.harvest.models import Job


def start(request: HttpRequest) -> HttpResponse:
    """GET: the form and recent jobs. POST: create a job and start it in a thread."""
    form = JobForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        with transaction.atomic():
            job = Job.objects.create(
                origin=Job.Origin.WEB,
                total=form.cleaned_data["total"],
                workers=form.cleaned_data["workers"],
            )
            # Held until the commit: the thread never looks for a job that
            # is not in the database yet.
            start_job(job.pk)
        return redirect("harvest:status", job_id=job.pk)
    # Only the page's own jobs: make demo and manage.py runjob keep theirs apart.
    jobs = Job.objects.filter(origin=Job.Origin.WEB).order_by("-pk")[:10]
    return render(request, "harvest/start.html", {"form": form, "jobs": jobs})


# Records shown on the status page: the first ones by item number.
SHOWN_RECORDS = 10


def status(request: HttpRequest, job_id: int) -> HttpResponse:
    """The job's progress and result; refreshes itself every second until it ends."""
    job = get_object_or_404(Job, pk=job_id)
    records = job.records.order_by("number")[:SHOWN_RECORDS]
    threads = job.records.values("fetched_by").distinct().count()
    return render(
        request,
        "harvest/status.html",
        {"job": job, "records": records, "threads": threads},
    )
