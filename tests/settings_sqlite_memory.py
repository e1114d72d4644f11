"""Test settings on SQLite's default in-memory test database (no TEST NAME).

Only for the subprocess runs of tests/test_test.py that check how
djthreads.test refuses a database threads cannot share.
"""

from __future__ import annotations

from typing import Any

from tests.settings_base import *  # noqa: F403

DATABASES: dict[str, dict[str, Any]] = {
    "default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"},
}
