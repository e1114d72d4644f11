"""Settings of the documentation's example site (a SQLite file database)."""

from __future__ import annotations

import os
import tempfile

SECRET_KEY = "docs-only-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["testserver", "localhost"]
ROOT_URLCONF = "docsite.urls"
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
MAILERS = {"default": {"BACKEND": "django.core.mail.backends.locmem.EmailBackend"}}

DB = os.environ.get(
    "DJTHREADS_DOCS_DB", os.path.join(tempfile.gettempdir(), "djthreads-docs.sqlite3")
)

# [installed-apps]
INSTALLED_APPS = [
    "djthreads",  # optional: adds the system checks of the DJTHREADS setting
    "shop",
]
# [/installed-apps]

# [databases]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": DB,
        # Several threads write at once: wait for SQLite's lock instead of failing.
        "OPTIONS": {"timeout": 20},
        # Tests with real threads need a file, not SQLite's in-memory database.
        "TEST": {"NAME": DB.replace(".sqlite3", "-test.sqlite3")},
    }
}
# [/databases]

# [djthreads]
DJTHREADS = {
    "MAX_WORKERS": 8,  # threads in the pool
    "MAX_QUEUE": 1000,  # tasks waiting for a thread
    "ON_FULL": "block",  # when both are taken, submitting waits for a slot
}
# [/djthreads]

# [tasks]
TASKS = {
    "default": {
        "BACKEND": "djthreads.backends.ThreadPoolBackend",
    }
}
# [/tasks]

# The pages show no log output: a failing task's traceback would go to stderr.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"null": {"class": "logging.NullHandler"}},
    "loggers": {
        "djthreads": {"handlers": ["null"], "propagate": False},
        "django.tasks": {"handlers": ["null"], "propagate": False},
    },
}
