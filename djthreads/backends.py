"""A Django Tasks backend that runs tasks on the djthreads pool.

``TASKS = {"default": {"BACKEND": "djthreads.backends.ThreadPoolBackend"}}``
works with ``django.tasks`` (Django >= 6.0) and with the ``django-tasks``
backport (Django 5.2). Tasks run in this process, in the default pool, with
the bounds, context copy and connection closing of ``run_async``; a
distributed backend (django-tasks-db, Celery, RQ) runs the same ``@task``
functions when one process is no longer enough.

Django builds one backend instance per thread, so everything that must be
shared — the queue (``djthreads._taskqueue``) and the result store here —
lives at process level.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import itertools
import logging
import operator
import os
import secrets
import threading
import traceback
import types
from collections.abc import Callable, Mapping
from typing import Any, cast

from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.db import DEFAULT_DB_ALIAS, connections
from django.dispatch import receiver
from django.utils import timezone

from djthreads import _taskqueue
from djthreads._account import BACKEND, Work
from djthreads._dispatch import hold_until_commit, in_transaction
from djthreads._run import capture
from djthreads._tasks_compat import (
    AnyTask,
    AnyTaskResult,
    BaseTaskBackend,
    TaskContext,
    TaskError,
    TaskResult,
    TaskResultDoesNotExist,
    TaskResultStatus,
    normalize_json,
    task_enqueued,
    task_finished,
    task_started,
)
from djthreads._worker import new_future
from djthreads.conf import get_settings

logger = logging.getLogger("djthreads.backends")

DEFAULT_OPTIONS: Mapping[str, Any] = {
    "ENQUEUE_ON_COMMIT": None,  # None: follow DJTHREADS['ON_COMMIT']
    "USING": DEFAULT_DB_ALIAS,
    "MAX_RESULTS": 1000,
}


_id_prefix = secrets.token_hex(8)
_id_numbers = itertools.count()


def _new_id() -> str:
    """A result id unique across processes: 16 random hex digits, 16 of a counter.

    get_random_string(32) reads the system's randomness 32 times a task (about
    100 us here); the random part is drawn once per process (and after fork).
    """
    return f"{_id_prefix}{next(_id_numbers):016x}"


def validate_options(alias: str, options: object) -> list[tuple[str, str]]:
    """Return ``(check id, message)`` for every problem in a backend's OPTIONS."""
    where = f"TASKS[{alias!r}]['OPTIONS']"
    if not isinstance(options, Mapping):
        return [("djthreads.E101", f"{where} must be a dict, got {options!r}.")]
    errors = [
        (
            "djthreads.E102",
            f"{where} has an unknown key {key!r}; known keys: {', '.join(DEFAULT_OPTIONS)}.",
        )
        for key in options
        if key not in DEFAULT_OPTIONS
    ]
    values = {**DEFAULT_OPTIONS, **options}
    if values["ENQUEUE_ON_COMMIT"] not in (None, True, False):
        errors.append(
            (
                "djthreads.E103",
                f"{where}['ENQUEUE_ON_COMMIT'] must be True or False, "
                f"got {values['ENQUEUE_ON_COMMIT']!r}.",
            )
        )
    # connections.settings, unlike settings.DATABASES, has Django's dummy
    # "default" when DATABASES is empty.
    if values["USING"] not in connections.settings:
        errors.append(
            (
                "djthreads.E104",
                f"{where}['USING'] must be a database alias from DATABASES "
                f"({', '.join(connections.settings)}), got {values['USING']!r}.",
            )
        )
    bound = values["MAX_RESULTS"]
    if isinstance(bound, bool) or not isinstance(bound, int) or bound < 1:
        errors.append(
            (
                "djthreads.E105",
                f"{where}['MAX_RESULTS'] must be a positive integer, got {bound!r}.",
            )
        )
    return errors


class _Results:
    """The results of one backend alias in this process, finished ones bounded."""

    def __init__(self) -> None:
        # By result id, the _Job of every result kept: its record and the lock
        # of the record's fields. Single dict operations, atomic: no lock.
        self.records: dict[str, _Job] = {}
        # Finished result ids, oldest first. A worker appends its own and
        # evicts at most one, the oldest, only while there are more than
        # MAX_RESULTS: each eviction pays for an append made before it, so the
        # store never drops below MAX_RESULTS finished results. Appending and
        # popping a deque are atomic, so no lock: one for all made every
        # worker queue behind whichever one the interpreter paused holding it.
        self.finished: collections.deque[str] = collections.deque()


_lock = threading.Lock()  # guards _stores
_stores: dict[str, _Results] = {}

