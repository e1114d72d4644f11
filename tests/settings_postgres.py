"""Test settings on PostgreSQL 127.0.0.1:5432 (psycopg2, or psycopg 3 when installed).

Each matrix run sets DJTHREADS_PG_NAME so runs never share a test database;
connections carry an application_name the leak tests count by.
"""

from __future__ import annotations

import os
from typing import Any

from tests.settings_base import *  # noqa: F403
from tests.settings_base import RUN_NAME


def postgres(**options: Any) -> dict[str, dict[str, Any]]:
    return {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": RUN_NAME,
            "USER": os.environ.get("PGUSER", "postgres"),
            "HOST": os.environ.get("PGHOST", "127.0.0.1"),
            "PORT": os.environ.get("PGPORT", "5432"),
            "OPTIONS": {"application_name": f"djthreads-tests-{RUN_NAME}", **options},
            "TEST": {"NAME": f"test_{RUN_NAME}"},
        },
        # A second alias on the same database, for run_async(using=...); no pool.
        "other": {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": RUN_NAME,
            "USER": os.environ.get("PGUSER", "postgres"),
            "HOST": os.environ.get("PGHOST", "127.0.0.1"),
            "PORT": os.environ.get("PGPORT", "5432"),
            "OPTIONS": {"application_name": f"djthreads-tests-{RUN_NAME}-other"},
            "TEST": {"MIRROR": "default"},
        },
    }


DATABASES = postgres()
