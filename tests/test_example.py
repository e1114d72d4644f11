"""The example project end to end: the form, the status page and the commands."""

from __future__ import annotations

import io
from typing import Any

import pytest
from django.core.management import call_command
from django.db import connection
from django.test import override_settings

import djthreads
from djthreads.test import TransactionTestCase
from example.harvest.jobs import fetch_record, run_job
from example.harvest.models import Job, Record

pytestmark = pytest.mark.timeout(60)

EXAMPLE = override_settings(
    ROOT_URLCONF="example.project.urls",
    TEMPLATES=[{"BACKEND": "django.template.backends.django.DjangoTemplates", "APP_DIRS": True}],
    HARVEST_LATENCY=0.0,
)


@EXAMPLE
class WebFlowTests(TransactionTestCase):
    def test_form_starts_the_job_in_threads_and_the_status_page_shows_it_done(self) -> None:
        page = self.client.get("/")
        self.assertContains(page, "Start the job")

        response = self.client.post("/", {"total": 24, "workers": 4})
        job = Job.objects.get()
        self.assertRedirects(response, f"/jobs/{job.pk}/")

        djthreads.wait_for_tasks(timeout=30)
        status = self.client.get(f"/jobs/{job.pk}/")
        self.assertContains(status, f"Job {job.pk}: done")
        self.assertContains(status, "24 / 24 records with 4 threads")
        self.assertNotContains(status, 'http-equiv="refresh"')  # finished: stops refreshing
        numbers = sorted(Record.objects.filter(job=job).values_list("number", flat=True))
        assert numbers == list(range(24))
        # The items ran in djthreads.map's threads, not in the view's thread.
        threads = set(Record.objects.values_list("fetched_by", flat=True))
        assert all(name.startswith("djthreads_map_") for name in threads), threads
        self.assertNoLeakedConnections()

    def test_a_running_job_page_refreshes_itself(self) -> None:
        job = Job.objects.create(total=5, workers=2, status=Job.Status.RUNNING)
        page = self.client.get(f"/jobs/{job.pk}/")
        self.assertContains(page, 'http-equiv="refresh"')
        self.assertContains(page, "0 / 5 records")

    def test_invalid_form_starts_nothing(self) -> None:
        response = self.client.post("/", {"total": 0, "workers": 4})
        assert response.status_code == 200
        assert not Job.objects.exists()


@EXAMPLE
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("options", [{"workers": 3}, {"serial": True}])
def test_runjob_command(options: dict[str, Any]) -> None:
    out = io.StringIO()
    call_command("runjob", items=15, stdout=out, stderr=io.StringIO(), **options)
    job = Job.objects.get()
    assert (job.status, job.done, job.total) == (Job.Status.DONE, 15, 15)
    threads = "1 thread" if options.get("serial") else "3 threads"
    assert f"job {job.pk}: 15 records in" in out.getvalue()
    assert threads in out.getvalue()


@EXAMPLE
@pytest.mark.django_db(transaction=True)
def test_failed_item_marks_the_job_failed() -> None:
    job = Job.objects.create(total=6, workers=2)
    Record.objects.create(job=job, number=4, title="taken", price=1, fetched_by="test")
    with pytest.raises(Exception, match="UNIQUE|unique|duplicate"):
        run_job(job.pk)
    job.refresh_from_db()
    assert job.status == Job.Status.FAILED
    assert "one_record_per_item" in job.error or "UNIQUE" in job.error


@EXAMPLE
@pytest.mark.django_db(transaction=True)
def test_demo_command_prints_the_table() -> None:
    out = io.StringIO()
    call_command("demo", items=10, workers=4, stdout=out, stderr=io.StringIO())
    text = out.getvalue()
    assert "serial (1 thread)" in text
    assert "djthreads.map (4 threads)" in text
    assert "database connections left open: 0" in text
    assert "records stored: 20" in text
    connection.close()


@EXAMPLE
@pytest.mark.django_db(transaction=True)
def test_fetch_record_is_a_plain_function() -> None:
    job = Job.objects.create(total=1)
    assert fetch_record(job.pk, 7) == 7
    record = Record.objects.get()
    assert (record.number, record.title) == (7, "Item 7")
