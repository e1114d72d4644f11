"""Module-level Django ``@task`` functions for the backend tests, and a waiter.

Task arguments must be JSON, so tests reach an Event through the ``gates`` and
``started`` registries by name.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
from collections.abc import Iterable, Iterator
from typing import Any

from django.db import connection, transaction
from django.utils import translation

from djthreads._tasks_compat import AnyTaskContext, AnyTaskResult, task, task_finished
from tests.models import Item
from tests.tasks import request_id


class Finished:
    """Collect task_finished signals, so tests wait for tasks without polling."""

    def __init__(self) -> None:
        self.ids: set[str] = set()
        self.condition = threading.Condition()

    def __call__(self, sender: object, task_result: AnyTaskResult, **kwargs: Any) -> None:
        with self.condition:
            self.ids.add(task_result.id)
            self.condition.notify_all()

    @classmethod
    @contextlib.contextmanager
    def connected(cls) -> Iterator[Finished]:
        collector = cls()
        task_finished.connect(collector, weak=False)
        try:
            yield collector
        finally:
            task_finished.disconnect(collector)

    def wait(self, results: Iterable[AnyTaskResult], timeout: float = 20) -> None:
        wanted = {result.id for result in results}
        with self.condition:
            done = self.condition.wait_for(lambda: wanted <= self.ids, timeout)
        assert done, f"{len(wanted - self.ids)} task(s) did not finish within {timeout} s"


_order = itertools.count()
gates: dict[str, threading.Event] = {}
started: dict[str, threading.Event] = {}


@task
def add(a: int, b: int) -> int:
    return a + b


@task
def fail(message: str) -> None:
    raise ValueError(message)


@task
def unserializable() -> object:
    return object()


@task
def ordered(label: str) -> int:
    """Return a process-wide sequence number: the order tasks ran in."""
    return next(_order)


@task
def hold(name: str) -> str:
    """Signal ``started[name]``, then wait for ``gates[name]``."""
    started[name].set()
    if not gates[name].wait(10):
        raise TimeoutError(f"gate {name!r} was never opened")
    return name


@task
def select_one() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        row = cursor.fetchone()
    assert row is not None
    return int(row[0])


@task
def create_item(name: str) -> int:
    return Item.objects.create(name=name).pk


@task(takes_context=True)
def with_context(context: AnyTaskContext, value: int) -> dict[str, Any]:
    return {"id": context.task_result.id, "attempt": context.attempt, "value": value}


@task
async def async_add(a: int, b: int) -> int:
    return a + b


@task
async def async_create_item(name: str) -> int:
    item = await Item.objects.acreate(name=name)
    return item.pk


@task
def thread_name() -> str:
    return threading.current_thread().name


@task
def carried() -> dict[str, str | None]:
    return {"request_id": request_id.get(), "language": translation.get_language()}


@task
def ingest(batch: str, size: int) -> int:
    """An example-style job step: write one batch of rows atomically, return the count."""
    with transaction.atomic():
        Item.objects.bulk_create(Item(name=f"{batch}-{n:03d}") for n in range(size))
    return size


@task
def interrupted() -> None:
    raise KeyboardInterrupt


@task
def fan_out(count: int) -> int:
    """Enqueue ``count`` children from inside a pool task, then wait for them all."""
    import djthreads

    children = [add.enqueue(n, n) for n in range(count)]
    djthreads.wait_for_tasks(timeout=10)
    total = 0
    for child in children:
        child.refresh()
        value = child.return_value
        assert value is not None
        total += value
    return total


soak_ran: dict[int, int] = {}
soak_lock = threading.Lock()


@task
def soak(key: int, fail: bool) -> int:
    """Count one run of ``key``; raise when ``fail``."""
    with soak_lock:
        soak_ran[key] = soak_ran.get(key, 0) + 1
    if fail:
        raise ValueError(f"soak {key}")
    return key
