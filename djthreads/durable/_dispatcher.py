"""Claim durable tasks as pool workers free up, run them on the default pool.

Two threads per DurableBackend alias per process. The claimer claims rows the
way ``db_worker`` does (``SELECT … FOR UPDATE SKIP LOCKED`` in a transaction,
then the row's ``claim()``), but only as many as the default pool has free
workers, so a row is never RUNNING while it waits for a thread: what this
process cannot start now stays READY for any other process or ``db_worker``.
It claims when:

- a task enqueued in this process commits (``DurableBackend.enqueue`` wakes it
  through ``transaction.on_commit``; a rollback never wakes it);
- a task of its own finishes and the last claim filled every free worker;
- a deferred task enqueued here comes due;
- ``POLL_INTERVAL`` seconds passed (tasks enqueued elsewhere, due ``run_after``
  of others, READY rows left by a process that exited).

A pool worker that finished a task hands its outcome to the writer and waits;
the writer commits every outcome handed over meanwhile in one transaction,
then lets their workers go on (they send ``task_finished``). Claims and
outcome writes overlap, each on its own connection, and a commit is shared by
a batch of outcomes rather than paid by each. A claim is committed on
PostgreSQL without waiting for the disk (see ``_claim``); outcomes are not.

Both threads keep their database connection, as a ``db_worker`` process does,
and close it after a database error and when they stop: opening one for each
round would cost more than the round. With Django's psycopg 3 pool, they give
it back to the pool after each round instead. ``djthreads.durable._workers`` keeps one
dispatcher per alias per process and stops them.
"""

from __future__ import annotations

import concurrent.futures
import datetime
import functools
import heapq
import logging
import threading
import time
from typing import TYPE_CHECKING, Any, cast

from django.db import OperationalError, connections, router
from django.utils import timezone

from djthreads import _account
from djthreads._account import DEFERRED, DURABLE, QUEUED, RUNNING, Work
from djthreads._default import get_executor
from djthreads._run import close_connections
from djthreads._worker import new_future
from djthreads.durable._job import (
    Job,
    Waiting,
    exclusive,
    fail_if_running,
    fresh_context,
    write_outcomes,
)
from djthreads.durable._lease import Lease, lost_error, mark_background_thread

if TYPE_CHECKING:
    from django_tasks_db.models import DBTaskResult

    Row = DBTaskResult[..., Any]

logger = logging.getLogger("djthreads.durable")

# How long an outcome may wait for those of tasks still running beside it, to
# share their commit, and a free worker for others to free up, to share one
# claim query (claims wait only while every worker is not yet free). A batch
# of no-op tasks finishes well inside it.
BATCH_WINDOW = 0.005


