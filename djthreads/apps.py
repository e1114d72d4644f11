"""App config: adding "djthreads" to INSTALLED_APPS adds its system checks."""

from __future__ import annotations

from django.apps import AppConfig
from django.core import checks


class DjThreadsConfig(AppConfig):
    name = "djthreads"
    verbose_name = "djthreads"

    def ready(self) -> None:
        from djthreads.checks import check_settings

        checks.register(check_settings)
