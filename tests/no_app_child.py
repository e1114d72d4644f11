"""Child process for test_apps: djthreads without "djthreads" in INSTALLED_APPS."""

from __future__ import annotations

import django
from django.conf import settings
from django.core.checks import run_checks

settings.configure(
    INSTALLED_APPS=[],
    DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
    DJTHREADS={"ON_FULL": "sideways"},
)
django.setup()

import djthreads  # noqa: E402

# Without the app the check is not registered...
print("checks:", sorted(e.id or "" for e in run_checks()))
# ...but building the pool still refuses the bad value, with the same message.
try:
    djthreads.get_executor()
except Exception as exc:
    print("error:", type(exc).__name__, exc)
settings.DJTHREADS = {}
print("result:", djthreads.submit(sum, [1, 2, 3]).result(10))
