"""Settings of the example project: SQLite by default, PostgreSQL with DATABASE_URL.

DATABASE_URL looks like ``postgres://user:password@127.0.0.1:5432/name``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = "example-only-not-secret"
DEBUG = True
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
INSTALLED_APPS = ["django.contrib.staticfiles", "djthreads", "example.harvest"]
MIDDLEWARE = [
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
]
ROOT_URLCONF = "example.project.urls"
WSGI_APPLICATION = "example.project.wsgi.application"
TEMPLATES = [
    {"BACKEND": "django.template.backends.django.DjangoTemplates", "APP_DIRS": True},
]
USE_TZ = True
# The page's stylesheet (harvest/static/); runserver serves it while DEBUG is on.
STATIC_URL = "static/"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"


def database(url: str | None) -> dict[str, Any]:
    """One DATABASES entry from a URL (no extra dependency: urllib is enough)."""
    if not url:
        return {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": os.environ.get("EXAMPLE_SQLITE", str(BASE_DIR / "example.sqlite3")),
            # Eight threads write at once: wait for the lock instead of failing.
            "OPTIONS": {"timeout": 20},
        }
    parts = urlsplit(url)
    if parts.scheme not in ("postgres", "postgresql"):
        raise ValueError(
            f"DATABASE_URL must start with postgres:// or postgresql://, got {parts.scheme!r}."
        )
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": unquote(parts.path.lstrip("/")),
        "USER": unquote(parts.username or ""),
        "PASSWORD": unquote(parts.password or ""),
        "HOST": parts.hostname or "",
        "PORT": str(parts.port or ""),
        "OPTIONS": {"application_name": "djthreads-example"},
    }


DATABASES = {"default": database(os.environ.get("DATABASE_URL"))}

# The job's HTTP source. Unset: the example serves one itself on loopback.
HARVEST_SOURCE_URL = os.environ.get("HARVEST_SOURCE_URL")
# Seconds the built-in source waits before answering each request.
HARVEST_LATENCY = float(os.environ.get("HARVEST_LATENCY", "0.05"))

# HARVEST_DURABLE=1: the form starts the job as a durable task, a row of
# django-tasks-db's table that this process's djthreads pool runs, so a queued
# job survives a restart (pip install "djthreads[durable]"; on Django 5.2 also
# "djthreads[tasks]"; then python manage.py migrate).
HARVEST_DURABLE = os.environ.get("HARVEST_DURABLE") == "1"
if HARVEST_DURABLE:
    INSTALLED_APPS += ["django_tasks_db", "djthreads.durable"]
    TASKS = {"default": {"BACKEND": "djthreads.durable.DurableBackend"}}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"djthreads": {"handlers": ["console"], "level": "WARNING"}},
}
