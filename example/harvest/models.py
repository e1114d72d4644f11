"""A long job and the records it fetched."""

from __future__ import annotations

from typing import ClassVar

from django.db import models


class Job(models.Model):
    """Fetch ``total`` records from the source; ``done`` is set when it ends."""

    class Status(models.TextChoices):
        PENDING = "pending"
        RUNNING = "running"
        DONE = "done"
        FAILED = "failed"

    created = models.DateTimeField(auto_now_add=True)
    total = models.PositiveIntegerField()
    workers = models.PositiveIntegerField(default=8)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    done = models.PositiveIntegerField(default=0)
    seconds = models.FloatField(null=True, blank=True)
    error = models.TextField(blank=True)

    def __str__(self) -> str:
        return f"job {self.pk}: {self.done}/{self.total} {self.status}"

    @property
    def stored(self) -> int:
        """Records stored so far (the job's progress while it runs)."""
        return self.done if self.finished else self.records.count()

    @property
    def finished(self) -> bool:
        return self.status in (self.Status.DONE, self.Status.FAILED)


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
