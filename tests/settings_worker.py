"""Settings for the django-tasks-db ``db_worker`` process that tests/test_tasks_db.py starts.

The worker must use the running session's test database, so the test names
the session's settings module (DJTHREADS_WORKER_SETTINGS) and its test
database (DJTHREADS_WORKER_DB); everything else is copied from that module.
"""

from __future__ import annotations

import os
from importlib import import_module
from typing import Any

_session = import_module(os.environ["DJTHREADS_WORKER_SETTINGS"])
globals().update({name: value for name, value in vars(_session).items() if name.isupper()})

_default: dict[str, Any] = dict(_session.DATABASES["default"])
_default["NAME"] = os.environ["DJTHREADS_WORKER_DB"]
if _default["ENGINE"] == "django.db.backends.postgresql":
    _default["OPTIONS"] = {
        **_default.get("OPTIONS", {}),
        # Not counted by the session's leak tests, which count their own name.
        "application_name": f"djthreads-worker-{os.getpid()}",
    }
DATABASES = {"default": _default}
TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend"}}
HARVEST_LATENCY = 0.0  # the example job's source answers at once
