"""One process running DurableBackend, for tests/test_durable_processes.py.

Usage: python tests/durable_child.py MODE [ARGS] with DJANGO_SETTINGS_MODULE
tests.settings_durable (the session's test database). It prints JSON lines
on stdout; WARNINGs go to stderr.

hold N     enqueue N record_unless_held tasks, which block in this process;
           print {"enqueued": ids}; then wait for stdin (the test SIGKILLs it)
drain      wait for "go" on stdin, run tasks until none is READY or RUNNING,
           print {"ran": how many this process ran}, exit
defer N MS enqueue N stamp tasks due in MS milliseconds, print their ids, exit
run        enqueue add(2, 3) and wait until it finished, print its id, exit
exit       enqueue record_after_stdin (running when the main thread ends, it
           waits for the line sent then), record and a deferred stamp
           behind it; print "main thread done"; exit, printing "claiming
           stopped" once the exit stops claiming
stuck      enqueue stuck(600), wait until it runs, print "main thread done", exit
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import django

django.setup()

from django.db import transaction  # noqa: E402
from django.utils import timezone  # noqa: E402
from django_tasks_db.models import DBTaskResult  # noqa: E402

import djthreads  # noqa: E402
import djthreads.durable  # noqa: E402
from tests import backend_tasks as bt  # noqa: E402
from tests import durable_tasks as dt  # noqa: E402


def emit(**fields: object) -> None:
    print(json.dumps(fields), flush=True)


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    """Poll the database for ``condition``; fail the child after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"durable_child: {what} not reached within {timeout} s")
        threading.Event().wait(0.02)


def running(*ids: str) -> bool:
    return DBTaskResult.objects.filter(pk__in=ids, status="RUNNING").count() == len(ids)


def hold(count: str) -> None:
    with transaction.atomic():
        held = [dt.record_unless_held.enqueue(f"k{n:04d}", os.getpid()) for n in range(int(count))]
    emit(enqueued=[r.id for r in held])
    sys.stdin.readline()


def drain() -> None:
    sys.stdin.readline()
    djthreads.durable.start_workers()
    pending = DBTaskResult.objects.filter(status__in=["READY", "RUNNING"])
    wait_until(lambda: not pending.exists(), "an empty queue")
    me = [djthreads.durable.worker_id()]
    claimers = DBTaskResult.objects.values_list("worker_ids", flat=True)
    emit(ran=sum(1 for ids in claimers if ids[-1:] == me))


def defer(count: str, milliseconds: str) -> None:
    due = timezone.now() + datetime.timedelta(milliseconds=int(milliseconds))
    deferred = [dt.stamp.using(run_after=due).enqueue(f"d{n}") for n in range(int(count))]
    emit(ids=[r.id for r in deferred], due=due.isoformat())


def run() -> None:
    added = bt.add.enqueue(2, 3)
    done = DBTaskResult.objects.filter(pk=added.id, status="SUCCESSFUL")
    wait_until(done.exists, "the result")
    emit(id=added.id)


class _SayWhenClaimingStops(logging.Handler):
    # The test sends "go" (the gate may finish) only once the exit has
    # stopped this process claiming: the main thread's end comes before the
    # exit hooks, and a gate finished in between would free the worker for
    # "behind".
    def emit(self, record: logging.LogRecord) -> None:
        if "claims no more" in record.getMessage():
            print("claiming stopped", flush=True)


def exit_with_a_task_running() -> None:
    durable_logger = logging.getLogger("djthreads.durable")
    durable_logger.addHandler(_SayWhenClaimingStops(logging.DEBUG))
    durable_logger.setLevel(logging.DEBUG)
    gate = dt.record_after_stdin.using(priority=10).enqueue("gate")
    wait_until(lambda: running(gate.id), "the gate task running")
    behind = dt.record.enqueue("behind")
    later = dt.stamp.using(run_after=timezone.now() + datetime.timedelta(hours=1))
    emit(gate=gate.id, behind=behind.id, later=later.enqueue("later").id)
    print("main thread done", flush=True)


def exit_with_a_task_stuck() -> None:
    stuck = dt.stuck.enqueue(600)
    wait_until(lambda: running(stuck.id), "the stuck task running")
    emit(id=stuck.id)
    print("main thread done", flush=True)


def admin_action(*ids: str) -> None:
    """Run the admin's "Re-enqueue" action on ``ids`` as the admin site would."""
    from django.contrib import admin
    from django.contrib.auth.models import AnonymousUser, User
    from django.contrib.messages.storage.cookie import CookieStorage
    from django.test import RequestFactory

    from djthreads.durable.admin import DurableTaskResultAdmin

    admin.autodiscover()
    model_admin = admin.site.get_model_admin(DBTaskResult)
    request = RequestFactory().post("/")
    request.user = AnonymousUser()  # no "add" permission on tasks
    refused = "requeue_failed_tasks" not in model_admin.get_actions(request)
    request.user = User(is_superuser=True, is_active=True)
    request._messages = CookieStorage(request)  # type: ignore[attr-defined]
    offered = "requeue_failed_tasks" in model_admin.get_actions(request)
    assert isinstance(model_admin, DurableTaskResultAdmin)
    model_admin.requeue_failed_tasks(request, DBTaskResult.objects.filter(pk__in=ids))
    notes = [str(message) for message in request._messages]  # type: ignore[attr-defined]
    djthreads.wait_for_tasks(timeout=30)
    emit(admin=type(model_admin).__name__, offered=offered, refused=refused, notes=notes)


MODES: dict[str, Callable[..., None]] = {
    "admin": admin_action,
    "hold": hold,
    "drain": drain,
    "defer": defer,
    "run": run,
    "exit": exit_with_a_task_running,
    "stuck": exit_with_a_task_stuck,
}

MODES[sys.argv[1]](*sys.argv[2:])
