"""The djthreads pytest plugin, loaded from the installed wheel's entry point."""

from __future__ import annotations

import threading

import pytest
from smokeapp.models import Note
from smokeapp.tasks import add_note, explode

from djthreads.test import TaskTracker


def test_the_plugin_is_registered_by_its_entry_point(pytestconfig: pytest.Config) -> None:
    plugin = pytestconfig.pluginmanager.get_plugin("djthreads")
    assert plugin is not None
    assert plugin.__name__ == "djthreads.pytest_plugin"


@pytest.mark.django_db
def test_djthreads_eager_runs_the_task_in_the_test_thread(djthreads_eager: None) -> None:
    future = add_note("eager")
    assert future.done()
    assert future.result(timeout=0) == threading.current_thread().name
    assert Note.objects.filter(text="eager").exists()


def test_djthreads_threads_runs_real_threads(djthreads_threads: TaskTracker) -> None:
    name = add_note("threaded").result(timeout=30)
    assert name != threading.current_thread().name
    assert Note.objects.filter(text="threaded").exists()
    djthreads_threads.assert_no_leaked_connections()


def test_djthreads_threads_expects_a_task_error(djthreads_threads: TaskTracker) -> None:
    with djthreads_threads.assert_task_raises(ValueError):
        explode("on purpose")


@pytest.mark.djthreads(timeout=30, expected=(ValueError,))
def test_the_djthreads_marker_allows_an_expected_error() -> None:
    with pytest.raises(ValueError, match="marked"):
        explode("marked").result(timeout=30)