# TaskResult's dataclass fields, a getter of all of them at once and a setter
# of each. A slotted dataclass (Django 6; the backport on Python >= 3.11) has a
# member descriptor per field, whose __set__ writes a frozen field for a third
# of object.__setattr__'s cost; copy.copy() would pickle the state, slower still.
_FIELDS = tuple(f.name for f in dataclasses.fields(TaskResult))
_values = operator.attrgetter(*_FIELDS)


def _setter(name: str) -> Callable[[Any, Any], None]:
    slot = TaskResult.__dict__.get(name)
    if isinstance(slot, types.MemberDescriptorType):
        return slot.__set__
    return lambda result, value: object.__setattr__(result, name, value)


_setters = tuple(_setter(name) for name in _FIELDS)


def _assemble(values: tuple[Any, ...]) -> AnyTaskResult:
    # A TaskResult from its field values, set as Django's own backends set
    # them (bypassing the frozen dataclass's __setattr__).
    result: AnyTaskResult = object.__new__(TaskResult)
    for set_field, value in zip(_setters, values):  # noqa: B905 (one value per field)
        set_field(result, value)
    return result


def _copy(record: AnyTaskResult) -> AnyTaskResult:
    # Callers get a copy: the worker updates the stored record, and refresh()
    # is how Django's API says a result catches up. Called with the job's lock held.
    result = _assemble(_values(record))
    object.__setattr__(result, "errors", list(record.errors))
    object.__setattr__(result, "worker_ids", list(record.worker_ids))
    return result


# TaskResult's fields in the order _ready_results() gives them (Django 6 and
# the backport alike). Should a Django version add or reorder fields, the
# check below sends enqueue() back to the TaskResult constructor.
_READY_FIELDS = (
    *("task", "id", "status", "enqueued_at", "started_at", "finished_at"),
    *("last_attempted_at", "args", "kwargs", "backend", "errors", "worker_ids"),
    "_return_value",
)
_assemble_ready = _FIELDS == _READY_FIELDS


def _ready_results(
    task: AnyTask, args: Any, kwargs: Any, alias: str
) -> tuple[AnyTaskResult, AnyTaskResult]:
    """A new READY result twice: the stored record and the caller's copy.

    The same values as ``TaskResult(...)`` would hold, arguments normalised
    by the same ``normalize_json`` (raising the same errors), but assembled
    field by field: about 1.5 µs each where the constructor costs 5.
    """
    result_id = _new_id()
    now = timezone.now()
    if not _assemble_ready:
        fields: dict[str, Any] = {
            "task": task,
            "id": result_id,
            "status": TaskResultStatus.READY,
            "enqueued_at": now,
            "started_at": None,
            "finished_at": None,
            "last_attempted_at": None,
            "args": args,
            "kwargs": kwargs,
            "backend": alias,
        }
        record: AnyTaskResult = TaskResult(**fields, errors=[], worker_ids=[])
        return record, TaskResult(**fields, errors=[], worker_ids=[])
    args = normalize_json(args) if args else []
    kwargs = normalize_json(kwargs) if kwargs else {}
    ready = (task, result_id, TaskResultStatus.READY, now, None, None, None, args, kwargs, alias)
    return _assemble((*ready, [], [], None)), _assemble((*ready, [], [], None))


_SCALARS = frozenset({str, int, float, bool, type(None)})
_thread = threading.local()  # .worker_id: this pool worker's entry in worker_ids


def _worker_id() -> str:
    try:
        return cast(str, _thread.worker_id)
    except AttributeError:
        # Per worker thread, computed once: pid:thread name. A forked child's
        # workers are new threads, so they compute their own.
        _thread.worker_id = f"{os.getpid()}:{threading.current_thread().name}"
        return cast(str, _thread.worker_id)


