from __future__ import annotations

import threading

import pytest
from django.db import connections, transaction
from django.test import override_settings

import djthreads
from djthreads import run_async, submit
from tests import tasks
from tests.models import Item

pytestmark = [pytest.mark.timeout(60), pytest.mark.django_db(transaction=True)]


def test_outside_a_transaction_runs_at_once() -> None:
    pk = Item.objects.create(name="committed").pk
    assert submit(tasks.item_exists, pk).result(10) is True


def test_held_until_commit_so_the_worker_sees_the_row() -> None:
    with transaction.atomic():
        pk = Item.objects.create(name="new").pk
        future = submit(tasks.item_exists, pk)
        djthreads.wait_for_tasks(timeout=10)  # nothing submitted yet
        assert not future.done()
    assert future.result(10) is True


def test_held_until_the_outermost_commit() -> None:
    with transaction.atomic():
        with transaction.atomic():
            pk = Item.objects.create(name="nested").pk
            future = submit(tasks.item_exists, pk)
        assert not future.done()
    assert future.result(10) is True


@pytest.mark.usefixtures("no_gc")
def test_rollback_cancels_the_future() -> None:
    ran = threading.Event()

    def mark() -> None:
        ran.set()

    with pytest.raises(RuntimeError, match="undo"), transaction.atomic():
        future = submit(mark)
        raise RuntimeError("undo")
    assert future.cancelled()
    djthreads.wait_for_tasks(timeout=10)
    assert not ran.is_set()


@pytest.mark.usefixtures("no_gc")
def test_savepoint_rollback_cancels_only_its_tasks() -> None:
    with transaction.atomic():
        kept = submit(tasks.add, 1, 1)
        try:
            with transaction.atomic():
                dropped = submit(tasks.add, 2, 2)
                raise ValueError("inner")
        except ValueError:
            pass
        assert dropped.cancelled()
        assert not kept.done()
    assert kept.result(10) == 2


@pytest.mark.usefixtures("no_gc")
def test_set_rollback_cancels() -> None:
    with transaction.atomic():
        future = submit(tasks.noop)
        transaction.set_rollback(True)
    assert future.cancelled()


def test_on_commit_false_submits_at_once() -> None:
    release = threading.Event()

    @run_async(on_commit=False)
    def started_inside() -> bool:
        return release.wait(10)

    with transaction.atomic():
        future = started_inside()
        # Already handed to the pool, though the transaction is still open.
        assert djthreads.get_executor().pending()
        release.set()
        assert future.result(10) is True


@override_settings(DJTHREADS={"ON_COMMIT": False})
def test_setting_turns_the_default_off() -> None:
    with transaction.atomic():
        future = submit(tasks.add, 3, 3)
        assert future.result(10) == 6


def test_queue_full_after_commit_goes_to_the_future() -> None:
    with override_settings(DJTHREADS={"MAX_WORKERS": 1, "MAX_QUEUE": 0, "ON_FULL": "raise"}):
        release = threading.Event()
        blocker = submit(tasks.wait_for, release)
        with transaction.atomic():
            held = submit(tasks.noop)
        # The commit did not raise; the task could not be queued.
        with pytest.raises(djthreads.QueueFullError):
            held.result(10)
        release.set()
        assert blocker.result(10) is True


@pytest.mark.django_db(transaction=True, databases=["default", "other"])
def test_using_follows_the_named_alias_only() -> None:
    @run_async(using="other")
    def on_other() -> int:
        return 7

    try:
        # A transaction on "default" does not hold a task that follows "other"...
        with transaction.atomic():
            assert on_other().result(10) == 7
        # ...and a transaction on "other" does.
        with transaction.atomic(using="other"):
            held = on_other()
            assert not held.done()
        assert held.result(10) == 7
        with transaction.atomic(using="other"):
            dropped = on_other()
            transaction.set_rollback(True, using="other")
        assert dropped.cancelled()
    finally:
        connections["other"].close()
