from __future__ import annotations

from typing import Any

from django.apps import AppConfig
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.signals import connection_created


def _tune_sqlite(sender: Any, connection: BaseDatabaseWrapper, **kwargs: Any) -> None:
    # Runs in the thread that opened the connection. SQLite lets one writer
    # in at a time; in WAL mode with synchronous=NORMAL a commit does not wait
    # for the disk, so eight threads' writes queue for milliseconds, not for
    # one fsync each.
    if connection.vendor == "sqlite":
        with connection.cursor() as cursor:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")


class HarvestConfig(AppConfig):
    name = "example.harvest"
    label = "harvest"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        connection_created.connect(_tune_sqlite, dispatch_uid="harvest-tune-sqlite")
