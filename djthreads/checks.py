"""System checks for the DJTHREADS setting (djthreads.E001 to E011, W001)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.apps import AppConfig
from django.conf import settings
from django.core.checks import CheckMessage, Error
from django.core.checks import Warning as CheckWarning
from django.db import connections

from djthreads.conf import validate


def check_settings(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[CheckMessage]:
    """Report every invalid value or unknown key in ``settings.DJTHREADS``."""
    raw = getattr(settings, "DJTHREADS", {})
    errors = validate(raw)
    messages: list[CheckMessage] = [Error(message, id=check_id) for check_id, message in errors]
    if not errors and raw.get("REUSE_CONNECTIONS"):
        messages.extend(_check_reuse())
    return messages


def _check_reuse() -> list[CheckMessage]:
    """Warn when REUSE_CONNECTIONS cannot keep a connection (CONN_MAX_AGE = 0)."""
    warnings: list[CheckMessage] = []
    for alias, conf in connections.settings.items():
        # Django's pool hands the connection back on close; it needs CONN_MAX_AGE=0.
        if conf.get("CONN_MAX_AGE", 0) == 0 and "pool" not in conf.get("OPTIONS", {}):
            warnings.append(
                CheckWarning(
                    f"DJTHREADS['REUSE_CONNECTIONS'] is on, but DATABASES[{alias!r}]"
                    "['CONN_MAX_AGE'] is 0, so pool workers still close that connection "
                    "after every task. Set CONN_MAX_AGE to a number of seconds (or None "
                    "for no limit), or remove REUSE_CONNECTIONS.",
                    id="djthreads.W001",
                )
            )
    return warnings
