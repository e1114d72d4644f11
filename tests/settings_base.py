"""Settings shared by every test database (the settings_* modules add DATABASES)."""

from __future__ import annotations

import importlib.util
import os

RUN_NAME = os.environ.get("DJTHREADS_PG_NAME", "djthreads")
SECRET_KEY = "djthreads-tests"
USE_TZ = True
INSTALLED_APPS = ["django.contrib.contenttypes", "djthreads", "tests"]
# The example project's app, for tests/test_example.py.
INSTALLED_APPS.append("example.harvest")
# django-tasks-db's table, for tests/test_tasks_db.py (.ci/venv.sh installs it).
if importlib.util.find_spec("django_tasks_db") is not None:
    INSTALLED_APPS.append("django_tasks_db")
    # DurableBackend's lease table, for tests/test_durable.py.
    INSTALLED_APPS.append("djthreads.durable")
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
LANGUAGE_CODE = "en"
LANGUAGES = [("en", "English"), ("fr", "French"), ("de", "German")]
USE_I18N = True