class _Job:
    """One enqueued task: runs in a pool worker, inside ``run_task``."""

    def __init__(
        self,
        record: AnyTaskResult,
        results: _Results,
        max_results: int,
        backend: type[BaseTaskBackend],
    ) -> None:
        self.record = record
        # The record's fields change in the worker and are copied by
        # get_result(): a lock per task, which no other task's worker takes
        # (with one for all, every worker queued behind whichever one the
        # interpreter paused holding it).
        self.lock = threading.Lock()
        self.results = results
        self.max_results = max_results
        self.backend = backend  # the signals' sender: the backend's own class
        self.name = record.task.module_path
        # The account names tasks by __module__/__qualname__ in its log lines.
        self.__module__ = record.task.func.__module__
        self.__qualname__ = record.task.func.__qualname__

    def __call__(self) -> None:
        """Run the task in this pool worker and record its outcome.

        The worker's database connections are closed by ``run_task`` after
        this returns. A coroutine task runs to completion through asgiref's
        ``async_to_sync`` (``Task.call``), so its ``sync_to_async`` database
        calls come back to this worker and are closed with it. Any exception
        — from the task, from a ``task_started`` receiver, even
        KeyboardInterrupt — ends the result FAILED with its class path and
        traceback and sends ``task_finished`` (whose Django receiver logs it);
        then it is re-raised, so waits and the test helpers see the failure.
        """
        record = self.record
        started = timezone.now()
        worker_id = _worker_id()
        with self.lock:
            object.__setattr__(record, "status", TaskResultStatus.RUNNING)
            object.__setattr__(record, "started_at", started)
            object.__setattr__(record, "last_attempted_at", started)
            record.worker_ids.append(worker_id)
        task = record.task
        try:
            task_started.send(sender=self.backend, task_result=record)
            if task.takes_context:
                value = task.call(TaskContext(task_result=record), *record.args, **record.kwargs)
            else:
                value = task.call(*record.args, **record.kwargs)
            if type(value) not in _SCALARS:  # which normalize_json returns as they are
                value = normalize_json(value)
        except BaseException as exc:
            self._fail(exc)
            # Sent inside the handler, as Django does: its receiver logs the
            # failure at ERROR with this exception's traceback.
            task_finished.send(sender=self.backend, task_result=record)
            raise
        self._finish(TaskResultStatus.SUCCESSFUL, value)
        task_finished.send(sender=self.backend, task_result=record)

    def not_started(self, exc: BaseException) -> None:
        """Record that the task will never run (the pool refused it or shut down)."""
        logger.error("task=%s id=%s not started: %s", self.name, self.record.id, exc)
        try:
            raise exc
        except BaseException:
            # Raised and caught so that Django's receiver logs it with exc_info.
            self._fail(exc)
            task_finished.send(sender=self.backend, task_result=self.record)

    def dropped(self, why: str) -> None:
        """Forget a task that will never run (no record is kept); log why."""
        self.results.records.pop(self.record.id, None)
        logger.warning("task=%s id=%s dropped: %s", self.name, self.record.id, why)

    def _fail(self, exc: BaseException) -> None:
        error = TaskError(
            exception_class_path=f"{type(exc).__module__}.{type(exc).__qualname__}",
            traceback="".join(traceback.format_exception(exc)),
        )
        self._finish(TaskResultStatus.FAILED, None, error)

    def _finish(
        self, status: TaskResultStatus, value: Any, error: TaskError | None = None
    ) -> None:
        record, results = self.record, self.results
        finished = timezone.now()
        # Counted among the finished before it reads finished: a caller that
        # saw it finished and enqueues more can never have those evict it
        # ahead of results that finished before it.
        order = results.finished
        order.append(record.id)
        if len(order) > self.max_results:
            results.records.pop(order.popleft(), None)
        with self.lock:
            if error is not None:
                record.errors.append(error)
            object.__setattr__(record, "_return_value", value)
            object.__setattr__(record, "finished_at", finished)
            object.__setattr__(record, "status", status)


def _rolled_back(results: _Results, result_id: str, name: str) -> None:
    # Runs in whichever thread dropped the on_commit callback (the rollback).
    results.records.pop(result_id, None)
    logger.info("task=%s id=%s dropped: its transaction rolled back", name, result_id)