class Dispatcher:
    """The claiming and writing threads of one alias; see the module docstring."""

    def __init__(self, alias: str, sender: type, lease: Lease, *, poll: float) -> None:
        self.alias = alias
        self.sender = sender
        self.lease = lease
        self.poll = poll
        self.queues: list[str] = []  # empty: every queue
        self._changed = threading.Condition()  # guards everything below
        self._dirty = True  # rows may be claimable: claim at the next free worker
        self._claiming = True  # False once stopping: outcomes are still written
        self._closed = False  # nothing left to do: both threads end
        self._accepting = True  # ready() takes outcomes; False once the writer ends
        self._in_round = False  # between a claim and its rows reaching self._running
        self._next_poll = 0.0
        self._retry_at = 0.0  # after a failed write, outcomes wait until then
        # Tasks enqueued here and not claimed here (yet), by id, and the
        # deferred ones among them by run_after: see note().
        self._local: dict[str, Work] = {}
        self._due: list[tuple[datetime.datetime, int, Work]] = []
        self._running: dict[str, Work] = {}  # claimed here and handed to the pool
        self._outcomes: list[Job] = []  # finished, outcome not written yet
        self._outcomes_since = 0.0  # when the oldest of them was handed over
        self._free_since: float | None = None  # when a worker was first seen free
        self._errors: dict[str, str] = {}  # the last failure each thread logged
        self._claimer = threading.Thread(
            name=f"djthreads-durable-{alias}", target=self._claim_forever, daemon=True
        )
        self._writer = threading.Thread(
            name=f"djthreads-durable-{alias}-writer", target=self._write_forever, daemon=True
        )

    def start(self) -> None:
        self._claimer.start()
        self._writer.start()

    def note(self, work: Work, run_after: datetime.datetime | None) -> bool:
        """Take a task enqueued here: claim it soon (the committing thread, after the commit).

        ``work`` is its record in djthreads' account of outstanding work, so
        ``wait_for_tasks()`` and the test helpers wait for it, wherever it
        runs: it ends when this dispatcher runs it, or when a poll finds it
        finished by another process. Returns False once stopping.
        """
        with self._changed:
            if not self._claiming:
                return False
            self._local[work.id] = work
            if run_after is not None and run_after > timezone.now():
                work.state = DEFERRED
                heapq.heappush(self._due, (run_after, work.number, work))
            else:
                self._dirty = True
            self._changed.notify_all()
            return True

    def ready(self, job: Job) -> bool:
        """Take a finished job's outcome for the writer (the pool worker's thread).

        Returns False when the writer has ended: the caller writes it.
        """
        with self._changed:
            if not self._accepting:
                return False
            if not self._outcomes:
                self._outcomes_since = time.monotonic()
            self._outcomes.append(job)
            self._changed.notify_all()
            return True

    # -- the claimer -------------------------------------------------------------

    def _claim_forever(self) -> None:
        """The claimer thread: wait for a reason and free workers, claim, hand over."""
        mark_background_thread()
        # Never claim without a lease: a crash would leave RUNNING rows no
        # reaper could tell from live ones.
        while not self.lease.registered.wait(0.05):
            with self._changed:
                if self._closed:
                    return
        try:
            while (work := self._next_claim()) is not None:
                try:
                    self._claim_round(*work)
                finally:
                    with self._changed:
                        self._in_round = False
                        self._changed.notify_all()
        finally:
            close_connections("djthreads durable claimer")

    def _next_claim(self) -> tuple[int, bool] | None:
        """Block until there may be rows to claim for free workers, or a poll is due.

        Returns (how many rows to claim, whether to look at the tasks enqueued
        here that others may have run), or None once closed. Free workers
        are the default pool's workers neither running nor about to run
        anything (this dispatcher's tasks or other work), plus those waiting
        only for the writer: they are free once their outcome is committed,
        and a row claimed for them starts then.
        """
        with self._changed:
            while not self._closed:
                now = time.monotonic()
                polled = now >= self._next_poll
                if polled:
                    self._dirty = True
                    self._next_poll = now + self.poll
                wall = timezone.now()
                while self._due and self._due[0][0] <= wall:
                    _, _, due = heapq.heappop(self._due)
                    due.state = QUEUED
                    self._dirty = True
                free = 0
                if self._claiming and self._dirty:
                    waiting = sum(1 for work in self._running.values() if _job(work).waiting)
                    free = _free_workers() + waiting
                settle = polled and bool(self._local)
                if 0 < free < _pool_size() and not settle:
                    until = self._batching_claims(now)
                    if until is not None:
                        # Some workers free while tasks of ours are about to
                        # finish: one claim for all of them is one query.
                        self._changed.wait(max(until - now, 0.0001))
                        continue
                if free > 0 or settle:
                    self._free_since = None
                    self._in_round = True
                    if free > 0:
                        # Cleared before the claim, so a commit during it wakes us again.
                        self._dirty = False
                    return free, settle
                timeout = self._next_poll - now
                if self._due:
                    timeout = min(timeout, (self._due[0][0] - wall).total_seconds())
                self._changed.wait(max(timeout, 0.001))
            return None

    def _batching_claims(self, now: float) -> float | None:
        # Called with self._changed held, when some workers are free: until
        # when to wait for more, or None to claim now.
        if self._free_since is None:
            self._free_since = now
        until = self._free_since + BATCH_WINDOW
        return until if now < until and self._still_running() else None

    def _still_running(self) -> bool:
        # Called with self._changed held: a task of ours runs and has not
        # handed its outcome over yet.
        return any(
            not _job(work).waiting and not work.future.done() for work in self._running.values()
        )

    def _claim_round(self, free: int, settle: bool) -> None:
        """Claim up to ``free`` rows and hand them to the pool (claimer thread)."""
        try:
            rows = self._claim(free) if free > 0 else []
            if settle:
                self._settle_local()
        except Exception as exc:
            self._failed("claimer", exc)
            with self._changed:
                self._dirty = True  # again at the next poll
            return
        self._errors.pop("claimer", None)
        with self._changed:
            if rows is None or (free > 0 and len(rows) == free):
                # Busy, or all asked for came back: there may be more, so
                # claim again as soon as a worker is free.
                self._dirty = True
        for row in rows or ():
            self._submit(row)
        _between_rounds("djthreads durable claimer")

    def _claim(self, limit: int) -> list[Row] | None:
        """Claim up to ``limit`` READY rows as db_worker does (claimer thread).

        Returns None when SQLite's database-wide lock stayed taken (another
        process is writing): the caller tries again.
        """
        from django_tasks_db.models import DBTaskResult
        from django_tasks_db.utils import is_locked_database_exception

        using = router.db_for_write(DBTaskResult)
        rows = DBTaskResult.objects.using(using).ready().filter(backend_name=self.alias)
        if self.queues:
            rows = rows.filter(queue_name__in=self.queues)
        try:
            with exclusive(using):
                if connections[using].vendor == "postgresql":
                    # A claim need not wait for the disk: a claim lost in a
                    # PostgreSQL crash leaves its task READY, to run again.
                    # Outcomes are always committed synchronously.
                    with connections[using].cursor() as cursor:
                        cursor.execute("SET LOCAL synchronous_commit TO OFF")
                claimed = list(rows.select_for_update(skip_locked=True)[:limit])
                for row in claimed:
                    row.claim(self.lease.worker_id)
        except OperationalError as exc:
            if is_locked_database_exception(exc):
                return None
            raise
        for row in claimed:
            logger.debug("task=%s id=%s claimed", row.task_path, row.id)
        return claimed

    # -- the writer --------------------------------------------------------------

    def _write_forever(self) -> None:
        """The writer thread: commit the outcomes handed over, then let their workers go."""
        mark_background_thread()
        try:
            while (outcomes := self._next_write()) is not None:
                self._write_round(outcomes)
        finally:
            with self._changed:
                self._accepting = False
                left, self._outcomes = self._outcomes, []
            for job in left:  # never leave a worker waiting: it writes its own
                job.write_yourself = True
                job.written.set()
            close_connections("djthreads durable writer")

    def _next_write(self) -> list[Job] | None:
        """Block until outcomes are due to be written; None once closed and done."""
        with self._changed:
            while True:
                now = time.monotonic()
                if self._outcomes and now >= self._retry_at:
                    if not self._closed and self._batching(now):
                        # Tasks handed to the pool together finish together:
                        # one commit for all their outcomes, not one each.
                        wait = self._outcomes_since + BATCH_WINDOW - now
                        self._changed.wait(max(wait, 0.0001))
                        continue
                    outcomes = list(self._outcomes)
                    self._outcomes.clear()
                    return outcomes
                if self._closed:
                    # A task still running then writes its own outcome.
                    return None
                self._changed.wait(self._retry_at - now if self._outcomes else None)

    def _batching(self, now: float) -> bool:
        # Called with self._changed held: some task of ours is still running
        # (not waiting for its write) and the oldest outcome is young.
        return now < self._outcomes_since + BATCH_WINDOW and self._still_running()

    def _write_round(self, outcomes: list[Job]) -> None:
        """Write ``outcomes`` in one transaction, then release their workers (writer)."""
        from django_tasks_db.models import DBTaskResult

        using = router.db_for_write(DBTaskResult)
        try:
            with exclusive(using):
                write_outcomes(outcomes, using)
        except Exception as exc:
            self._failed("writer", exc)
            with self._changed:
                # The outcomes wait for the next try; their workers go on.
                self._outcomes[:0] = outcomes
                self._retry_at = time.monotonic() + self.poll
        else:
            self._errors.pop("writer", None)
        _between_rounds("djthreads durable writer")
        for job in outcomes:
            job.written.set()

    def _failed(self, thread: str, exc: Exception) -> None:
        # The database is down or the tables are missing: say so once.
        message = f"{type(exc).__name__}: {exc}"
        if self._errors.get(thread) != message:
            logger.error(
                "durable backend=%s %s cannot reach its tasks' table (is the database up "
                "and 'python manage.py migrate' run?); retrying every %.1fs",
                self.alias,
                thread,
                self.poll,
                exc_info=exc,
            )
        self._errors[thread] = message
        close_connections(f"djthreads durable {thread}")

    def _submit(self, row: Row) -> None:
        """Hand a claimed row to the default pool (dispatcher thread)."""
        job = Job(row, self.sender, self.ready)
        with self._changed:
            work = self._local.pop(job.id, None)
            local = work is not None
            if work is None:  # enqueued by another process
                work = Work(job, (), {}, fresh_context(), DURABLE, new_future(), ident=job.id)
            else:
                work.fn = job
            self._running[job.id] = work
        try:
            get_executor().submit_work(work)
        except Exception as exc:
            # The pool is full of other work (ON_FULL="raise") or shut down:
            # hand the row back for whoever has room.
            logger.warning("task=%s id=%s not started here: %s", job.name, job.id, exc)
            job.hand_back()
            with self._changed:
                del self._running[job.id]
                if local:  # still outstanding, READY again: some process runs it
                    work.fn = Waiting(job.name)
                    work.state = QUEUED
                    self._local[job.id] = work
            return
        work.future.add_done_callback(functools.partial(self._finished, work))

    def _finished(self, work: Work, future: concurrent.futures.Future[Any]) -> None:
        # Runs in the pool worker after the task (its connections closed), or
        # in the thread that cancelled the Future before the task started.
        if future.cancelled():
            _job(work).hand_back()
        with self._changed:
            self._running.pop(work.id, None)
            self._changed.notify_all()

    def _settle_local(self) -> None:
        """End the records of tasks enqueued here that other processes ran (dispatcher)."""
        from django_tasks_db.models import DBTaskResult

        with self._changed:
            ids = [key for key, work in self._local.items() if work.state != DEFERRED][:1000]
        if not ids:
            return
        statuses = {
            str(pk): status
            for pk, status in DBTaskResult.objects.filter(pk__in=ids).values_list("pk", "status")
        }
        ended = []
        with self._changed:
            for key in ids:
                status = statuses.get(key)  # None: the row was deleted
                work = self._local.get(key)
                if work is None or status == "READY":
                    continue
                if status == "RUNNING":
                    work.state = RUNNING  # claimed by another process
                    continue
                ended.append(self._local.pop(key))
        for work in ended:
            _end(work, ran_elsewhere=True)
            logger.debug("task=%s ran in another process", work.describe(False))

    def stop_claiming(self) -> None:
        """Claim nothing more; outcomes of running tasks are still written (any thread)."""
        with self._changed:
            self._claiming = False
            self._changed.notify_all()

    def drain(self, deadline: float, timeout: float) -> tuple[list[Work], list[Work]]:
        """Wait for running tasks until ``deadline``; settle the rest (caller's thread).

        Returns (handed back READY: claimed but never started, marked FAILED:
        still running). The dispatcher thread ends after the last write. The
        records of tasks enqueued here that no process ran yet end: their
        rows stay READY (or deferred) for the next process.
        """
        with self._changed:
            # A round under way may have claimed rows it has not handed to the
            # pool yet: they count as running once it ends.
            self._changed.wait_for(
                lambda: not self._in_round and not self._running and not self._outcomes,
                max(0.0, deadline - time.monotonic()),
            )
            local, self._local, self._due = list(self._local.values()), {}, []
            self._closed = True
            self._changed.notify_all()
        for work in local:
            _end(work, ran_elsewhere=False)
        for thread in (self._claimer, self._writer):
            if thread.is_alive() and thread is not threading.current_thread():
                thread.join(max(0.0, deadline - time.monotonic()) + 5.0)
        with self._changed:
            left = list(self._running.values())
        handed_back, failed = [], []
        for work in left:
            if work.future.cancel():  # never started; _finished hands it back
                handed_back.append(work)
            else:
                failed.append(work)
                why = (
                    "exited while the task was still running after "
                    f"DJTHREADS['SHUTDOWN_TIMEOUT'] ({timeout:g} s)"
                )
                fail_if_running(_job(work).row, lost_error(self.lease.worker_id, why))
        return handed_back, failed

    def waiting(self) -> tuple[int, list[str]]:
        """Count the READY rows of this alias and name the first 10 (caller's thread)."""
        from django_tasks_db.models import DBTaskResult

        rows = DBTaskResult.objects.filter(status="READY", backend_name=self.alias)
        count = rows.count()
        names = [f"{path} id={pk}" for pk, path in rows.values_list("id", "task_path")[:10]]
        return count, names


