"""pytest plugin of djthreads, registered through the ``pytest11`` entry point.

Fixtures for eager mode (``djthreads_eager``) and for tests that run real
threads (``djthreads_threads``), and the ``djthreads`` marker. Django's test
machinery is imported only when a fixture is used, so the plugin loads in
projects that do not configure Django.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from djthreads.test import TaskTracker

_MARKER = (
    "djthreads(timeout=10.0, expected=()): check the test's djthreads tasks at "
    "teardown (requests the djthreads_threads fixture, and so transactional_db): "
    "wait up to `timeout` seconds for them, and let tasks raise the exception "
    "classes in `expected` without failing the test."
)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", _MARKER)


def pytest_itemcollected(item: pytest.Item) -> None:
    """Give a test marked ``@pytest.mark.djthreads`` the djthreads_threads fixture."""
    names = getattr(item, "fixturenames", None)
    if names is None or item.get_closest_marker("djthreads") is None:
        return
    # At collection, not from an autouse fixture: pytest-django chooses
    # between db and transactional_db from the names the test requests, and
    # requesting transactional_db later would get a db wrapped in a transaction.
    for name in ("transactional_db", "djthreads_threads"):
        if name not in names:
            names.append(name)


@pytest.fixture
def djthreads_eager() -> Iterator[None]:
    """Run ``run_async``/``submit`` calls inline in the test's thread.

    Use it with the ``db`` fixture: a task runs at once inside the test's
    transaction, sees the test's uncommitted rows, and leaves the test's
    connection open; it returns a completed Future, and its exception is
    re-raised in the test. The transaction pytest-django wraps around the test
    does not count for on_commit; a task submitted inside an atomic block of
    the code under test runs when Django runs the on_commit callbacks
    (``django_capture_on_commit_callbacks(execute=True)``). ``DjangoThread``
    still starts a real thread. Same as ``with djthreads.eager():``.
    """
    from djthreads import eager

    with eager():
        yield


def _marker_options(
    timeout: float = 10.0, expected: Any = ()
) -> tuple[float, tuple[type[BaseException], ...]]:
    """Validate ``@pytest.mark.djthreads(...)``: a wrong argument fails with Python's message."""
    classes = expected if isinstance(expected, tuple) else (expected,)
    if not all(isinstance(c, type) and issubclass(c, BaseException) for c in classes):
        raise TypeError(
            "@pytest.mark.djthreads(expected=...) takes an exception class or a tuple of "
            f"exception classes, got {expected!r}."
        )
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
        raise TypeError(
            f"@pytest.mark.djthreads(timeout=...) takes a number of seconds > 0, got {timeout!r}."
        )
    return float(timeout), classes


def _databases(request: pytest.FixtureRequest) -> Iterable[str]:
    from django.db import connections

    marker = request.node.get_closest_marker("django_db")
    databases = marker.kwargs.get("databases") if marker is not None else None
    if databases is None:
        return ["default"]
    return list(connections) if databases == "__all__" else list(databases)


@pytest.fixture
def djthreads_threads(
    request: pytest.FixtureRequest, transactional_db: None
) -> Iterator[TaskTracker]:
    """Run the test with real djthreads threads, and check them at teardown.

    Requests ``transactional_db``: tasks in pool workers and DjangoThreads use
    their own connections and see the test's committed rows. At teardown,
    before pytest-django flushes the database, waits up to 10 seconds for the
    default pool's tasks and the DjangoThreads started during the test, then
    fails (an error at teardown) naming the tasks still running, showing the
    traceback of each task exception the test did not expect, and naming each
    thread that left a database connection open (which it then closes, so the
    test database can be flushed and dropped).

    Returns a ``djthreads.test.TaskTracker``: ``with
    djthreads_threads.assert_task_raises(ValueError) as raised:`` expects a task
    started in the block to raise (it waits for the tasks at the end of the
    block); ``djthreads_threads.assert_no_leaked_connections()`` checks for
    leaked connections now. ``@pytest.mark.djthreads(timeout=..., expected=(...))``
    sets the wait and the exception classes any task may raise. Refuses
    SQLite's in-memory test database, which threads cannot share.
    """
    from djthreads.test import TaskTracker
    from djthreads.test._connections import check_databases

    marker = request.node.get_closest_marker("djthreads")
    timeout, expected = (
        _marker_options(*marker.args, **marker.kwargs) if marker is not None else (10.0, ())
    )
    databases = _databases(request)
    check_databases(databases, "The djthreads_threads fixture")
    tracker = TaskTracker(
        databases,
        timeout=timeout,
        expected=tuple(expected),
        api="djthreads_threads.assert_task_raises",
        hint=", or raise the wait with @pytest.mark.djthreads(timeout=...)",
        expect_hint=" or list the class in @pytest.mark.djthreads(expected=(...))",
    )
    tracker.start()
    yield tracker
    message = tracker.finish()
    if message:
        pytest.fail(message, pytrace=False)
