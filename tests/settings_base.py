"""Settings shared by every test database (the settings_* modules add DATABASES)."""

from __future__ import annotations

import os

RUN_NAME = os.environ.get("DJTHREADS_PG_NAME", "djthreads")
SECRET_KEY = "djthreads-tests"
USE_TZ = True
INSTALLED_APPS = ["django.contrib.contenttypes", "djthreads", "tests"]
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
LANGUAGE_CODE = "en"
LANGUAGES = [("en", "English"), ("fr", "French"), ("de", "German")]
USE_I18N = True