def _end(work: Work, *, ran_elsewhere: bool) -> None:
    # The record of a task enqueued here leaves the account: it ran in another
    # process (its Future succeeds), or this process stops following it
    # (cancelled; the row itself stays READY for the next process).
    _account.end(work)
    future = work.future
    if ran_elsewhere:
        if future.set_running_or_notify_cancel():
            future.set_result(None)
    elif future.cancel():
        future.set_running_or_notify_cancel()  # wake concurrent.futures.wait()


def _between_rounds(name: str) -> None:
    # A connection of Django's psycopg 3 pool goes back to the pool between
    # rounds (cheap, and the pool's slots are the workers'); any other stays
    # open, since opening one costs more than a round.
    from django_tasks_db.models import DBTaskResult

    conn = connections[router.db_for_write(DBTaskResult)]
    if conn.settings_dict["OPTIONS"].get("pool"):
        close_connections(name)


def _job(work: Work) -> Job:
    # The fn of a Work this dispatcher handed to the pool.
    return cast(Job, work.fn)


def _pool_size() -> int:
    try:
        return get_executor().max_workers
    except Exception:
        return 0


def _free_workers() -> int:
    """Default-pool workers neither running nor about to run a task (any thread)."""
    try:
        executor = get_executor()
    except Exception:
        # Bad DJTHREADS: the error is logged by whoever submits; claim nothing.
        return 0
    # A done Future's item is leaving the pool: its worker is free already.
    busy = sum(1 for future in executor.pending() if not future.done())
    return executor.max_workers - busy
