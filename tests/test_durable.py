"""DurableBackend in one process: rows, the on-commit wake, backpressure, hygiene."""

from __future__ import annotations

import datetime
import logging
import re
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import request_started
from django.db import connection, transaction
from django.db.migrations.recorder import MigrationRecorder
from django.db.models import Count
from django.test import Client, modify_settings, override_settings
from django.utils import timezone

import djthreads
from djthreads import signals as djthreads_signals
from djthreads._tasks_compat import AnyTaskResult, TaskResultStatus, task_backends, task_started
from example.harvest.models import Job as HarvestJob
from tests import backend_tasks as bt
from tests import durable_tasks as dt
from tests.backend_tasks import Finished
from tests.conftest import postgres_only, settled_connections, uses_pool
from tests.models import Item
from tests.test_backends import finished as finished  # a fixture
from tests.test_backends import refreshed

django_tasks_db = pytest.importorskip("django_tasks_db")

from django_tasks_db.models import DBTaskResult  # noqa: E402

import djthreads.durable  # noqa: E402
from djthreads.durable import DurableBackend  # noqa: E402
from djthreads.durable import checks as durable_checks  # noqa: E402
from djthreads.durable._job import Job  # noqa: E402
from djthreads.durable.models import WorkerLease  # noqa: E402

pytestmark = [pytest.mark.timeout(60), pytest.mark.django_db(transaction=True)]

on_postgres = pytest.mark.skipif(
    settings.DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql",
    reason="needs PostgreSQL (jsonb refuses NUL; a plpgsql trigger); the PostgreSQL runs cover it",
)

BACKEND = "djthreads.durable.DurableBackend"


