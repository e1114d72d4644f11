"""Smoke test of an installed djthreads: run it from outside the repository.

Checks that djthreads is imported from the virtual environment (not a source
tree), runs a ``run_async`` task on a SQLite file and proves its pool thread
closed its connection (the process's open descriptors on the database file),
holds a task until the transaction commits, and runs ``manage.py check`` with
a good and a bad DJTHREADS value.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "smoke_settings")

import django

django.setup()

from django.core.management import call_command  # noqa: E402
from django.db import connection, connections, transaction  # noqa: E402
from smokeapp.models import Note  # noqa: E402
from smokeapp.tasks import add_note  # noqa: E402

import djthreads  # noqa: E402

HERE = Path(__file__).resolve().parent


def open_descriptors(path: Path) -> int:
    """Count this process's open file descriptors on ``path`` (Linux /proc)."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            if Path(f"/proc/self/fd/{fd}").resolve() == path:
                count += 1
        except OSError:
            continue  # closed while we looked
    return count


def check_installed() -> None:
    where = Path(djthreads.__file__).resolve()
    prefix = Path(sys.prefix).resolve()
    if prefix not in where.parents:
        raise SystemExit(f"djthreads was imported from {where}, not from the venv {prefix}.")
    print(f"djthreads from {where.parent}, Django {django.get_version()}")


def check_run_async() -> None:
    database = Path(str(connection.settings_dict["NAME"])).resolve()
    call_command("migrate", run_syncdb=True, verbosity=0)
    connections.close_all()

    name = add_note("from a pool thread").result(timeout=30)
    if name == threading.current_thread().name or not name.startswith("djthreads"):
        raise SystemExit(f"the task ran in thread {name!r}, not in a djthreads pool thread.")
    left_open = open_descriptors(database)
    if left_open:
        raise SystemExit(f"the pool thread left {left_open} connection(s) open on {database}.")

    with transaction.atomic():
        held = add_note("after the commit")
        if held.done():
            raise SystemExit("a task submitted inside atomic() ran before the commit.")
    held.result(timeout=30)
    texts = sorted(Note.objects.values_list("text", flat=True))
    if texts != ["after the commit", "from a pool thread"]:
        raise SystemExit(f"expected both notes to be stored, found {texts!r}.")
    connections.close_all()
    djthreads.wait_for_tasks(timeout=30)
    print("run_async: task ran in a pool thread, stored its row, closed its connection")


def check_system_checks() -> None:
    manage = [sys.executable, str(HERE / "manage.py"), "check"]
    good = subprocess.run(manage, capture_output=True, text=True, timeout=60, check=False)
    if good.returncode != 0 or "no issues" not in good.stdout:
        raise SystemExit(f"manage.py check failed on good settings:\n{good.stdout}{good.stderr}")
    bad = subprocess.run(
        manage,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "SMOKE_MAX_WORKERS": "0"},
    )
    expected = "djthreads.E003"
    if bad.returncode == 0 or expected not in bad.stderr:
        raise SystemExit(
            f"manage.py check with DJTHREADS['MAX_WORKERS'] = 0 should fail with {expected}; "
            f"it exited {bad.returncode}:\n{bad.stdout}{bad.stderr}"
        )
    print(f"manage.py check: passes on good settings, {expected} on MAX_WORKERS = 0")


if __name__ == "__main__":
    check_installed()
    check_run_async()
    check_system_checks()
