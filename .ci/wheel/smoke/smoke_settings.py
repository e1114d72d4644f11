"""Settings of the smoke project: djthreads on a SQLite file next to this module.

SMOKE_MAX_WORKERS sets DJTHREADS['MAX_WORKERS'], so a run of ``manage.py check``
can give it a bad value and see djthreads' system check fire.
"""

from __future__ import annotations

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent

SECRET_KEY = "smoke-test-only"
USE_TZ = True
INSTALLED_APPS = ["djthreads", "smokeapp"]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": str(BASE_DIR / "smoke.sqlite3"),
        # A file, not :memory:, for the test database too: threads share it.
        "TEST": {"NAME": str(BASE_DIR / "test_smoke.sqlite3")},
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
DJTHREADS = {"MAX_WORKERS": int(os.environ.get("SMOKE_MAX_WORKERS", "2"))}
