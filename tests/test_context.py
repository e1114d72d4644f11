"""The request's context reaches the task, and nothing a task sets leaks out of it.

Django's request handling keeps the language, time zone, urlconf and script
prefix in asgiref Locals; every way of running a task carries them.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import datetime
import json
from collections.abc import Callable, Iterator, Mapping
from typing import Any
from wsgiref.util import setup_testing_defaults

import pytest
from asgiref.sync import async_to_sync
from django.core.handlers.asgi import ASGIHandler
from django.core.handlers.wsgi import WSGIHandler
from django.test import override_settings
from django.urls import clear_script_prefix, set_script_prefix, set_urlconf
from django.utils import timezone, translation

import djthreads
from djthreads import DjangoExecutor, DjangoThread
from tests import tasks

pytestmark = pytest.mark.timeout(60)

EXPECTED = {
    "language": "fr",
    "timezone": "Asia/Tokyo",
    "urlconf": "tests.urls",
    "script_prefix": "/app/",
    "url": "/app/state/",
    "request_id": "req-7",
}


def defaults(**changed: Any) -> dict[str, Any]:
    """What a task sees when its submitter set nothing (no ROOT_URLCONF in the tests)."""
    return {
        "language": "en",
        "timezone": timezone.get_default_timezone_name(),
        "urlconf": None,
        "script_prefix": "/",
        "url": None,
        "request_id": "unset",
        **changed,
    }


def carried(state: dict[str, Any]) -> dict[str, Any]:
    return {key: state[key] for key in EXPECTED}


@contextlib.contextmanager
def request_state() -> Iterator[None]:
    """Set what a request sets (and a contextvar), as a view would; undo it after."""
    token = tasks.request_id.set("req-7")
    set_urlconf("tests.urls")
    set_script_prefix("/app/")
    try:
        with translation.override("fr"), timezone.override("Asia/Tokyo"):
            yield
    finally:
        set_urlconf(None)
        clear_script_prefix()
        tasks.request_id.reset(token)


def in_fresh_context(fn: Callable[[], Any]) -> Any:
    """Call ``fn`` in an empty context: nothing set, as in a new thread."""
    return contextvars.Context().run(fn)


def test_submit_carries_the_request_state() -> None:
    with request_state():
        future = djthreads.submit(tasks.request_state)
        assert carried(future.result(10)) == EXPECTED
        assert carried(tasks.request_state()) == EXPECTED


def test_run_async_and_map_carry_the_request_state() -> None:
    state_later = djthreads.run_async(on_commit=False)(tasks.request_state)
    with request_state():
        assert carried(state_later().result(10)) == EXPECTED
        states = djthreads.map(lambda _: tasks.request_state(), range(3), max_workers=2)
        chunked = djthreads.map(lambda _: tasks.request_state(), range(3), chunk_size=2)
    assert [carried(s) for s in states + chunked] == [EXPECTED] * 6


def test_a_coroutine_and_its_sync_to_async_calls_see_the_request_state() -> None:
    with request_state():
        seen = djthreads.submit(tasks.async_request_state).result(10)
    assert carried(seen["loop"]) == EXPECTED
    assert carried(seen["sync"]) == EXPECTED
    assert seen["sync"]["thread"].startswith("djthreads_")  # back in the worker


def test_a_fixed_offset_time_zone_is_carried() -> None:
    offset = datetime.timezone(datetime.timedelta(hours=5, minutes=30))
    with timezone.override(offset):
        state = djthreads.submit(tasks.request_state).result(10)
    assert state["timezone"] == offset.tzname(None) == "UTC+05:30"
    assert state["timezone"] != timezone.get_default_timezone_name()


def test_deactivated_time_zone_and_translation_are_carried() -> None:
    # deactivate_all(): no translation at all, get_language() is None.
    with request_state():
        timezone.deactivate()
        translation.deactivate_all()
        state = djthreads.submit(tasks.request_state).result(10)
    assert state["language"] is None
    assert state["timezone"] == timezone.get_default_timezone_name()


def test_one_worker_leaks_nothing_into_its_next_task_or_the_submitter() -> None:
    executor = DjangoExecutor(1)
    try:
        with request_state():
            first = executor.submit(tasks.activate_everything_else).result(10)
            submitter_after = tasks.request_state()
            again = executor.submit(tasks.request_state).result(10)
        # Fast path: a context where no asgiref Local was ever set.
        fresh = in_fresh_context(lambda: executor.submit(tasks.request_state).result(10))
        with translation.override("de"):  # slow path, only the language set
            only_language = executor.submit(tasks.request_state).result(10)
    finally:
        executor.shutdown()
    assert carried(first) == EXPECTED
    assert carried(submitter_after) == EXPECTED
    assert carried(again) == EXPECTED
    assert carried(fresh) == defaults()
    assert carried(only_language) == defaults(language="de")
    assert len({first["thread"], again["thread"], fresh["thread"]}) == 1  # one worker


def test_django_threads_carry_the_state_and_leak_nothing() -> None:
    def run(target: Callable[[], Any]) -> Any:
        thread = DjangoThread(target=target)
        thread.start()
        thread.join(10)
        assert thread.exitcode == 0
        return thread.result

    with request_state():
        first = run(tasks.activate_everything_else)
        submitter_after = tasks.request_state()
        second = run(tasks.request_state)
    fresh = in_fresh_context(lambda: run(tasks.request_state))
    assert carried(first) == EXPECTED
    assert carried(submitter_after) == EXPECTED
    assert carried(second) == EXPECTED
    assert carried(fresh) == defaults()


def test_eager_tasks_carry_the_state_and_leak_nothing_into_the_caller() -> None:
    with djthreads.eager(), request_state():
        first = djthreads.submit(tasks.activate_everything_else).result(0)
        caller_after = tasks.request_state()
        second = djthreads.submit(tasks.request_state).result(0)
    assert carried(first) == EXPECTED
    assert carried(caller_after) == EXPECTED
    assert carried(second) == EXPECTED

    def fresh_caller() -> tuple[dict[str, Any], dict[str, Any]]:
        with djthreads.eager():
            task = djthreads.submit(tasks.activate_everything_else).result(0)
        return task, tasks.request_state()

    task, caller = in_fresh_context(fresh_caller)
    assert carried(task) == defaults()
    assert carried(caller) == defaults()


@override_settings(ROOT_URLCONF="tests.urls")
def test_the_root_urlconf_set_by_the_handler_still_resolves_in_the_task() -> None:
    set_urlconf("tests.urls")  # what BaseHandler does on every request
    try:
        state = djthreads.submit(tasks.request_state).result(10)
    finally:
        set_urlconf(None)
    assert state["url"] == "/state/"


def wsgi_get(path: str, script_name: str) -> dict[str, Any]:
    """Serve one GET with Django's WSGIHandler (the test Client skips the script prefix)."""
    environ: dict[str, Any] = {}
    setup_testing_defaults(environ)
    environ.update(PATH_INFO=path, SCRIPT_NAME=script_name, HTTP_HOST="testserver")
    statuses: list[str] = []

    def start_response(
        status: str, headers: list[tuple[str, str]], exc_info: Any = None
    ) -> Callable[[bytes], object]:
        statuses.append(status)
        return lambda data: None

    body = b"".join(WSGIHandler()(environ, start_response))
    assert statuses == ["200 OK"], body
    return dict(json.loads(body))


