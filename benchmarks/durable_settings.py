"""Settings of benchmarks/durable_bench.py and of the db_worker processes it starts.

BENCH_TASKS (JSON) is the TASKS setting of the runner being measured. The
database is _common's djthreads_bench on PostgreSQL (psycopg2).
"""

from __future__ import annotations

import importlib.util
import json
import os

from _common import APP_NAME, DB_NAME, PG

SECRET_KEY = "djthreads-bench"
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
INSTALLED_APPS = ["djthreads", "django_tasks_db", "djthreads.durable"]
if importlib.util.find_spec("django_tasks_local_db") is not None:
    INSTALLED_APPS.append("django_tasks_local_db")
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": DB_NAME,
        **PG,
        "OPTIONS": {"application_name": APP_NAME},
    }
}
DJTHREADS = {"MAX_WORKERS": 8, "MAX_QUEUE": 100_000}
TASKS = json.loads(os.environ.get("BENCH_TASKS", "{}")) or {
    "default": {"BACKEND": "djthreads.durable.DurableBackend"}
}
