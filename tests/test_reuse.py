"""DJTHREADS['REUSE_CONNECTIONS']: workers keep connections by Django's rules."""

from __future__ import annotations

import pytest
from django.apps import apps
from django.core import checks
from django.db import connection, connections, transaction
from django.test import override_settings

import djthreads
from djthreads import DjangoExecutor
from tests import tasks
from tests.conftest import held_connections, postgres_only, settled_connections, uses_pool
from tests.models import Item

pytestmark = [pytest.mark.timeout(60), pytest.mark.django_db(transaction=True)]


def backend_pid() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        row = cursor.fetchone()
    assert row is not None
    return int(row[0])


def connection_id() -> object:
    """Return the DB-API connection this thread uses (works on every backend).

    The object itself, not its id(): the caller's reference keeps a closed
    connection's address from being reused by the next one.
    """
    connection.ensure_connection()
    return connection.connection


def leave_atomic_open(name: str) -> object:
    transaction.atomic().__enter__()  # never exited: a buggy task
    Item.objects.create(name=name)
    return connection_id()


def leave_begin_open(name: str) -> object:
    with connection.cursor() as cursor:
        cursor.execute("BEGIN")
    Item.objects.create(name=name)
    return connection_id()


def count_items(name: str) -> int:
    return Item.objects.filter(name=name).count()


def use_then_fail() -> None:
    connection_id()
    raise ValueError("task failed after a query")


def test_default_pool_follows_the_setting() -> None:
    assert djthreads.get_executor().reuse_connections is False
    with override_settings(DJTHREADS={"REUSE_CONNECTIONS": True}):
        assert djthreads.get_executor().reuse_connections is True


def djthreads_checks() -> list[checks.CheckMessage]:
    # Only djthreads' app: Django 6.1's model checks would query the database.
    return checks.run_checks(app_configs=[apps.get_app_config("djthreads")])


def test_check_rejects_a_non_bool_and_warns_when_conn_max_age_is_zero() -> None:
    with override_settings(DJTHREADS={"REUSE_CONNECTIONS": "yes"}):
        errors = [m for m in djthreads_checks() if m.id == "djthreads.E010"]
        assert len(errors) == 1
        assert "DJTHREADS['REUSE_CONNECTIONS'] must be True or False, got 'yes'." in errors[0].msg
    conf = connections.settings["default"]
    with override_settings(DJTHREADS={"REUSE_CONNECTIONS": True}):
        warnings = [
            m
            for m in djthreads_checks()
            if m.id == "djthreads.W001" and "DATABASES['default']" in m.msg
        ]
        assert len(warnings) == (0 if uses_pool() or conf["CONN_MAX_AGE"] != 0 else 1)
        if warnings:
            assert "Set CONN_MAX_AGE" in warnings[0].msg


@pytest.mark.parametrize("reuse", [False, True])
@pytest.mark.usefixtures("conn_max_age")
def test_a_task_that_leaves_atomic_open_does_not_poison_the_next(reuse: bool) -> None:
    pool = DjangoExecutor(1, max_queue=10, reuse_connections=reuse)
    try:
        first = pool.submit(leave_atomic_open, "atomic-left-open").result(10)
        # Same worker: the insert was rolled back and the connection is new.
        assert pool.submit(count_items, "atomic-left-open").result(10) == 0
        assert pool.submit(connection_id).result(10) is not first
    finally:
        pool.shutdown(timeout=10)


@pytest.mark.usefixtures("conn_max_age")
def test_a_task_that_leaves_a_raw_begin_open_gets_its_connection_closed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    pool = DjangoExecutor(1, max_queue=10, reuse_connections=True)
    try:
        first = pool.submit(leave_begin_open, "begin-left-open").result(10)
        assert pool.submit(count_items, "begin-left-open").result(10) == 0
        second = pool.submit(connection_id).result(10)
        assert second is not first
        # A clean task keeps its connection for the next one.
        assert pool.submit(connection_id).result(10) is second
    finally:
        pool.shutdown(timeout=10)
    assert "left a transaction open on alias=default: closing the connection" in caplog.text


@pytest.mark.usefixtures("conn_max_age")
def test_a_failed_task_closes_its_connections() -> None:
    pool = DjangoExecutor(1, max_queue=10, reuse_connections=True)
    try:
        kept = pool.submit(connection_id).result(10)
        assert pool.submit(connection_id).result(10) is kept
        with pytest.raises(ValueError, match="task failed after a query"):
            pool.submit(use_then_fail).result(10)
        assert pool.submit(connection_id).result(10) is not kept
    finally:
        pool.shutdown(timeout=10)


@postgres_only
@pytest.mark.skipif(uses_pool(), reason="Django's pool needs CONN_MAX_AGE=0")
@pytest.mark.usefixtures("no_gc", "conn_max_age")
def test_connections_are_bounded_by_workers_and_closed_at_shutdown() -> None:
    assert held_connections() == 0
    pool = DjangoExecutor(4, max_queue=1000, reuse_connections=True)
    try:
        pids = [pool.submit(backend_pid) for _ in range(200)]
        assert 1 <= len({f.result(20) for f in pids}) <= 4
        assert 1 <= held_connections() <= 4  # kept between tasks
    finally:
        pool.shutdown(wait=True, timeout=20)
    assert settled_connections(0) == 0


@postgres_only
@pytest.mark.skipif(uses_pool(), reason="Django's pool needs CONN_MAX_AGE=0")
@pytest.mark.usefixtures("no_gc")
def test_conn_max_age_zero_still_closes_after_every_task() -> None:
    assert connections.settings["default"]["CONN_MAX_AGE"] == 0
    pool = DjangoExecutor(1, max_queue=100, reuse_connections=True)
    try:
        pids = [pool.submit(backend_pid) for _ in range(20)]
        assert len({f.result(20) for f in pids}) > 1
        assert settled_connections(0) == 0
    finally:
        pool.shutdown(wait=True, timeout=20)


@postgres_only
@pytest.mark.skipif(not uses_pool(), reason="needs the psycopg 3 pool (settings_postgres_pool)")
def test_on_django_pool_each_task_returns_its_slot() -> None:
    pool = DjangoExecutor(4, max_queue=1000, reuse_connections=True)
    try:
        futures = [pool.submit(tasks.select_one) for _ in range(200)]
        assert [f.result(20) for f in futures] == [1] * 200
        assert held_connections() == 0  # no worker sits on a slot between tasks
    finally:
        pool.shutdown(wait=True, timeout=20)
