"""Settings of the child processes that tests/test_durable_processes.py starts.

The session's test database, as for the ``db_worker`` child
(tests/settings_worker.py), and DurableBackend as the default Tasks backend.
DJTHREADS_CHILD carries, as JSON, the child's ``DJTHREADS`` ("djthreads"), the
backend's OPTIONS ("options"), CONN_MAX_AGE ("conn_max_age", default 0) and
whether to install Django's admin ("admin").
"""

from __future__ import annotations

import json
import os
from typing import Any

from tests.settings_worker import *  # noqa: F403

_child: dict[str, Any] = json.loads(os.environ.get("DJTHREADS_CHILD", "{}"))
TASKS = {
    "default": {
        "BACKEND": "djthreads.durable.DurableBackend",
        "OPTIONS": _child.get("options", {}),
    }
}
DJTHREADS: dict[str, Any] = _child.get("djthreads", {})
if _child.get("admin"):
    globals()["INSTALLED_APPS"] = [
        *globals()["INSTALLED_APPS"],
        "django.contrib.auth",
        "django.contrib.admin",
        "django.contrib.messages",
    ]
DATABASES["default"]["CONN_MAX_AGE"] = _child.get("conn_max_age", 0)  # noqa: F405
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":  # noqa: F405
    # The tests kill processes, not the server: commits need not wait for
    # the disk, which keeps thousands of tasks fast on a slow one.
    DATABASES["default"]["OPTIONS"]["options"] = "-c synchronous_commit=off"  # noqa: F405
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"stderr": {"class": "logging.StreamHandler"}},
    "loggers": {"djthreads": {"handlers": ["stderr"], "level": "WARNING"}},
}
