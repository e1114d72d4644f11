"""System checks for the DJTHREADS setting (ids djthreads.E001 to E008)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.apps import AppConfig
from django.conf import settings
from django.core.checks import CheckMessage, Error

from djthreads.conf import validate


def check_settings(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[CheckMessage]:
    """Report every invalid value or unknown key in ``settings.DJTHREADS``."""
    raw = getattr(settings, "DJTHREADS", {})
    return [Error(message, id=check_id) for check_id, message in validate(raw)]
