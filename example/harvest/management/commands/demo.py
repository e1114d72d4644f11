"""``manage.py demo``: the job serially, then in threads, and a table of both."""

from __future__ import annotations

import gc
import os
import threading
import time
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser
from django.db import connection, connections

from example.harvest.jobs import run_job
from example.harvest.models import Job, Record
from example.harvest.source import source_url


def open_connections() -> int:
    """Count the database connections this process holds, measured outside Django.

    PostgreSQL: the server's sessions with this project's application_name
    (other than the counting one), once closed ones have left; with Django's
    psycopg 3 pool, the slots checked out of it (its idle sessions stay open
    by design). SQLite: this process's open file descriptors on the database
    file (Linux /proc). Call it with the calling thread's own connection closed.
    """
    if connection.settings_dict["OPTIONS"].get("pool"):
        stats = connection.pool.get_stats()  # type: ignore[attr-defined]
        return int(stats["pool_size"] - stats["pool_available"])
    if connection.vendor == "postgresql":
        # A backend whose client closed its connection leaves pg_stat_activity
        # a moment later, and nothing announces it: ask again until none is
        # left, for 5 s at most (a leaked connection stays and is counted).
        deadline = time.monotonic() + 5.0
        with connection.cursor() as cursor:
            while True:
                cursor.execute(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE application_name = %s AND pid <> pg_backend_pid()",
                    [connection.settings_dict["OPTIONS"]["application_name"]],
                )
                row = cursor.fetchone()
                count = int(row[0]) if row else -1
                if count == 0 or time.monotonic() > deadline:
                    break
                threading.Event().wait(0.02)
        connection.close()
        return count
    database = os.path.realpath(str(connection.settings_dict["NAME"]))
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.path.realpath(f"/proc/self/fd/{fd}") == database:
                count += 1
        except OSError:
            continue  # closed while we looked
    return count


class Command(BaseCommand):
    help = "Seed two jobs, run one serially and one in threads, print the comparison."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--items", type=int, default=120, help="records per job")
        parser.add_argument("--workers", type=int, default=8, help="threads (default 8)")

    def handle(self, *args: Any, items: int, workers: int, **options: Any) -> None:
        source = source_url()
        latency = getattr(settings, "HARVEST_LATENCY", 0.05)
        self.stdout.write(
            f"source: {source}, {latency * 1000:.0f} ms per request; database: {connection.vendor}"
        )
        # The last run's demo jobs go; the web page's jobs are never touched
        # (and it lists only its own).
        Job.objects.filter(origin=Job.Origin.DEMO).delete()
        serial = Job.objects.create(origin=Job.Origin.DEMO, total=items, workers=1)
        parallel = Job.objects.create(origin=Job.Origin.DEMO, total=items, workers=workers)
        connections.close_all()
        # With the collector off, a connection is closed because its thread
        # closed it, not because garbage collection happened to free it.
        gc.disable()
        try:
            serial = run_job(serial.pk, workers=1)
            parallel = run_job(parallel.pk, workers=workers, progress=True)
            connections.close_all()  # this thread's own; the workers closed theirs
            left_open = open_connections()
        finally:
            gc.enable()
        records = Record.objects.filter(job__in=[serial, parallel]).count()
        assert serial.seconds is not None
        assert parallel.seconds is not None
        speedup = serial.seconds / parallel.seconds
        rows = [
            ("", "records", "wall time", "speedup"),
            ("serial (1 thread)", str(serial.done), f"{serial.seconds:.2f} s", "1.0x"),
            (
                f"djthreads.map ({workers} threads)",
                str(parallel.done),
                f"{parallel.seconds:.2f} s",
                f"{speedup:.1f}x",
            ),
        ]
        widths = [max(len(row[i]) for row in rows) for i in range(4)]
        self.stdout.write("")
        for row in rows:
            self.stdout.write(
                "  ".join(
                    cell.ljust(width) if i == 0 else cell.rjust(width)
                    for i, (cell, width) in enumerate(zip(row, widths, strict=True))
                )
            )
        self.stdout.write(f"database connections left open: {left_open}")
        self.stdout.write(f"records stored: {records}")
        if left_open or records != 2 * items or serial.done != items or parallel.done != items:
            raise SystemExit("demo failed: see the table above")
