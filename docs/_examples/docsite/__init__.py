"""The documentation's example site, set up once per process for the doctests.

``docs/conf.py`` runs :func:`setup` before every doctest group (Sphinx's
``doctest_global_setup``): the first call points ``DJTHREADS_DOCS_DB`` at a
fresh SQLite file in a temporary directory, sets Django up with
``docsite.settings`` and creates the tables; later calls do nothing. The helpers
below run what a page shows but cannot run inline (a test file, a wait).
"""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

EXAMPLES = Path(__file__).resolve().parent.parent

_done = False


def setup() -> None:
    """Configure Django for the doctests and create the tables (once)."""
    global _done
    if _done:
        return
    directory = tempfile.mkdtemp(prefix="djthreads-docs-")
    # Registered before Django starts its pool: atexit runs it last.
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    os.environ["DJTHREADS_DOCS_DB"] = os.path.join(directory, "docs.sqlite3")
    os.environ["DJANGO_SETTINGS_MODULE"] = "docsite.settings"
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", run_syncdb=True, verbosity=0)
    _done = True


def run(*argv: str) -> str:
    """Run a command in ``docs/_examples`` with this settings module; return its output.

    Raises AssertionError with the output when the command fails.
    """
    env = {**os.environ, "PYTHONPATH": str(EXAMPLES), "DJANGO_SETTINGS_MODULE": "docsite.settings"}
    done = subprocess.run(
        [sys.executable, *argv],
        cwd=EXAMPLES,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"{' '.join(argv)} exited {done.returncode}:\n{output}"
    return output


def wait_until_finished(result: Any, timeout: float = 10.0) -> None:
    """Refresh a Django Tasks result until it finished (the Tasks how-to)."""
    deadline = time.monotonic() + timeout
    while True:
        result.refresh()
        if result.is_finished:
            return
        assert time.monotonic() < deadline, f"task {result.id} still {result.status}"
        threading.Event().wait(0.01)


def fresh() -> None:
    """Start a page with no orders and an empty outbox (its ``testsetup``)."""
    from django.core import mail
    from shop.models import Order

    Order.objects.all().delete()
    mail.outbox = []
