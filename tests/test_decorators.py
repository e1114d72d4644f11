from __future__ import annotations

import concurrent.futures
import logging
import re
import threading
from typing import Any, assert_type

import pytest
from django.db import connections
from django.test import override_settings
from django.utils import translation

import djthreads
from djthreads import run_async, submit
from djthreads.signals import task_finished, task_started
from tests import tasks

pytestmark = pytest.mark.timeout(60)


@run_async
def double(x: int) -> int:
    return x * 2


@run_async(on_commit=False, using="default")
def triple(x: int) -> int:
    return x * 3


def test_bare_and_configured_decorator_return_futures() -> None:
    future = double(21)
    assert isinstance(future, concurrent.futures.Future)
    assert future.result(10) == 42
    assert triple(2).result(10) == 6


def test_wrapped_and_metadata_are_kept() -> None:
    assert double.__wrapped__(5) == 10  # type: ignore[attr-defined]
    assert double.__name__ == "double"
    assert double.__qualname__ == "double"


def test_runs_in_a_pool_worker() -> None:
    name = submit(tasks.thread_name).result(10)
    assert name.startswith("djthreads_")
    assert name != threading.current_thread().name


@pytest.mark.parametrize("value", [3, "text", None])
def test_non_callable_is_refused(value: Any) -> None:
    with pytest.raises(TypeError, match="run_async expects a function"):
        run_async(on_commit=True)(value)


def test_bad_options_are_refused() -> None:
    with pytest.raises(TypeError, match="on_commit"):
        run_async(on_commit="yes")  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="database alias"):
        run_async(using=1)  # type: ignore[call-overload]


def test_exception_is_set_on_future_and_logged_with_name(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.ERROR, logger="djthreads"):
        future = submit(tasks.fail, "nope")
        with pytest.raises(ValueError, match="nope"):
            future.result(10)
    [record] = [r for r in caplog.records if r.name == "djthreads"]
    assert re.fullmatch(
        r"task=tests\.tasks\.fail id=\w+ args=\('nope',\) failed", record.getMessage()
    )
    assert record.exc_info is not None


def test_signals_are_sent_from_the_worker_thread() -> None:
    events: list[tuple[str, str, Any]] = []

    def started(**kwargs: Any) -> None:
        events.append(("started", threading.current_thread().name, kwargs["args"]))

    def finished(**kwargs: Any) -> None:
        events.append(("finished", threading.current_thread().name, kwargs["result"]))

    task_started.connect(started)
    task_finished.connect(finished)
    try:
        assert submit(tasks.add, 1, 2).result(10) == 3
    finally:
        task_started.disconnect(started)
        task_finished.disconnect(finished)
    assert [e[0] for e in events] == ["started", "finished"]
    assert all(e[1].startswith("djthreads_") for e in events)
    assert events[0][2] == (1, 2)
    assert events[1][2] == 3


def test_failing_receiver_is_logged_and_does_not_fail_the_task(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(**kwargs: Any) -> None:
        raise RuntimeError("receiver broke")

    task_started.connect(broken)
    try:
        with caplog.at_level(logging.ERROR, logger="djthreads"):
            assert submit(tasks.add, 1, 1).result(10) == 2
    finally:
        task_started.disconnect(broken)
    assert any("signal receiver" in r.getMessage() for r in caplog.records)


def test_contextvars_captured_at_submit_time() -> None:
    token = tasks.request_id.set("first")
    try:
        future = submit(tasks.current_request_id)
        tasks.request_id.set("second")
        assert future.result(10) == "first"
    finally:
        tasks.request_id.reset(token)


@override_settings(DJTHREADS={"MAX_WORKERS": 1})
def test_contextvar_set_in_task_does_not_leak_into_later_task() -> None:
    def set_it() -> None:
        tasks.request_id.set("from-task")

    submit(set_it).result(10)
    assert submit(tasks.current_request_id).result(10) == "unset"
    assert tasks.request_id.get() == "unset"


def test_submitter_language_applies_in_the_task() -> None:
    with translation.override("fr"):
        future = submit(tasks.current_language)
    assert future.result(10) == "fr"
    with translation.override("de"):
        assert submit(tasks.current_language).result(10) == "de"


@override_settings(DJTHREADS={"MAX_WORKERS": 1})
def test_language_activated_in_task_leaks_nowhere() -> None:
    activated = threading.Event()
    release = threading.Event()

    def activate_german() -> None:
        translation.activate("de")
        activated.set()
        release.wait(10)

    with translation.override("fr"):
        future = submit(activate_german)
        assert activated.wait(10)
        # Not into the submitter while the task runs...
        assert translation.get_language() == "fr"
        release.set()
        future.result(10)
        assert translation.get_language() == "fr"
    # ...nor into a later task on the same (only) worker thread.
    with translation.override("en"):
        assert submit(tasks.current_language).result(10) == "en"
    assert submit(tasks.current_language).result(10) == translation.get_language()


def test_deactivated_translation_is_carried() -> None:
    with translation.override(None):
        assert submit(tasks.current_language).result(10) is None


def test_wait_for_tasks_waits_and_times_out() -> None:
    release = threading.Event()
    future = submit(tasks.wait_for, release)
    with pytest.raises(TimeoutError, match="tests.tasks.wait_for"):
        djthreads.wait_for_tasks(timeout=0.1)
    release.set()
    djthreads.wait_for_tasks(timeout=10)
    assert future.done()


def test_get_executor_is_process_wide_and_lazy() -> None:
    assert djthreads.get_executor() is djthreads.get_executor()
    assert djthreads.get_executor().max_workers == 8


def test_static_types_follow_the_function() -> None:
    # Checked by mypy --strict on this file: the wrapper keeps the parameters
    # (ParamSpec) and returns Future[R].
    assert_type(double(2), concurrent.futures.Future[int])
    assert_type(triple(3), concurrent.futures.Future[int])
    # With the parameters lost this ignore would be unused, an error under --strict.
    double("x").result(10)  # type: ignore[arg-type]
    assert_type(submit(tasks.add, 1, 2), concurrent.futures.Future[int])


@pytest.mark.django_db(transaction=True)
def test_pool_task_closes_its_connection() -> None:
    def work() -> tuple[Any, bool]:
        tasks.select_one()
        wrapper = connections["default"]
        return wrapper, wrapper.connection is not None

    wrapper, open_during = submit(work).result(10)
    assert open_during is True
    # Closed in the worker's finally, before the next task: no wait needed
    # beyond the pool draining.
    djthreads.wait_for_tasks(timeout=10)
    assert wrapper.connection is None


def test_default_language_from_a_context_that_never_activated_one() -> None:
    # A fresh thread starts with an empty context: nothing activated there.
    results: list[str | None] = []

    def submit_from_fresh_thread() -> None:
        results.append(submit(tasks.current_language).result(10))

    with translation.override("de"):  # the main thread's choice must not matter
        thread = threading.Thread(target=submit_from_fresh_thread)
        thread.start()
        thread.join(10)
    assert results == ["en"]  # settings.LANGUAGE_CODE


@override_settings(DJTHREADS={"MAX_WORKERS": 1})
def test_fresh_context_task_after_an_activating_task_gets_the_default() -> None:
    def activate_french() -> None:
        translation.activate("fr")

    results: list[str | None] = []

    def from_fresh_thread() -> None:
        submit(activate_french).result(10)
        results.append(submit(tasks.current_language).result(10))

    thread = threading.Thread(target=from_fresh_thread)
    thread.start()
    thread.join(10)
    assert results == ["en"]