@pytest.mark.django_db(transaction=True)
@override_settings(ROOT_URLCONF="tests.urls")
def test_a_wsgi_request_reaches_the_task() -> None:
    # In a context of its own: the handler leaves its script prefix set behind it.
    state = in_fresh_context(lambda: wsgi_get("/sync-state/", "/app"))
    assert state["script_prefix"] == "/app/"
    assert state["url"] == "/app/state/"
    assert state["thread"].startswith("djthreads_")


async def asgi_get(path: str, root_path: str) -> dict[str, Any]:
    """Serve one GET with Django's ASGIHandler (AsyncClient cannot set root_path)."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "root_path": root_path,
        "query_string": b"",
        "headers": [(b"host", b"testserver")],
        "server": ("testserver", 80),
        "client": ("127.0.0.1", 0),
    }
    sent: list[Mapping[str, Any]] = []
    responded = asyncio.Event()
    requested = False

    async def receive() -> dict[str, Any]:
        nonlocal requested
        if not requested:
            requested = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await responded.wait()  # the client stays until the response is complete
        return {"type": "http.disconnect"}

    async def send(message: Mapping[str, Any]) -> None:
        sent.append(message)
        if message["type"] == "http.response.body" and not message.get("more_body"):
            responded.set()

    await asyncio.wait_for(ASGIHandler()(scope, receive, send), 20)
    start, *bodies = sent
    body = b"".join(m.get("body", b"") for m in bodies)
    assert start["status"] == 200, body
    return dict(json.loads(body))


@pytest.mark.django_db(transaction=True)
@override_settings(ROOT_URLCONF="tests.urls")
def test_an_asgi_request_reaches_the_task_its_async_view_awaits() -> None:
    # tests.urls.state_view: activates a time zone, submits, awaits the Future.
    state = in_fresh_context(lambda: async_to_sync(asgi_get)("/app/state/", "/app"))
    assert state["timezone"] == "Asia/Tokyo"
    assert state["script_prefix"] == "/app/"
    assert state["url"] == "/app/state/"
    assert state["thread"].startswith("djthreads_")


def test_each_submit_sees_the_state_as_it_is_then_in_the_same_thread() -> None:
    # One submitting thread, the state changing between submits (the state
    # read for one submit is reused for the next only while nothing changed).
    def seen() -> dict[str, Any]:
        state = djthreads.submit(tasks.request_state).result(10)
        return {key: state[key] for key in ("language", "timezone", "script_prefix")}

    def sequence() -> list[dict[str, Any]]:
        results = []
        with translation.override("fr"):
            results.append(seen())
            translation.activate("de")
            results.append(seen())
            with timezone.override("Asia/Tokyo"):
                results.append(seen())
            set_script_prefix("/x/")
            results.append(seen())
            clear_script_prefix()
            translation.deactivate()
            results.append(seen())
            with override_settings(LANGUAGE_CODE="fr"):
                results.append(seen())
        return results

    utc = timezone.get_default_timezone_name()
    assert in_fresh_context(sequence) == [
        {"language": "fr", "timezone": utc, "script_prefix": "/"},
        {"language": "de", "timezone": utc, "script_prefix": "/"},
        {"language": "de", "timezone": "Asia/Tokyo", "script_prefix": "/"},
        {"language": "de", "timezone": utc, "script_prefix": "/x/"},
        {"language": "en", "timezone": utc, "script_prefix": "/"},
        {"language": "fr", "timezone": utc, "script_prefix": "/"},
    ]


def test_each_task_gets_the_very_objects_its_submitter_holds() -> None:
    # Tasks submitted from an unchanged context share one snapshot of it: a
    # value replaced by an equal but distinct object is a change all the same.
    first, second = "".join(["req", "-8"]), "".join(["req", "-8"])
    assert first == second
    assert first is not second

    def sequence() -> list[str]:
        tasks.request_id.set(first)
        seen = [djthreads.submit(tasks.current_request_id).result(10)]
        seen.append(djthreads.submit(tasks.current_request_id).result(10))
        tasks.request_id.set(second)
        seen.append(djthreads.submit(tasks.current_request_id).result(10))
        return seen

    seen = in_fresh_context(sequence)
    assert [value is first for value in seen] == [True, True, False]
    assert seen[2] is second