def durable(**options: Any) -> dict[str, Any]:
    return {"default": {"BACKEND": BACKEND, "OPTIONS": options}}


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    """Poll the database for ``condition`` until ``timeout`` seconds passed."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what} not reached within {timeout} s"
        threading.Event().wait(0.02)


def value_of(result: AnyTaskResult) -> Any:
    """Refresh ``result`` and return its return value."""
    result.refresh()
    return result.return_value


@override_settings(TASKS=durable(POLL_INTERVAL=0.05))
def test_enqueue_writes_a_row_that_a_pool_worker_runs(finished: Finished) -> None:
    result = bt.add.enqueue(2, 3)
    assert result.status == TaskResultStatus.READY
    assert DBTaskResult.objects.filter(pk=result.id).exists()
    finished.wait([result])
    fetched = task_backends["default"].get_result(result.id)
    assert fetched.status == TaskResultStatus.SUCCESSFUL
    assert fetched.return_value == 5
    assert fetched.worker_ids[-1].startswith("djthreads:")


@override_settings(TASKS=durable(POLL_INTERVAL=0.05))
def test_rollback_leaves_no_row_and_no_run(finished: Finished) -> None:
    with pytest.raises(RuntimeError, match="roll back"), transaction.atomic():
        rolled_back = dt.record.enqueue("rolled-back")
        assert DBTaskResult.objects.filter(pk=rolled_back.id).exists()  # in the transaction
        raise RuntimeError("roll back")
    assert not DBTaskResult.objects.filter(pk=rolled_back.id).exists()
    # A committed task behind it runs; the rolled-back one never did.
    committed = dt.record.enqueue("committed")
    finished.wait([committed])
    assert refreshed(committed).status == TaskResultStatus.SUCCESSFUL
    assert list(Item.objects.values_list("name", flat=True)) == ["committed"]
    assert DBTaskResult.objects.count() == 1
    assert rolled_back.id not in finished.ids


@override_settings(TASKS=durable(POLL_INTERVAL=60.0))
def test_the_commit_wakes_the_dispatcher_without_waiting_for_the_poll(
    finished: Finished,
) -> None:
    first = bt.add.enqueue(1, 1)  # starts the dispatcher; its first look is this poll
    finished.wait([first])
    with transaction.atomic():
        second = bt.add.enqueue(2, 2)
    # The next poll is a minute away: only the commit can have woken it.
    finished.wait([second], timeout=10)
    assert refreshed(second).return_value == 4


@override_settings(TASKS=durable(POLL_INTERVAL=0.05), DJTHREADS={"MAX_WORKERS": 2})
def test_claims_no_more_rows_than_free_pool_workers(finished: Finished) -> None:
    names = [f"bp{n}" for n in range(6)]
    for name in names:
        bt.gates[name] = threading.Event()
        bt.started[name] = threading.Event()
    try:
        results = [bt.hold.enqueue(name) for name in names]
        first_two = [name for name in names[:2]]
        for name in first_two:
            assert bt.started[name].wait(10)
        statuses = dict(
            DBTaskResult.objects.values_list("status").annotate(n=Count("id")).order_by()
        )
        assert statuses == {"RUNNING": 2, "READY": 4}
        assert not any(bt.started[name].is_set() for name in names[2:])
    finally:
        for name in names:
            bt.gates[name].set()
    finished.wait(results)
    assert {refreshed(r).status for r in results} == {TaskResultStatus.SUCCESSFUL}


@override_settings(TASKS=durable(POLL_INTERVAL=0.05), DJTHREADS={"MAX_WORKERS": 1})
def test_higher_priority_runs_first(finished: Finished) -> None:
    bt.gates["prio"] = threading.Event()
    bt.started["prio"] = threading.Event()
    try:
        blocker = bt.hold.enqueue("prio")
        assert bt.started["prio"].wait(10)
        with transaction.atomic():
            low = bt.ordered.using(priority=-10).enqueue("low")
            normal = bt.ordered.enqueue("normal")
            high = bt.ordered.using(priority=10).enqueue("high")
    finally:
        bt.gates["prio"].set()
    finished.wait([blocker, low, normal, high])
    order = [value_of(r) for r in (high, normal, low)]
    assert order == sorted(order)


@override_settings(TASKS=durable(POLL_INTERVAL=60.0))
def test_deferred_task_starts_no_earlier_than_run_after(finished: Finished) -> None:
    run_after = timezone.now() + datetime.timedelta(milliseconds=400)
    result = dt.stamp.using(run_after=run_after).enqueue("deferred")
    assert refreshed(result).status == TaskResultStatus.READY
    # The poll is a minute away: the dispatcher's own timer starts it.
    finished.wait([result], timeout=10)
    started = datetime.datetime.fromisoformat(value_of(result))
    assert started >= run_after


@override_settings(TASKS=durable(POLL_INTERVAL=0.05))
def test_async_task_and_takes_context(finished: Finished) -> None:
    added = bt.async_add.enqueue(20, 22)
    created = bt.async_create_item.enqueue("async")
    context = bt.with_context.enqueue(7)
    finished.wait([added, created, context])
    assert refreshed(added).return_value == 42
    assert Item.objects.get(pk=value_of(created)).name == "async"
    value = refreshed(context).return_value
    assert value == {"id": context.id, "attempt": 1, "value": 7}


@override_settings(TASKS=durable(POLL_INTERVAL=0.05))
def test_failure_is_recorded_and_logged_with_the_task_id(
    finished: Finished, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="djthreads.durable")
    failed = bt.fail.enqueue("boom")
    unserializable = bt.unserializable.enqueue()
    finished.wait([failed, unserializable])
    result = task_backends["default"].get_result(failed.id)
    assert result.status == TaskResultStatus.FAILED
    assert result.errors[0].exception_class_path == "builtins.ValueError"
    assert "ValueError: boom" in result.errors[0].traceback
    assert refreshed(unserializable).status == TaskResultStatus.FAILED
    assert f"id={failed.id} started" in caplog.text
    assert f"id={failed.id} finished status=FAILED" in caplog.text
    errors = [r for r in caplog.records if r.levelno == logging.ERROR and failed.id in r.message]
    assert errors
    assert errors[0].exc_info is not None  # Django's receiver, with the traceback


@override_settings(TASKS=durable(POLL_INTERVAL=0.05))
def test_django_and_djthreads_signals_are_sent(finished: Finished) -> None:
    seen: list[tuple[str, object]] = []

    def on_django(sender: object, task_result: AnyTaskResult, **kwargs: Any) -> None:
        seen.append(("django", sender))

    def on_djthreads(sender: object, name: str, **kwargs: Any) -> None:
        seen.append(("djthreads", name))

    task_started.connect(on_django)
    djthreads_signals.task_started.connect(on_djthreads)
    try:
        result = bt.add.enqueue(1, 2)
        finished.wait([result])
    finally:
        task_started.disconnect(on_django)
        djthreads_signals.task_started.disconnect(on_djthreads)
    assert ("django", DurableBackend) in seen
    assert ("djthreads", "tests.backend_tasks.add") in seen


@postgres_only
@override_settings(TASKS=durable(POLL_INTERVAL=0.05))
def test_workers_leave_no_connection_the_dispatcher_keeps_two_until_it_stops(
    finished: Finished,
) -> None:
    results = [bt.select_one.enqueue() for _ in range(12)]
    finished.wait(results)
    # Each task's connection is closed after it. The claimer and the writer
    # keep theirs, as a db_worker process does, until they stop; with
    # Django's psycopg 3 pool they give them back after each round.
    kept = 0 if uses_pool() else 2
    assert settled_connections(kept) == kept
    djthreads.durable.stop_workers(timeout=10)
    assert settled_connections(0) == 0


@override_settings(TASKS=durable(RUN_TASKS=False))
def test_run_tasks_off_only_enqueues_until_another_process_runs_it(finished: Finished) -> None:
    result = bt.add.enqueue(3, 4)
    assert not [t for t in threading.enumerate() if t.name.startswith("djthreads-durable")]
    assert refreshed(result).status == TaskResultStatus.READY
    # The same row, now in a "process" that runs tasks: the first request starts it.
    with override_settings(TASKS=durable(POLL_INTERVAL=0.05)):
        request_started.send(sender=None)
        finished.wait([result])
    assert refreshed(result).return_value == 7


@override_settings(TASKS=durable(POLL_INTERVAL=0.05, LEASE_TIMEOUT=0.4))
def test_running_tasks_of_a_dead_process_are_failed_others_are_left() -> None:
    WorkerLease.objects.create(
        worker_id="djthreads:gone:1:dead",
        hostname="gone",
        pid=1,
        expires_at=timezone.now() - datetime.timedelta(minutes=1),
    )
    WorkerLease.objects.create(
        worker_id="djthreads:here:2:live",
        hostname="here",
        pid=2,
        expires_at=timezone.now() + datetime.timedelta(hours=1),
    )
    with override_settings(TASKS=durable(RUN_TASKS=False)):
        rows = {
            claimer: DBTaskResult.objects.get(pk=dt.record.enqueue(claimer).id)
            for claimer in ("djthreads:gone:1:dead", "djthreads:here:2:live", "db-worker-id")
        }
    for claimer, row in rows.items():
        row.claim(claimer)
    djthreads.durable.start_workers()  # its lease thread reaps

    def lost() -> DBTaskResult[..., Any]:
        return DBTaskResult.objects.get(pk=rows["djthreads:gone:1:dead"].pk)

    wait_until(lambda: lost().status == "FAILED", "the dead process's task failed")
    assert lost().exception_class_path == "djthreads.durable.WorkerLostError"
    assert "djthreads:gone:1:dead" in lost().traceback
    assert "will not run again" in lost().traceback
    others = DBTaskResult.objects.exclude(pk=lost().pk)
    assert set(others.values_list("status", flat=True)) == {"RUNNING"}
    assert not WorkerLease.objects.filter(worker_id="djthreads:gone:1:dead").exists()
    assert not Item.objects.exists()  # nothing ran again


@override_settings(TASKS=durable(POLL_INTERVAL=0.05))
def test_stop_workers_fails_a_task_past_the_timeout_until_its_real_outcome_arrives(
    caplog: pytest.LogCaptureFixture, finished: Finished
) -> None:
    bt.gates["stop"] = threading.Event()
    bt.started["stop"] = threading.Event()
    try:
        held = bt.hold.enqueue("stop")
        assert bt.started["stop"].wait(10)
        later = bt.add.using(run_after=timezone.now() + datetime.timedelta(hours=1)).enqueue(1, 2)
        with caplog.at_level(logging.WARNING, logger="djthreads.durable"):
            djthreads.durable.stop_workers(timeout=0.1)
        row = DBTaskResult.objects.get(pk=held.id)
        assert row.status == "FAILED"
        assert row.exception_class_path == "djthreads.durable.WorkerLostError"
        assert "SHUTDOWN_TIMEOUT" in row.traceback
        assert f"tests.backend_tasks.hold id={held.id}" in caplog.text
        assert "left 1 task(s) READY" in caplog.text
        assert f"tests.backend_tasks.add id={later.id}" in caplog.text
    finally:
        bt.gates["stop"].set()
    # The task did finish after all: its outcome replaces the guess.
    finished.wait([held])
    wait_until(
        lambda: DBTaskResult.objects.get(pk=held.id).status == "SUCCESSFUL",
        "the real outcome written",
    )
    assert value_of(held) == "stop"
    assert refreshed(later).status == TaskResultStatus.READY


@override_settings(TASKS=durable(RUN_TASKS=False))
def test_a_claimed_row_that_never_started_is_handed_back_ready() -> None:
    row = DBTaskResult.objects.get(pk=bt.add.enqueue(1, 1).id)
    row.claim("djthreads:here:3:claimer")
    Job(row, DurableBackend, lambda job: False).hand_back()
    row.refresh_from_db()
    assert row.status == "READY"
    assert row.started_at is None


@on_postgres
@override_settings(TASKS=durable(POLL_INTERVAL=0.05))
def test_an_outcome_the_database_refuses_fails_the_task_with_its_reason(
    finished: Finished,
) -> None:
    refused = dt.nul.enqueue()
    fine = bt.add.enqueue(1, 2)  # may share the refused one's transaction
    finished.wait([refused, fine])
    wait_until(lambda: refreshed(fine).status == TaskResultStatus.SUCCESSFUL, "the other one")
    result = refreshed(refused)
    assert result.status == TaskResultStatus.FAILED
    assert "could not be stored: the database refused it" in result.errors[0].traceback
    assert value_of(fine) == 3


@on_postgres
@override_settings(TASKS=durable(POLL_INTERVAL=0.05))
def test_an_outcome_not_written_while_the_database_fails_is_written_later(
    finished: Finished,
) -> None:
    table = DBTaskResult._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE durable_outage (x int)")
        cursor.execute(
            "CREATE FUNCTION durable_outage() RETURNS trigger AS $$ BEGIN "
            "IF EXISTS (SELECT 1 FROM durable_outage) THEN "
            "RAISE EXCEPTION 'outage' USING ERRCODE = '53000'; END IF; "  # an OperationalError
            "RETURN NEW; END $$ LANGUAGE plpgsql"
        )
        cursor.execute(
            f"CREATE TRIGGER durable_outage BEFORE UPDATE ON {table} FOR EACH ROW "
            "WHEN (NEW.status = 'SUCCESSFUL') EXECUTE FUNCTION durable_outage()"
        )
        cursor.execute("INSERT INTO durable_outage VALUES (1)")
    try:
        result = bt.add.enqueue(20, 22)
        finished.wait([result])
        assert DBTaskResult.objects.get(pk=result.id).status == "RUNNING"
        with connection.cursor() as cursor:
            cursor.execute("DELETE FROM durable_outage")
        wait_until(
            lambda: DBTaskResult.objects.get(pk=result.id).status == "SUCCESSFUL",
            "the outcome written once the database took it",
        )
        assert value_of(result) == 42
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"DROP TRIGGER IF EXISTS durable_outage ON {table}")
            cursor.execute("DROP FUNCTION IF EXISTS durable_outage()")
            cursor.execute("DROP TABLE IF EXISTS durable_outage")


def check_ids(messages: list[Any]) -> list[str]:
    return [message.id for message in messages]


def test_checks_name_a_missing_app() -> None:
    backend = DurableBackend("default", {"OPTIONS": {}})
    assert backend.check() == []
    with modify_settings(INSTALLED_APPS={"remove": ["django_tasks_db", "djthreads.durable"]}):
        messages = backend.check()
    assert check_ids(messages) == ["djthreads.E201", "djthreads.E202"]
    assert "'django_tasks_db' in INSTALLED_APPS" in messages[0].msg
    assert "'djthreads.durable' in INSTALLED_APPS" in messages[1].msg


@pytest.mark.parametrize(
    ("options", "check_id", "text"),
    [
        ([], "djthreads.E203", "must be a dict"),
        ({"POLL": 1}, "djthreads.E203", "unknown key 'POLL'"),
        ({"POLL_INTERVAL": 0}, "djthreads.E204", "['POLL_INTERVAL'] must be a positive number"),
        ({"LEASE_TIMEOUT": "60"}, "djthreads.E205", "['LEASE_TIMEOUT'] must be a positive"),
        ({"RUN_TASKS": 1}, "djthreads.E206", "['RUN_TASKS'] must be True or False, got 1."),
    ],
)
def test_checks_and_enqueue_reject_bad_options(options: Any, check_id: str, text: str) -> None:
    backend = DurableBackend("default", {"OPTIONS": options})
    messages = backend.check()
    assert check_ids(messages) == [check_id]
    assert text in messages[0].msg
    setting = {"default": {"BACKEND": BACKEND, "OPTIONS": options}}
    with (
        override_settings(TASKS=setting),
        pytest.raises(ImproperlyConfigured, match=re.escape(text)),
    ):
        bt.add.enqueue(1, 1)
    assert not DBTaskResult.objects.exists()


def test_check_says_when_django_tasks_db_is_not_installed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert durable_checks.check_installed() == []
    monkeypatch.setitem(sys.modules, "django_tasks_db", None)  # as if not installed
    messages = durable_checks.check_installed()
    assert check_ids(messages) == ["djthreads.E207"]
    assert "pip install 'djthreads[durable]'" in messages[0].msg


@pytest.mark.django_db(transaction=False)
@override_settings(TASKS=durable())
def test_database_check_warns_while_the_tables_are_not_migrated() -> None:
    assert durable_checks.check_migrations(databases=["default"]) == []
    assert durable_checks.check_migrations() == []  # no database: nothing to look at
    # Inside the test's transaction, rolled back after it.
    MigrationRecorder.Migration.objects.filter(app="djthreads_durable").delete()
    messages = durable_checks.check_migrations(databases=["default"])
    assert check_ids(messages) == ["djthreads.W201"]
    assert "djthreads_durable.0001_initial are not applied" in messages[0].msg
    assert "Run python manage.py migrate" in messages[0].msg


@override_settings(
    TASKS=durable(POLL_INTERVAL=0.05),
    HARVEST_DURABLE=True,
    HARVEST_LATENCY=0.0,
    ROOT_URLCONF="example.project.urls",
    TEMPLATES=[{"BACKEND": "django.template.backends.django.DjangoTemplates", "APP_DIRS": True}],
)
def test_the_example_form_starts_its_job_as_a_durable_task() -> None:
    response = Client().post("/", {"total": 12, "workers": 4})
    job = HarvestJob.objects.get()
    assert response.status_code == 302
    row = DBTaskResult.objects.get()
    assert row.task_path == "example.harvest.tasks.run_job_task"
    assert row.args_kwargs == {"args": [job.pk], "kwargs": {}}
    djthreads.wait_for_tasks(timeout=30)
    job.refresh_from_db()
    assert job.status == HarvestJob.Status.DONE
    assert job.done == 12
    row.refresh_from_db()
    assert row.status == "SUCCESSFUL"
    assert row.return_value == 12


@override_settings(TASKS=durable(POLL_INTERVAL=0))
def test_a_bad_setting_never_fails_the_first_request(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="djthreads.durable"):
        request_started.send(sender=None)  # raises nothing
    assert "durable tasks not started at the first request" in caplog.text
    assert "['POLL_INTERVAL'] must be a positive number of seconds, got 0." in caplog.text
