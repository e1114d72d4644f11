"""One claimed durable task: run in a pool worker, outcome written by the dispatcher."""

from __future__ import annotations

import contextlib
import contextvars
import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from django.db import (
    DatabaseError,
    InterfaceError,
    OperationalError,
    connections,
    router,
    transaction,
)

from djthreads import _account
from djthreads._run import Carried, capture, clean_up
from djthreads._tasks_compat import TaskContext, normalize_json, task_finished, task_started

if TYPE_CHECKING:
    from django_tasks_db.models import DBTaskResult

    Row = DBTaskResult[..., Any]

logger = logging.getLogger("djthreads.durable")

LOST = "djthreads.durable.WorkerLostError"


def fresh_context() -> Carried:
    """An empty context and the default language, for one durable task.

    A durable task may run in any process, so it gets nothing from whoever
    enqueued it but its arguments, wherever it runs.
    """
    return contextvars.Context().run(capture)


class Waiting:
    """Stands for a task enqueued in this process until a process claims it.

    The ``fn`` of its Work record in djthreads' account of outstanding work:
    it only names the task in log lines; the dispatcher that claims the row
    puts a Job in its place.
    """

    def __init__(self, task_path: str) -> None:
        module, _, qualname = task_path.rpartition(".")
        self.__module__ = module
        self.__qualname__ = qualname

    def __call__(self) -> None:
        raise RuntimeError(f"{self.__qualname__} was never claimed: it cannot run here.")


class Job:
    """A row this process claimed, from the claim until its outcome is in the database.

    The dispatcher submits the Job itself to the default pool, so it runs
    inside ``run_task``: in a fresh context, with djthreads' signals, and with
    the worker's connections closed (or kept, under REUSE_CONNECTIONS) after
    it. The worker does not write the outcome: it hands it to the dispatcher
    (``ready``), which writes the outcomes of every task that finished
    meanwhile in one transaction with its next claim, and waits for that
    commit, so ``task_finished`` is sent, from the worker, once the row says
    so.
    """

    def __init__(self, row: Row, sender: type, ready: Callable[[Job], bool]) -> None:
        self.row = row
        self.sender = sender  # the backend class, sender of Django's task signals
        self.ready = ready  # hands the outcome over; False when no one will write it
        self.id = str(row.id)
        self.name = row.task_path
        self.value: Any = None
        self.error: BaseException | None = None
        self.waiting = False  # the worker waits for the write (its slot frees after it)
        self.write_yourself = False  # the dispatcher stopped before writing it
        self.written = threading.Event()
        # run_task() and the pool name tasks by __module__/__qualname__.
        module, _, qualname = row.task_path.rpartition(".")
        self.__module__ = module
        self.__qualname__ = qualname

    def __call__(self) -> None:
        """Run the task in this pool worker; its outcome becomes SUCCESSFUL or FAILED.

        As in ``db_worker``: the return value is stored as JSON (a value that is
        not JSON fails the task), any exception — from the task, from a
        ``task_started`` receiver, a task that cannot be imported any more —
        fails the task with its class path and traceback, and Django's
        ``task_started``/``task_finished`` are sent (``task_finished`` inside
        the handler, so Django's receiver logs a failure at ERROR with its
        traceback). The exception is then re-raised, as ThreadPoolBackend
        does, so waits and the test helpers see the failure. A coroutine task
        runs to completion through ``async_to_sync`` (``Task.call``), in this
        worker.
        """
        row = self.row
        try:
            task = row.task
            result = row.task_result
        except BaseException as exc:
            # The function is gone or the path no longer names a Task.
            self.error = exc
            self._hand_over()
            raise
        logger.debug("task=%s id=%s started", self.name, self.id)
        try:
            task_started.send(sender=self.sender, task_result=result)
            if task.takes_context:
                value = task.call(TaskContext(task_result=result), *result.args, **result.kwargs)
            else:
                value = task.call(*result.args, **result.kwargs)
            self.value = normalize_json(value)
        except BaseException as exc:
            self.error = exc
            self._hand_over()
            # Logged before the signal, whose receivers (a test waiting for
            # the task) may act on it at once. Sent inside the handler, as
            # Django does: its receiver logs the failure at ERROR with this
            # exception's traceback.
            logger.debug("task=%s id=%s finished status=%s", self.name, self.id, row.status)
            task_finished.send(sender=self.sender, task_result=row.task_result)
            raise
        self._hand_over()
        logger.debug("task=%s id=%s finished status=%s", self.name, self.id, row.status)
        task_finished.send(sender=self.sender, task_result=row.task_result)

    def _hand_over(self) -> None:
        # The task is over: give its connections back before waiting, as
        # run_task would after it. Holding them while the writer commits
        # could take the last slots of a connection pool the writer needs.
        work = _account.current()
        reuse = work is not None and getattr(work.owner, "reuse_connections", False)
        clean_up(self.name, reuse=reuse, failed=self.error is not None)
        self.waiting = True
        if not self.ready(self):
            self._write_alone()
        else:
            self.written.wait()
            if self.write_yourself:
                self._write_alone()
        self.waiting = False

    def _write_alone(self) -> None:
        # The dispatcher has stopped and will not write it. If the task
        # outlived SHUTDOWN_TIMEOUT it was marked lost: the real outcome wins.
        from django_tasks_db.models import DBTaskResult

        using = router.db_for_write(DBTaskResult)
        try:
            with exclusive(using):
                write_outcomes([self], using)
        except Exception:
            logger.exception("task=%s id=%s outcome not saved", self.name, self.id)

    def write(self) -> None:
        """Record the outcome on the row (the dispatcher's thread, in its transaction)."""
        if self.error is None:
            once(type(self.row).set_successful)(self.row, self.value)
        else:
            once(type(self.row).set_failed)(self.row, self.error)

    def refused(self, exc: DatabaseError) -> None:
        """Fail the task with the database's refusal of its outcome (dispatcher's thread)."""
        logger.error("task=%s id=%s outcome refused by the database: %s", self.name, self.id, exc)
        self.error = RuntimeError(
            f"The outcome of task {self.name} could not be stored: the database refused it "
            f"({type(exc).__name__}: {exc})."
        )
        once(type(self.row).set_failed)(self.row, self.error)

    def hand_back(self) -> None:
        """Make the row READY again: it was claimed here but never started."""
        from django_tasks_db.models import DBTaskResult

        try:
            DBTaskResult.objects.filter(pk=self.row.pk, status="RUNNING").update(
                status="READY", started_at=None
            )
        except Exception:
            logger.exception("task=%s id=%s could not be handed back READY", self.name, self.id)
        else:
            logger.debug("task=%s id=%s handed back READY", self.name, self.id)


