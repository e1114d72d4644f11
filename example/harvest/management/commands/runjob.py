"""``manage.py runjob``: run the job from the shell, in threads or serially."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from django.template.defaultfilters import pluralize

from example.harvest.jobs import run_job
from example.harvest.models import Job


class Command(BaseCommand):
    help = "Fetch --items records from the source in --workers threads (or --serial)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--items", type=int, default=200, help="records to fetch")
        parser.add_argument("--workers", type=int, default=8, help="threads (default 8)")
        parser.add_argument(
            "--serial", action="store_true", help="one item after another, no threads"
        )

    def handle(self, *args: Any, items: int, workers: int, serial: bool, **options: Any) -> None:
        workers = 1 if serial else workers
        job = Job.objects.create(origin=Job.Origin.COMMAND, total=items, workers=workers)
        # Runs in this thread; djthreads.map draws the progress bar on stderr.
        job = run_job(job.pk, progress=True)
        self.stdout.write(
            f"job {job.pk}: {job.done} records in {job.seconds:.2f} s with {workers} "
            f"thread{pluralize(workers)}"
        )
