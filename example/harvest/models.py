"""A long job and the records it fetched."""

from __future__ import annotations

from typing import ClassVar

from django.db import models
from django.utils import timezone


class Job(models.Model):
    """Fetch ``total`` records from the source; ``done`` is set when it ends."""

    class Status(models.TextChoices):
        PENDING = "pending"
        RUNNING = "running"
        DONE = "done"
        FAILED = "failed"

    class Origin(models.TextChoices):
        WEB = "web", "the web page"
        DEMO = "demo", "make demo"
        COMMAND = "command", "manage.py runjob"

    created = models.DateTimeField(auto_now_add=True)
    # The web page lists only its own jobs, so make demo's never crowd it.
    origin = models.CharField(max_length=10, choices=Origin.choices, default=Origin.WEB)
    total = models.PositiveIntegerField()
    workers = models.PositiveIntegerField(default=8)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    started = models.DateTimeField(null=True, blank=True)
    done = models.PositiveIntegerField(default=0)
    seconds = models.FloatField(null=True, blank=True)
    # A sentence for the person who started the job, and the traceback for
    # whoever has to fix it (shown folded away).
    error = models.TextField(blank=True)
    error_detail = models.TextField(blank=True)

    def __str__(self) -> str:
        return f"job {self.pk}: {self.done}/{self.total} {self.status}"

    @property
    def stored(self) -> int:
        """Records stored so far (the job's progress while it runs)."""
        return self.done if self.finished else self.records.count()

    @property
    def finished(self) -> bool:
        return self.status in (self.Status.DONE, self.Status.FAILED)

    @property
    def elapsed(self) -> float | None:
        """Seconds the job has run: final once it ended, growing while it runs."""
        if self.seconds is not None:
            return self.seconds
        if self.started is None:
            return None
        return (timezone.now() - self.started).total_seconds()

    @property
    def percent(self) -> int:
        """Progress in whole percent, for the progress bar's label."""
        return self.stored * 100 // self.total if self.total else 100

    @property
    def rate(self) -> float | None:
        """Records stored per second, once the job is done."""
        if self.status != self.Status.DONE or not self.seconds:
            return None
        return self.done / self.seconds


class Record(models.Model):
    """One item fetched from the source."""

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="records")
    number = models.PositiveIntegerField()
    title = models.CharField(max_length=100)
    price = models.DecimalField(max_digits=8, decimal_places=2)
    fetched_by = models.CharField(max_length=50)

    class Meta:
        constraints: ClassVar[list[models.BaseConstraint]] = [
            models.UniqueConstraint(fields=["job", "number"], name="one_record_per_item")
        ]

    def __str__(self) -> str:
        return f"{self.number}: {self.title}"
