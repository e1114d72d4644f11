"""DurableBackend across processes: SIGKILL, restarts, db_worker, results, exit.

Each child is a real Python process on the session's test database
(tests/durable_child.py with tests/settings_durable.py; ``db_worker`` with
tests/settings_worker.py). Side effects are counted in ``Item`` rows, one per
run of a task, so "exactly once" is a count, whichever process ran it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.db import connection, transaction
from django.db.models import Count
from django.test import override_settings

from djthreads._tasks_compat import TaskResultStatus, task_backends
from tests import backend_tasks as bt
from tests import durable_tasks as dt
from tests.backend_tasks import Finished
from tests.conftest import uses_pool
from tests.models import Item

pytest.importorskip("django_tasks_db")

from django_tasks_db.models import DBTaskResult

import djthreads
import djthreads.durable

pytestmark = [pytest.mark.timeout(120), pytest.mark.django_db(transaction=True)]

ROOT = Path(__file__).resolve().parents[1]
CHILD = Path(__file__).with_name("durable_child.py")
DEADLINE = 60.0  # seconds any one condition may take before the test fails
LOST = "djthreads.durable.WorkerLostError"


def durable(**options: Any) -> dict[str, Any]:
    return {"default": {"BACKEND": "djthreads.durable.DurableBackend", "OPTIONS": options}}


class Child:
    """A child process on this session's test database; killed at the end of the test."""

    def __init__(self, argv: list[str], settings_module: str, config: dict[str, Any]) -> None:
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": settings_module,
            "DJTHREADS_WORKER_SETTINGS": os.environ["DJANGO_SETTINGS_MODULE"],
            "DJTHREADS_WORKER_DB": str(connection.settings_dict["NAME"]),
            "DJTHREADS_CHILD": json.dumps(config),
            "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        }
        self.process = subprocess.Popen(
            argv,
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def line(self) -> dict[str, Any]:
        """The next JSON line the child prints (the test's timeout bounds the read)."""
        assert self.process.stdout is not None
        text = self.process.stdout.readline()
        assert text, f"the child exited early: {self.finish()[1]}"
        return dict(json.loads(text))

    def send(self, text: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(text + "\n")
        self.process.stdin.flush()

    def finish(self, timeout: float = DEADLINE) -> tuple[int, str]:
        """Wait for the exit; return (exit code, stderr)."""
        try:
            _, err = self.process.communicate(timeout=timeout)
        finally:
            self.kill()
        return self.process.returncode, err

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.communicate(timeout=10)


@pytest.fixture
def children() -> Iterator[Callable[..., Child]]:
    """Start children with ``start(mode, *args, **config)``; kill the leftovers."""
    started: list[Child] = []

    def start(mode: str, *args: object, **config: Any) -> Child:
        argv = [sys.executable, str(CHILD), mode, *map(str, args)]
        child = Child(argv, "tests.settings_durable", config)
        started.append(child)
        return child

    yield start
    for child in started:
        child.kill()


def db_worker() -> Child:
    """``manage.py db_worker`` on this session's database (stopped with SIGTERM)."""
    argv = [sys.executable, "-m", "django", "db_worker", "--interval", "0.02"]
    return Child(
        [*argv, "--no-startup-delay", "--worker-id", "db-worker"], "tests.settings_worker", {}
    )


def wait_until(condition: Callable[[], bool], what: str, timeout: float = DEADLINE) -> None:
    """Poll the database for ``condition`` until ``timeout`` seconds passed."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what} not reached within {timeout} s"
        threading.Event().wait(0.02)


def runs_per_key() -> dict[str, int]:
    return dict(Item.objects.values_list("name").annotate(n=Count("id")).order_by())


def statuses() -> dict[str, int]:
    return dict(DBTaskResult.objects.values_list("status").annotate(n=Count("id")).order_by())


def test_sigkill_with_500_queued_a_new_process_runs_each_once_and_fails_the_orphans(
    children: Callable[..., Child],
) -> None:
    held = children("hold", 500, djthreads={"MAX_WORKERS": 2}, options={"LEASE_TIMEOUT": 1.0})
    ids = held.line()["enqueued"]
    wait_until(lambda: statuses() == {"RUNNING": 2, "READY": 498}, "2 tasks running in the child")
    orphans = list(DBTaskResult.objects.filter(status="RUNNING").values_list("id", "args_kwargs"))
    os.kill(held.process.pid, signal.SIGKILL)
    held.finish()

    fresh = children("drain", options={"POLL_INTERVAL": 0.1, "LEASE_TIMEOUT": 1.0})
    fresh.send("go")
    assert fresh.line() == {"ran": 498}
    assert fresh.finish()[0] == 0

    orphan_keys = {kwargs["args"][0] for _, kwargs in orphans}
    counts = runs_per_key()
    assert len(ids) == 500
    assert set(counts) == {f"k{n:04d}" for n in range(500)} - orphan_keys
    assert set(counts.values()) == {1}
    # The orphans, RUNNING in the killed process: FAILED once its lease expired.
    for pk, _ in orphans:
        row = DBTaskResult.objects.get(pk=pk)
        assert row.status == "FAILED"
        assert row.exception_class_path == LOST
        assert row.worker_ids[-1] in row.traceback
    assert statuses() == {"SUCCESSFUL": 498, "FAILED": 2}


@pytest.mark.skipif(
    settings.DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql",
    reason="three processes claiming 2,000 rows at once on SQLite serialise on its one "
    "write lock; the PostgreSQL runs cover it",
)
def test_two_durable_processes_and_a_db_worker_drain_2000_tasks_each_once(
    children: Callable[..., Child],
) -> None:
    worker = db_worker()
    try:
        with override_settings(TASKS=durable(RUN_TASKS=False)):
            # The durable children wait for "go": only db_worker can run this.
            probe = dt.record.enqueue("probe")
            # One child closes its connections after each task (the default),
            # one keeps them (REUSE_CONNECTIONS).
            first = children("drain", options={"POLL_INTERVAL": 0.1})
            second = children(
                "drain",
                options={"POLL_INTERVAL": 0.1},
                djthreads={"REUSE_CONNECTIONS": True},
                conn_max_age=0 if uses_pool() else 60,  # Django's pool: 0 only
            )
            wait_until(
                lambda: DBTaskResult.objects.filter(pk=probe.id, status="SUCCESSFUL").exists(),
                "db_worker running the probe",
            )
            with transaction.atomic():
                results = [dt.record.enqueue(f"t{n:04d}") for n in range(2000)]
            first.send("go")
            second.send("go")
            ran = [first.line()["ran"], second.line()["ran"]]
            assert first.finish()[0] == 0
            assert second.finish()[0] == 0
    finally:
        worker.process.send_signal(signal.SIGTERM)
        worker.finish()
    counts = runs_per_key()
    assert len(counts) == 2001
    assert set(counts.values()) == {1}
    assert statuses() == {"SUCCESSFUL": 2001}
    by_db_worker = DBTaskResult.objects.filter(worker_ids=["db-worker"]).count() - 1
    assert by_db_worker + sum(ran) == len(results)
    # Everyone took part, claiming from the same rows at the same time.
    assert min(ran) > 0, ran
    assert by_db_worker > 0


def test_deferred_tasks_survive_a_restart_and_start_no_earlier_than_run_after(
    children: Callable[..., Child],
) -> None:
    child = children("defer", 5, 1500)
    enqueued = child.line()
    code, err = child.finish()
    assert code == 0, err
    # The exit warning names what it left for the next process.
    assert "left 5 task(s) READY" in err
    assert all(pk in err for pk in enqueued["ids"])
    assert statuses() == {"READY": 5}

    with override_settings(TASKS=durable(POLL_INTERVAL=0.05)), Finished.connected() as done:
        djthreads.durable.start_workers()
        results = [task_backends["default"].get_result(pk) for pk in enqueued["ids"]]
        done.wait(results, timeout=DEADLINE)
        for result in results:
            result.refresh()
            assert result.status == TaskResultStatus.SUCCESSFUL
            assert (
                result.return_value >= enqueued["due"]
            )  # ISO 8601, UTC: text order is time order


def test_results_are_readable_from_another_process(children: Callable[..., Child]) -> None:
    child = children("run")
    pk = child.line()["id"]
    assert child.finish()[0] == 0
    with override_settings(TASKS=durable(RUN_TASKS=False)):
        result = task_backends["default"].get_result(pk)
    assert result.status == TaskResultStatus.SUCCESSFUL
    assert result.return_value == 5
    assert result.worker_ids[-1].startswith("djthreads:")


def test_exit_finishes_the_running_task_and_leaves_the_rest_ready(
    children: Callable[..., Child],
) -> None:
    child = children("exit", djthreads={"MAX_WORKERS": 1, "SHUTDOWN_TIMEOUT": 30.0})
    ids = child.line()
    assert child.process.stdout is not None
    assert child.process.stdout.readline() == "main thread done\n"
    # The exit stopped claiming: the running task may finish, and nothing
    # behind it may start.
    assert child.process.stdout.readline() == "claiming stopped\n"
    child.send("go")
    code, err = child.finish()
    assert code == 0, err
    assert DBTaskResult.objects.get(pk=ids["gate"]).status == "SUCCESSFUL"
    assert runs_per_key() == {"gate": 1}
    assert DBTaskResult.objects.get(pk=ids["behind"]).status == "READY"
    assert DBTaskResult.objects.get(pk=ids["later"]).status == "READY"
    assert "left 2 task(s) READY" in err
    assert ids["behind"] in err
    assert ids["later"] in err


def test_exit_marks_a_task_still_running_after_shutdown_timeout_failed(
    children: Callable[..., Child],
) -> None:
    child = children("stuck", djthreads={"SHUTDOWN_TIMEOUT": 0.5})
    pk = child.line()["id"]
    code, err = child.finish()
    assert code == 0, err
    row = DBTaskResult.objects.get(pk=pk)
    assert row.status == "FAILED", err
    assert row.exception_class_path == LOST
    assert "SHUTDOWN_TIMEOUT" in row.traceback
    assert "still running after SHUTDOWN_TIMEOUT=0.5s" in err


def test_wait_for_tasks_waits_for_a_task_enqueued_here_that_another_process_runs(
    children: Callable[..., Child],
) -> None:
    gate = threading.Event()
    with override_settings(TASKS=durable(POLL_INTERVAL=0.05), DJTHREADS={"MAX_WORKERS": 1}):
        # This process's one worker is busy: it claims nothing.
        blocker = djthreads.submit(gate.wait, 30)
        try:
            result = bt.add.enqueue(2, 3)
            with pytest.raises(TimeoutError, match=f"tests.backend_tasks.add id={result.id}"):
                djthreads.wait_for_tasks(timeout=0.2)
            other = children("drain", options={"POLL_INTERVAL": 0.05})
            other.send("go")
            assert other.line() == {"ran": 1}
            assert other.finish()[0] == 0
        finally:
            gate.set()
        blocker.result(timeout=10)
        # Its record ends when a poll finds the row finished by the other process.
        djthreads.wait_for_tasks(timeout=10)
    row = DBTaskResult.objects.get(pk=result.id)
    assert row.status == "SUCCESSFUL"
    assert row.worker_ids[-1] != djthreads.durable.worker_id()


def test_the_admin_action_re_enqueues_failed_tasks_as_new_ones(
    children: Callable[..., Child],
) -> None:
    with override_settings(TASKS=durable(POLL_INTERVAL=0.05)), Finished.connected() as done:
        failed = bt.fail.enqueue("again")
        fine = bt.add.enqueue(1, 1)
        done.wait([failed, fine])
    # Another process, with Django's admin installed (this one has none).
    child = children("admin", failed.id, fine.id, admin=True)
    shown = child.line()
    assert child.finish()[0] == 0
    new = DBTaskResult.objects.exclude(pk__in=[failed.id, fine.id]).get()
    assert shown == {
        "admin": "DurableTaskResultAdmin",
        "offered": True,
        "refused": True,
        "notes": [
            f"Re-enqueued 1 failed task(s) as new tasks: {new.pk}",
            f"Skipped: {fine.id} is SUCCESSFUL, not FAILED.",
        ],
    }
    assert new.task_path == "tests.backend_tasks.fail"
    assert new.args_kwargs == {"args": ["again"], "kwargs": {}}
    assert new.status == "FAILED"  # it ran, in the child, and failed again
    assert DBTaskResult.objects.get(pk=failed.id).status == "FAILED"  # the old row as it was
