"""This process's lease, and the reaper of tasks orphaned by dead processes.

A process that claims durable tasks first writes a ``WorkerLease`` row and
then keeps moving its ``expires_at`` forward, every quarter of the lease, from
one daemon thread. Expiry is computed by the database clock (``Now()``), so
machines whose clocks disagree still agree on who is alive. The same thread
reaps: a RUNNING row whose last claimer is a djthreads worker without a live
lease was orphaned and is marked FAILED with WorkerLostError. Rows claimed by
``db_worker`` are never touched (django-tasks-db leaves those to the operator).
"""

from __future__ import annotations

import datetime
import logging
import os
import socket
import threading
from typing import TYPE_CHECKING, Any

from django.db import router
from django.db.models import TextField
from django.db.models.functions import Cast, Now
from django.utils.crypto import get_random_string

from djthreads._run import close_connections
from djthreads._worker import worker_state
from djthreads.durable import WorkerLostError
from djthreads.durable._job import exclusive, once
from djthreads.durable.models import WorkerLease

if TYPE_CHECKING:
    from django_tasks_db.models import DBTaskResult

    Row = DBTaskResult[..., Any]

logger = logging.getLogger("djthreads.durable")

# Every claim by a djthreads process carries this prefix in worker_ids, so the
# reaper can tell its rows from db_worker's (random 32-character ids).
PREFIX = "djthreads:"


def new_worker_id() -> str:
    """A worker id unique to this process: prefix, host, pid and a random part."""
    return f"{PREFIX}{socket.gethostname()[:50]}:{os.getpid()}:{get_random_string(8)}"


def mark_background_thread() -> None:
    """Tell djthreads' test helpers this thread may hold a connection while it lives.

    Runs in the dispatcher and lease threads. The helpers' connection watch
    excuses a live thread that keeps its connection by design, as it does a
    pool worker under REUSE_CONNECTIONS: both threads close theirs when idle
    and when they stop (a changed TASKS setting stops them in tests).
    """
    worker_state.reuse = True


def lost_error(worker_id: str, why: str) -> WorkerLostError:
    return WorkerLostError(
        f"The process that claimed this task (worker {worker_id}) {why} before the task "
        "finished. It may have run partly and will not run again: re-enqueue it (the admin "
        "action 'Re-enqueue selected failed tasks') if running it twice is safe."
    )


def _expiry(seconds: float) -> Now:
    # Database time, so leases written by different machines compare fairly.
    return Now() + datetime.timedelta(seconds=seconds)  # type: ignore[return-value]


class Lease:
    """Keep one process's WorkerLease alive from a daemon thread; reap orphans.

    ``start()`` runs in the caller; the beat runs in the thread
    ``djthreads-durable-lease`` every ``seconds / 4``, closing its database
    connection after each beat. ``registered`` is set once the row exists:
    dispatchers claim nothing before that. A beat that finds its row gone (the
    process stalled longer than the lease and another process reaped it)
    writes it again and logs a WARNING. ``stop()`` deletes the row.
    """

    def __init__(self, worker_id: str, seconds: float) -> None:
        self.worker_id = worker_id
        self.seconds = seconds
        self.registered = threading.Event()
        self._stop = threading.Event()
        self._error: str | None = None  # the last failure logged, so it is logged once
        self._thread = threading.Thread(
            name="djthreads-durable-lease", target=self._run, daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Stop beating and delete this process's row (runs in the caller)."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        if self.registered.is_set():
            try:
                WorkerLease.objects.filter(worker_id=self.worker_id).delete()
            except Exception:
                logger.exception("worker=%s could not delete its lease", self.worker_id)

    def _run(self) -> None:
        mark_background_thread()
        interval = max(self.seconds / 4, 0.05)
        while not self._stop.is_set():
            written = False
            try:
                written = self.beat()
                reap()
            except Exception as exc:
                # The database is down or the tables are missing: say so once.
                message = f"{type(exc).__name__}: {exc}"
                if message != self._error:
                    logger.exception(
                        "worker=%s lease beat failed (is the database up and "
                        "'python manage.py migrate' run?)",
                        self.worker_id,
                    )
                self._error = message
            else:
                self._error = None
            finally:
                close_connections("djthreads durable lease")
            if written:
                # Only now, its connection closed: dispatchers may claim.
                self.registered.set()
            self._stop.wait(interval)

    def beat(self) -> bool:
        """Move this process's expiry forward, writing the row if it is missing.

        Returns True once the row is known to exist.
        """
        kept = WorkerLease.objects.filter(worker_id=self.worker_id).update(
            expires_at=_expiry(self.seconds)
        )
        if kept:
            return True
        if self.registered.is_set():
            logger.warning(
                "worker=%s lease had expired (no beat for %.1fs): tasks it was running may "
                "have been marked FAILED by another process; renewing it",
                self.worker_id,
                self.seconds,
            )
        WorkerLease.objects.create(
            worker_id=self.worker_id,
            hostname=socket.gethostname()[:255],
            pid=os.getpid(),
            expires_at=_expiry(self.seconds),
        )
        return True


def reap() -> list[str]:
    """Mark FAILED every RUNNING task whose djthreads claimer has no live lease.

    Runs in the lease thread (or a test). Returns the ids of the tasks failed.
    The rows are locked first (SKIP LOCKED: another reaper may hold them) and
    the live leases read after, so a process that registered and claimed in
    between is seen alive.
    """
    from django_tasks_db.models import DBTaskResult

    using = router.db_for_write(DBTaskResult)
    with exclusive(using):
        running = (
            DBTaskResult.objects.using(using)
            .running()
            .annotate(claimers=Cast("worker_ids", TextField()))
            .filter(claimers__contains=PREFIX)
            .select_for_update(skip_locked=True)
        )
        rows: list[Row] = list(running)
        if not rows:
            return []
        live = set(
            WorkerLease.objects.filter(expires_at__gte=Now()).values_list("worker_id", flat=True)
        )
        lost = [row for row in rows if _claimer(row) not in live and _claimer(row) is not None]
        for row in lost:
            claimer = _claimer(row)
            assert claimer is not None
            once(type(row).set_failed)(
                row, lost_error(claimer, "stopped (killed, out of memory, or lost)")
            )
            logger.error(
                "task=%s id=%s marked FAILED: its worker=%s has no live lease",
                row.task_path,
                row.id,
                claimer,
            )
    WorkerLease.objects.filter(expires_at__lt=Now()).delete()
    return [str(row.id) for row in lost]


def _claimer(row: Row) -> str | None:
    ids = row.worker_ids
    if isinstance(ids, list) and ids and str(ids[-1]).startswith(PREFIX):
        return str(ids[-1])
    return None
