from __future__ import annotations

from django.db import models


class Item(models.Model):
    """A row that tasks write, so tests can see what ran."""

    name = models.CharField(max_length=100)

    def __str__(self) -> str:
        return self.name
