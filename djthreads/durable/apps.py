"""App config of djthreads.durable: its lease table, system checks and admin action."""

from __future__ import annotations

from django.apps import AppConfig
from django.core import checks


class DurableConfig(AppConfig):
    name = "djthreads.durable"
    label = "djthreads_durable"
    verbose_name = "djthreads durable tasks"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.core.signals import request_started

        from djthreads.durable import checks as durable_checks
        from djthreads.durable._workers import start_on_request

        checks.register(durable_checks.check_installed)
        checks.register(durable_checks.check_migrations, checks.Tags.database)
        # A web process starts claiming at its first request, so tasks enqueued
        # elsewhere run there too; management commands (migrate, shell) never
        # claim unless they enqueue or call start_workers().
        request_started.connect(start_on_request, dispatch_uid="djthreads.durable.start")
