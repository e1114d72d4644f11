"""Test settings on SQLite (chosen by the test command: DJANGO_SETTINGS_MODULE)."""

from __future__ import annotations

import os
import tempfile
from typing import Any

from tests.settings_base import *  # noqa: F403
from tests.settings_base import RUN_NAME

# A file, not ":memory:": Django never closes an in-memory SQLite connection
# (it would destroy the database), so closing could not be observed.
DATABASES: dict[str, dict[str, Any]] = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.path.join(tempfile.gettempdir(), f"{RUN_NAME}.sqlite3"),
        "OPTIONS": {"timeout": 20},
        "TEST": {"NAME": os.path.join(tempfile.gettempdir(), f"test_{RUN_NAME}.sqlite3")},
    },
}
# A second alias on the same database, for run_async(using=...).
DATABASES["other"] = {**DATABASES["default"], "TEST": {"MIRROR": "default"}}
