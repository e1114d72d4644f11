"""A tiny Django WSGI app for test_gunicorn: views that queue ``@run_async`` tasks.

Loaded by ``gunicorn --preload tests.gunicorn_app:application`` in the master,
before the workers fork; each worker then builds its own djthreads pool on its
first request. The database and timeouts come from DJTHREADS_GUNICORN_*
variables set by the test.
"""

from __future__ import annotations

import logging
import os
import sys
import threading

import django
from django.conf import settings

_env = os.environ
settings.configure(
    DEBUG=False,
    SECRET_KEY="djthreads-gunicorn-test",
    ROOT_URLCONF=__name__,
    ALLOWED_HOSTS=["127.0.0.1", "localhost"],
    MIDDLEWARE=[],
    INSTALLED_APPS=["django.contrib.contenttypes", "djthreads", "tests"],
    USE_TZ=True,
    DEFAULT_AUTO_FIELD="django.db.models.BigAutoField",
    DATABASES={
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": _env["DJTHREADS_GUNICORN_DB"],
            "USER": _env.get("PGUSER", "postgres"),
            "HOST": _env.get("PGHOST", "127.0.0.1"),
            "PORT": _env.get("PGPORT", "5432"),
            "OPTIONS": {
                "application_name": _env["DJTHREADS_GUNICORN_APP"],
                **(
                    {"pool": {"min_size": 1, "max_size": 10, "timeout": 20}}
                    if _env.get("DJTHREADS_GUNICORN_POOL")
                    else {}
                ),
            },
        }
    },
    DJTHREADS={
        "MAX_WORKERS": 8,
        "SHUTDOWN_TIMEOUT": float(_env["DJTHREADS_GUNICORN_SHUTDOWN_TIMEOUT"]),
    },
)
django.setup()
logging.basicConfig(
    level=logging.WARNING,
    stream=sys.stderr,
    format="%(levelname)s:%(name)s:%(process)d:%(message)s",
)

from django.core.wsgi import get_wsgi_application  # noqa: E402
from django.db import connection  # noqa: E402
from django.http import HttpRequest, HttpResponse  # noqa: E402
from django.urls import path  # noqa: E402

from djthreads import run_async  # noqa: E402
from tests.models import Item  # noqa: E402

_never = threading.Event()


@run_async
def record(key: str) -> None:
    """Runs in a pool worker of one gunicorn worker process; writes one row."""
    Item.objects.create(name=key)


@run_async
def stuck_task(key: str) -> None:
    """Writes its row, then holds its connection until the process exits."""
    Item.objects.create(name=key)
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    _never.wait()


def record_view(request: HttpRequest, key: str) -> HttpResponse:
    record(key)
    return HttpResponse(str(os.getpid()))


def stuck_view(request: HttpRequest, key: str) -> HttpResponse:
    stuck_task(key)
    return HttpResponse(str(os.getpid()))


urlpatterns = [
    path("record/<str:key>", record_view),
    path("stuck/<str:key>", stuck_view),
]

application = get_wsgi_application()