def exclusive(using: str) -> contextlib.AbstractContextManager[Any]:
    """django-tasks-db's ``exclusive_transaction``, on a connection opened first.

    On SQLite it makes the transaction EXCLUSIVE by setting the connection's
    ``transaction_mode``, but a connection opened inside it reads its
    parameters again and starts a deferred one: two threads then deadlock on
    SQLite's lock ("database is locked" after the busy timeout).
    """
    from django_tasks_db.utils import exclusive_transaction

    connections[using].ensure_connection()
    return exclusive_transaction(using)


def once(method: Callable[..., None]) -> Callable[..., None]:
    # django-tasks-db retries these writes three times, 0.1 s apart. Inside a
    # transaction a retry only meets "current transaction is aborted" and
    # hides the first error (a lost connection looks like a refused value),
    # so the dispatcher retries the whole round itself instead.
    return getattr(method, "__wrapped__", method)


def write_outcomes(jobs: list[Job], using: str) -> list[Job]:
    """Write the outcomes of ``jobs`` whose rows are still theirs; return those written.

    Runs inside the caller's transaction. A row is still a job's while it is
    RUNNING, or FAILED as lost (a reaper that gave up on a stalled process:
    the real outcome replaces that guess). A row READY again was handed back
    or lost its claim in a database crash; another claimer runs it.
    """
    from django.db.models import Q
    from django_tasks_db.models import DBTaskResult

    ids = [job.row.pk for job in jobs]
    still_ours = set(
        DBTaskResult.objects.using(using)
        .select_for_update()
        .filter(Q(status="RUNNING") | Q(status="FAILED", exception_class_path=LOST), pk__in=ids)
        .values_list("pk", flat=True)
    )
    mine = [job for job in jobs if job.row.pk in still_ours]
    for job in jobs:
        if job.row.pk not in still_ours:
            logger.warning(
                "task=%s id=%s outcome dropped: the row is no longer this process's",
                job.name,
                job.id,
            )
    try:
        # One savepoint for all: a value or error text the database refuses
        # (say, a NUL character on PostgreSQL) must not abort the claim and
        # the other outcomes that share the transaction.
        with transaction.atomic(using=using):
            for job in mine:
                job.write()
    except (OperationalError, InterfaceError):
        raise  # the connection is gone: the whole round is tried again
    except DatabaseError:
        # Find the refused ones: one savepoint each, this time.
        for job in mine:
            try:
                with transaction.atomic(using=using):
                    job.write()
            except (OperationalError, InterfaceError):
                raise
            except DatabaseError as exc:
                with transaction.atomic(using=using):
                    job.refused(exc)
    return mine


def fail_if_running(row: Row, error: BaseException) -> bool:
    """Mark ``row`` FAILED with ``error`` unless it finished meanwhile; True if marked.

    Runs in the caller's thread. Locks the row first, so an outcome written at
    the same moment is not replaced.
    """
    from django_tasks_db.models import DBTaskResult

    try:
        with exclusive(router.db_for_write(DBTaskResult)):
            current = (
                DBTaskResult.objects.select_for_update()
                .filter(pk=row.pk, status="RUNNING")
                .first()
            )
            if current is None:
                return False
            once(type(current).set_failed)(current, error)
    except Exception:
        logger.exception("task=%s id=%s could not be marked FAILED", row.task_path, row.id)
        return False
    return True
