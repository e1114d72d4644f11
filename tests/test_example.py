"""The example project end to end: the form, the status page and the commands."""

from __future__ import annotations

import datetime
import io
import re
import socket
from pathlib import Path
from typing import Any
from urllib.error import HTTPError, URLError

import pytest
from django.core.management import call_command
from django.db import connection
from django.test import override_settings
from django.utils import timezone

import djthreads
from djthreads.test import TransactionTestCase
from example.harvest.jobs import fetch_record, run_job
from example.harvest.models import Job, Record
from example.harvest.source import source_url

pytestmark = pytest.mark.timeout(60)

EXAMPLE = override_settings(
    ROOT_URLCONF="example.project.urls",
    TEMPLATES=[{"BACKEND": "django.template.backends.django.DjangoTemplates", "APP_DIRS": True}],
    STATIC_URL="/static/",
    HARVEST_LATENCY=0.0,
)


def closed_port_url() -> str:
    """The URL of a loopback port nothing listens on (connecting is refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def text_of(html: bytes) -> str:
    """The page's text with tags dropped and whitespace squeezed."""
    return " ".join(re.sub(r"<[^>]+>", " ", html.decode()).split())


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
        self.assertContains(response, "Ensure this value is greater than or equal to 1.")

    def test_a_job_the_source_refuses_fails_with_a_message_and_the_detail(self) -> None:
        url = closed_port_url()
        with override_settings(HARVEST_SOURCE_URL=url), self.assertTaskRaises(URLError):
            self.client.post("/", {"total": 6, "workers": 2})
        job = Job.objects.get()
        page = self.client.get(f"/jobs/{job.pk}/")
        self.assertContains(page, f"Job {job.pk}: failed")
        self.assertContains(
            page,
            f"Could not connect to the data source at {url}: nothing is listening there.",
        )
        self.assertContains(page, "<summary>Technical details</summary>", html=False)
        self.assertContains(page, "ConnectionRefusedError")  # the traceback, folded away
        self.assertContains(page, "0 / 6 records with 2 threads")
        self.assertNotContains(page, 'http-equiv="refresh"')
        assert "Stopped after" in text_of(page.content)


@EXAMPLE
class PageTests(TransactionTestCase):
    """What the pages show, from rows the test writes (no job runs)."""

    def test_pages_link_the_stylesheet_which_the_app_ships(self) -> None:
        page = self.client.get("/")
        self.assertContains(page, '<link rel="stylesheet" href="/static/harvest/style.css">')
        css = Path(__file__).parent.parent / "example/harvest/static/harvest/style.css"
        assert ".badge.failed" in css.read_text()

    def test_counts_are_pluralised(self) -> None:
        one = Job.objects.create(total=1, workers=1, status=Job.Status.DONE, done=1, seconds=0.5)
        two = Job.objects.create(total=2, workers=2, status=Job.Status.DONE, done=2, seconds=0.5)
        one_page = text_of(self.client.get(f"/jobs/{one.pk}/").content)
        two_page = text_of(self.client.get(f"/jobs/{two.pk}/").content)
        assert re.search(r"\b1 / 1 record with 1 thread\b", one_page), one_page
        assert re.search(r"\b2 / 2 records with 2 threads\b", two_page), two_page
        listing = text_of(self.client.get("/").content)
        assert re.search(r"\b1 thread\b", listing), listing
        assert re.search(r"\b2 threads\b", listing), listing

    def test_records_are_listed_in_item_order(self) -> None:
        job = Job.objects.create(total=12, workers=3, status=Job.Status.RUNNING)
        for number in (7, 2, 11, 0, 5, 9, 1, 10, 3, 8, 6, 4):
            Record.objects.create(
                job=job,
                number=number,
                title=f"Item {number}",
                price=number,
                fetched_by=f"djthreads_map_{number % 3}",
            )
        text = text_of(self.client.get(f"/jobs/{job.pk}/").content)
        shown = [int(n) for n in re.findall(r"Item (\d+)", text)]
        assert shown == list(range(10))
        assert "The first 10 of 12 stored, by item number; fetched by 3 threads." in text

    def test_a_running_job_shows_its_elapsed_time(self) -> None:
        started = timezone.now() - datetime.timedelta(seconds=42)
        job = Job.objects.create(total=5, workers=2, status=Job.Status.RUNNING, started=started)
        text = text_of(self.client.get(f"/jobs/{job.pk}/").content)
        # Rendering may take a moment on a busy machine; never less than 42 s.
        assert re.search(r"Running for 4[2-9]\.\d s", text), text

    def test_a_pending_job_says_it_waits(self) -> None:
        job = Job.objects.create(total=5, workers=2)
        self.assertContains(self.client.get(f"/jobs/{job.pk}/"), "Waiting for a thread")

    def test_a_finished_job_shows_its_time_and_rate(self) -> None:
        job = Job.objects.create(
            total=200, workers=8, status=Job.Status.DONE, done=200, seconds=1.6
        )
        text = text_of(self.client.get(f"/jobs/{job.pk}/").content)
        assert "Finished in 1.60 s: 125 records a second." in text

    def test_the_failure_message_is_escaped_and_its_detail_folded_away(self) -> None:
        job = Job.objects.create(
            total=3,
            status=Job.Status.FAILED,
            seconds=0.25,
            error="The source said <b>no</b>.",
            error_detail="Traceback (most recent call last):\nValueError: <b>",
        )
        page = self.client.get(f"/jobs/{job.pk}/")
        self.assertContains(page, "The source said &lt;b&gt;no&lt;/b&gt;.")
        self.assertContains(page, "<details>")
        self.assertContains(page, "ValueError: &lt;b&gt;")
        self.assertContains(page, "Stopped after 0.25 s.")

    def test_the_start_page_lists_only_the_web_jobs(self) -> None:
        web = Job.objects.create(total=3, origin=Job.Origin.WEB)
        demo = Job.objects.create(total=3, origin=Job.Origin.DEMO)
        command = Job.objects.create(total=3, origin=Job.Origin.COMMAND)
        page = self.client.get("/")
        self.assertContains(page, f'href="/jobs/{web.pk}/"')
        self.assertNotContains(page, f'href="/jobs/{demo.pk}/"')
        self.assertNotContains(page, f'href="/jobs/{command.pk}/"')

    def test_the_start_page_without_jobs(self) -> None:
        self.assertContains(self.client.get("/"), "No job yet")