class ThreadPoolBackend(BaseTaskBackend):
    """Run Django Tasks in this process, on the djthreads default pool.

    ``enqueue`` runs in the calling thread: it validates the task, stores a
    READY result and queues the task — at once, or, inside
    ``transaction.atomic()`` on ``OPTIONS['USING']`` with ENQUEUE_ON_COMMIT,
    when the outermost transaction commits (on rollback it never runs and its
    result disappears). A pool worker runs it, higher priority first, not
    before ``run_after``, and closes its database connections afterwards.

    Results live in this process only: ``get_result`` sees tasks enqueued
    here, keeps every unfinished one and the last ``OPTIONS['MAX_RESULTS']``
    finished ones per alias, and forgets them at restart. Ready tasks get
    DJTHREADS['SHUTDOWN_TIMEOUT'] at exit to run; deferred ones and what is
    left then are lost and named in a WARNING (the durable backend keeps them).
    Every task is in the account of outstanding work from enqueue (or commit)
    until it ends: ``djthreads.wait_for_tasks()`` and the test helpers wait for
    it. ``task_started``/``task_finished`` are sent with ``sender=type(self)``.
    """

    supports_defer = True
    supports_async_task = True
    supports_get_result = True
    supports_priority = True

    # Set per instance: Django builds new backends when TASKS changes.
    _checked: Mapping[str, Any] | None = None  # OPTIONS with defaults, once valid
    _valid: tuple[AnyTask, int] | None = None  # the last task validated, at which settings

    def _options(self) -> Mapping[str, Any]:
        options = self._checked
        if options is None:
            errors = validate_options(self.alias, self.options)
            if errors:
                raise ImproperlyConfigured(" ".join(message for _, message in errors))
            options = self._checked = {**DEFAULT_OPTIONS, **self.options}
        return options

    def _validate(self, task: AnyTask) -> None:
        # A Task is frozen and its validity depends only on this backend and
        # the settings, so enqueuing the same Task again (the usual case:
        # a module-level @task) skips the check; a setting change redoes it.
        if self._valid != (task, _settings_changes):
            self.validate_task(task)
            self._valid = (task, _settings_changes)

    def enqueue(self, task: AnyTask, args: Any, kwargs: Any) -> AnyTaskResult:
        """Queue ``task`` with ``args``/``kwargs`` and return its READY result.

        Raises ImproperlyConfigured for bad OPTIONS and QueueFullError when the
        queue is full and ``DJTHREADS['ON_FULL']`` is "raise".
        """
        self._validate(task)
        options = self._options()
        on_commit = options["ENQUEUE_ON_COMMIT"]
        if on_commit is None:
            on_commit = get_settings().ON_COMMIT
        record, snapshot = _ready_results(task, args, kwargs, self.alias)
        results = _stores.get(self.alias)
        if results is None:
            with _lock:
                results = _stores.setdefault(self.alias, _Results())
        job = _Job(record, results, options["MAX_RESULTS"], type(self))
        results.records[record.id] = job
        work = Work(job, (), {}, capture(), BACKEND, new_future(), ident=record.id)
        using = options["USING"]
        if in_transaction(on_commit, using):
            # On rollback the task never runs and its result disappears, as a
            # database row would.
            hold_until_commit(
                using,
                functools.partial(self._queue_after_commit, work),
                functools.partial(_rolled_back, results, record.id, job.name),
            )
        else:
            try:
                self._queue(work)
            except BaseException:
                results.records.pop(record.id, None)
                raise
        return snapshot

    def _queue_after_commit(self, work: Work) -> None:
        # Runs in the committing thread: raising would fail the code after the
        # user's commit, so a refusal is recorded on the task instead.
        try:
            self._queue(work)
        except Exception as exc:
            cast(_Job, work.fn).not_started(exc)

    def _queue(self, work: Work) -> None:
        record = cast(_Job, work.fn).record
        task = record.task
        task_enqueued.send(sender=type(self), task_result=record)
        _taskqueue.put(work, priority=task.priority, run_after=task.run_after)
        if logger.isEnabledFor(logging.DEBUG):  # naming the task is not free
            logger.debug("task=%s id=%s queued priority=%s", work.name, work.id, task.priority)

    def get_result(self, result_id: str) -> AnyTaskResult:
        """Return a copy of the result ``result_id`` as it is now (any thread).

        Raises TaskResultDoesNotExist for an id this process never enqueued on
        this alias, or whose finished result was evicted by MAX_RESULTS.
        """
        results = _stores.get(self.alias)
        job = None if results is None else results.records.get(result_id)
        if job is None:
            raise TaskResultDoesNotExist(
                f"No result {result_id!r} on task backend {self.alias!r} in this process: "
                "results are kept per process, and only the last "
                "OPTIONS['MAX_RESULTS'] finished ones."
            )
        with job.lock:
            return _copy(job.record)

    async def aget_result(self, result_id: str) -> AnyTaskResult:
        """See get_result(); no database access, so no thread hop."""
        return self.get_result(result_id)

    def check(self, **kwargs: Any) -> list[checks.CheckMessage]:
        """Report every invalid value or unknown key in this backend's OPTIONS."""
        return [
            checks.Error(message, id=check_id)
            for check_id, message in validate_options(self.alias, self.options)
        ]


_settings_changes = 0  # how many settings changed: validated tasks are checked again


@receiver(setting_changed)
def _reset_on_settings_change(*, setting: str, **kwargs: Any) -> None:
    # A new TASKS setting builds new backends; results of the old ones go.
    # Queued tasks still run (they hold their own records).
    global _settings_changes
    _settings_changes += 1
    if setting == "TASKS":
        with _lock:
            _stores.clear()


def _after_fork_in_child() -> None:
    # The parent's tasks do not run in the child; its lock may have been held;
    # its ids must not be repeated here.
    global _lock, _stores, _id_prefix, _id_numbers
    _lock = threading.Lock()
    _stores = {}
    _id_prefix = secrets.token_hex(8)
    _id_numbers = itertools.count()


os.register_at_fork(after_in_child=_after_fork_in_child)
