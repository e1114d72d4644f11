"""The one reader of the ``DJTHREADS`` setting.

Settings are read at call time and cached until Django sends ``setting_changed``
for ``DJTHREADS`` (so ``override_settings`` works). Validation lives here once:
the system check (``djthreads.checks``) and :func:`get_settings` report the same
messages.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Mapping
from typing import Any, Literal

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.dispatch import receiver

DEFAULTS: Mapping[str, Any] = {
    "MAX_WORKERS": 8,
    "MAX_QUEUE": 1000,
    "ON_FULL": "block",
    "ON_COMMIT": True,
    "SHUTDOWN_TIMEOUT": 30.0,
    "THREAD_NAME_PREFIX": "djthreads",
    "REUSE_CONNECTIONS": False,
    "EAGER": False,
    "LOG_ARGUMENTS": True,
}

ON_FULL_CHOICES = ("block", "raise")


@dataclasses.dataclass(frozen=True)
class Settings:
    """Validated ``DJTHREADS`` values; see the README for each key."""

    MAX_WORKERS: int
    MAX_QUEUE: int
    ON_FULL: Literal["block", "raise"]
    ON_COMMIT: bool
    SHUTDOWN_TIMEOUT: float
    THREAD_NAME_PREFIX: str
    REUSE_CONNECTIONS: bool
    EAGER: bool
    LOG_ARGUMENTS: bool


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _boolean(values: Mapping[str, Any], key: str, check_id: str) -> list[tuple[str, str]]:
    if isinstance(values[key], bool):
        return []
    return [(check_id, f"DJTHREADS[{key!r}] must be True or False, got {values[key]!r}.")]


def validate(raw: object) -> list[tuple[str, str]]:
    """Return ``(check id, message)`` for every problem in a ``DJTHREADS`` value."""
    if not isinstance(raw, Mapping):
        return [("djthreads.E001", f"DJTHREADS must be a dict, got {raw!r}.")]
    errors = []
    for key in raw:
        if key not in DEFAULTS:
            known = ", ".join(DEFAULTS)
            errors.append(
                ("djthreads.E002", f"DJTHREADS has an unknown key {key!r}; known keys: {known}.")
            )
    values = {**DEFAULTS, **raw}
    if not _is_int(values["MAX_WORKERS"]) or values["MAX_WORKERS"] < 1:
        errors.append(
            (
                "djthreads.E003",
                "DJTHREADS['MAX_WORKERS'] must be a positive integer, "
                f"got {values['MAX_WORKERS']!r}.",
            )
        )
    if not _is_int(values["MAX_QUEUE"]) or values["MAX_QUEUE"] < 0:
        errors.append(
            (
                "djthreads.E004",
                f"DJTHREADS['MAX_QUEUE'] must be an integer >= 0, got {values['MAX_QUEUE']!r}.",
            )
        )
    if values["ON_FULL"] not in ON_FULL_CHOICES:
        errors.append(
            (
                "djthreads.E005",
                f"DJTHREADS['ON_FULL'] must be 'block' or 'raise', got {values['ON_FULL']!r}.",
            )
        )
    errors += _boolean(values, "ON_COMMIT", "djthreads.E006")
    timeout = values["SHUTDOWN_TIMEOUT"]
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout >= 0:
        errors.append(
            (
                "djthreads.E007",
                "DJTHREADS['SHUTDOWN_TIMEOUT'] must be a number of seconds >= 0, "
                f"got {timeout!r}.",
            )
        )
    prefix = values["THREAD_NAME_PREFIX"]
    if not isinstance(prefix, str) or not prefix:
        errors.append(
            (
                "djthreads.E008",
                f"DJTHREADS['THREAD_NAME_PREFIX'] must be a non-empty string, got {prefix!r}.",
            )
        )
    errors += _boolean(values, "REUSE_CONNECTIONS", "djthreads.E010")
    errors += _boolean(values, "EAGER", "djthreads.E009")
    errors += _boolean(values, "LOG_ARGUMENTS", "djthreads.E011")
    return errors


_cache: Settings | None = None
_cache_lock = threading.Lock()  # guards _cache


def get_settings() -> Settings:
    """Return the validated ``DJTHREADS`` setting (defaults filled in).

    Raises ImproperlyConfigured with the same messages as ``manage.py check``.
    """
    global _cache
    cached = _cache
    if cached is not None:
        return cached
    raw = getattr(settings, "DJTHREADS", {})
    errors = validate(raw)
    if errors:
        raise ImproperlyConfigured(" ".join(message for _, message in errors))
    with _cache_lock:
        _cache = Settings(**{**DEFAULTS, **raw})
        return _cache


@receiver(setting_changed)
def _reset_cache(*, setting: str, **kwargs: Any) -> None:
    global _cache
    if setting == "DJTHREADS":
        with _cache_lock:
            _cache = None