@EXAMPLE
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("options", [{"workers": 3}, {"serial": True}])
def test_runjob_command(options: dict[str, Any]) -> None:
    out = io.StringIO()
    call_command("runjob", items=15, stdout=out, stderr=io.StringIO(), **options)
    job = Job.objects.get()
    assert (job.status, job.done, job.total) == (Job.Status.DONE, 15, 15)
    assert job.origin == Job.Origin.COMMAND
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
    assert job.error == (
        "The database already held a record with the same item number for this job, "
        "so the job stopped rather than store it twice."
    )
    assert "IntegrityError" in job.error_detail
    assert "one_record_per_item" in job.error_detail or "UNIQUE" in job.error_detail
    assert job.done == Record.objects.filter(job=job).count() >= 1
    assert job.seconds is not None


@EXAMPLE
@pytest.mark.django_db(transaction=True)
def test_an_error_answer_from_the_source_names_the_answer_and_the_item() -> None:
    job = Job.objects.create(total=1, workers=1)
    # The source answers 404 for anything but /items/<number>.
    with override_settings(HARVEST_SOURCE_URL=f"{source_url()}/nothing-here"):
        with pytest.raises(HTTPError):
            run_job(job.pk)
        job.refresh_from_db()
        assert job.error.startswith(
            f"The data source at {source_url()} answered “404 try /items/<number>” for item 0,"
        )
    assert "HTTPError" in job.error_detail


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
def test_the_demo_replaces_its_own_jobs_and_keeps_the_web_jobs() -> None:
    web = Job.objects.create(total=3, origin=Job.Origin.WEB)
    earlier = Job.objects.create(total=1, origin=Job.Origin.DEMO, status=Job.Status.DONE)
    Record.objects.create(job=earlier, number=0, title="old", price=1, fetched_by="test")
    out = io.StringIO()
    call_command("demo", items=4, workers=2, stdout=out, stderr=io.StringIO())
    demo_jobs = Job.objects.filter(origin=Job.Origin.DEMO)
    assert demo_jobs.count() == 2, out.getvalue()  # this run's pair only
    assert not Job.objects.filter(pk=earlier.pk).exists()
    assert Record.objects.filter(job__in=demo_jobs).count() == 8
    assert Job.objects.filter(pk=web.pk).exists()
    connection.close()


@EXAMPLE
@pytest.mark.django_db(transaction=True)
def test_fetch_record_is_a_plain_function() -> None:
    job = Job.objects.create(total=1)
    assert fetch_record(job.pk, 7) == 7
    record = Record.objects.get()
    assert (record.number, record.title) == (7, "Item 7")
