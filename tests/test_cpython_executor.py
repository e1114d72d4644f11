"""CPython's own thread-pool executor tests, run against DjangoExecutor.

The stdlib package ``test.test_concurrent_futures`` (Python 3.13) is imported
at run time, never copied: each of its ThreadPool test classes is subclassed
here with ``executor_type = DjangoExecutor`` and collected by pytest like any
unittest TestCase. Shims adapt the tests, never the library:

- Tests that name the stdlib's classes themselves (``futures.ThreadPoolExecutor(...)``,
  ``Future()``, ``create_future()``) get DjangoExecutor and the Future class
  djthreads hands out under those names, for the test's duration (the test
  module's globals are patched), so they test djthreads instead of passing on
  the stdlib's own pool.
- Tests that run a fresh interpreter (``assert_python_ok('-c', ...)``) get a
  child whose ``from concurrent.futures import DjangoExecutor`` (or
  ``ThreadPoolExecutor``) line sets Django up and imports djthreads' pool at
  that very line, so the order of atexit hooks the tests rely on is the one a
  real program has.
- The failing-initializer test looks for the traceback on the ``djthreads``
  logger, where DjangoExecutor logs it with every other event of the library.
- ``logging.lastResort`` handles the ``concurrent.futures`` logger, as it does
  in a plain unittest run, where pytest's log capture would take its records.

What still differs is listed in DIFFERENCES with its reason (each is a strict
expected failure: the day it passes, the list must shrink) and, with the same
reasons, in docs/_parts/executor.md.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import functools
import importlib
import importlib.util
import logging
import sys
import types
import unittest
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import django
import pytest
from django.conf import settings

from djthreads import DjangoExecutor
from djthreads._worker import new_future

PACKAGE = "test.test_concurrent_futures"
# A tuple built at run time: a version check mypy reads would hide the module on 3.11.
if tuple(sys.version_info[:2]) < (3, 13) or importlib.util.find_spec(PACKAGE) is None:
    pytest.skip(
        "the stdlib test package of 3.13 is the reference (Python "
        f"{sys.version_info.major}.{sys.version_info.minor} ships no "
        "test.test_concurrent_futures package)",
        allow_module_level=True,
    )
if settings.DATABASES["default"]["ENGINE"] != "django.db.backends.sqlite3" or (
    django.VERSION[:2] != (6, 1)
):
    pytest.skip(
        "CPython's suite opens no database connection and spends 40-70 s in its "
        "own sleeps and child interpreters: it runs once per make test, in the "
        "Python 3.13 + Django 6.1 SQLite run",
        allow_module_level=True,
    )

pytestmark = [
    pytest.mark.timeout(60),
    # test_hang_global_shutdown_lock forks process pools while workers run, on purpose.
    pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning"),
]

# Test module -> the ThreadPool classes it defines (or create_executor_tests makes).
SUITES = {
    "test_thread_pool": ["ThreadPoolExecutorTest"],
    "test_shutdown": ["ThreadPoolShutdownTest"],
    "test_wait": ["ThreadPoolWaitTests"],
    "test_as_completed": ["ThreadPoolAsCompletedTest"],
    "test_init": ["ThreadPoolInitializerTest", "ThreadPoolFailingInitializerTest"],
    "test_future": ["FutureTests"],
}

# "Class.test" -> why DjangoExecutor differs. Run as strict expected failures.
DIFFERENCES: dict[str, str] = {
    "ThreadPoolExecutorTest.test_default_workers": (
        "max_workers=None means DJTHREADS['MAX_WORKERS'] (default 8), one setting "
        "sized to the database's connection budget, not min(32, CPUs + 4)"
    ),
    "ThreadPoolShutdownTest.test_thread_names_default": (
        "workers are named DjangoExecutor-<n>_<k>, not ThreadPoolExecutor-<n>_<k>"
    ),
}

# "Class.test" -> why it runs adapted (it passes, checking what DjangoExecutor does instead).
ADAPTED: dict[str, str] = {
    "ThreadPoolFailingInitializerTest.test_initializer": (
        "the initializer's traceback is logged at CRITICAL on the djthreads logger, "
        "where every djthreads event goes, not on concurrent.futures"
    ),
}

# The class of every Future djthreads hands out (it can run a queued task of
# its pool in a worker that waits for it).
TASK_FUTURE = type(new_future())
ROOT = Path(__file__).resolve().parent.parent


class _FuturesWithDjangoExecutor(types.ModuleType):
    """``concurrent.futures`` as a test module sees it: ThreadPoolExecutor is DjangoExecutor."""

    ThreadPoolExecutor = DjangoExecutor
    Future = TASK_FUTURE

    def __getattr__(self, name: str) -> Any:
        return getattr(concurrent.futures, name)


_FUTURES = _FuturesWithDjangoExecutor("concurrent.futures")
_FUTURES_LOGGER = logging.getLogger("concurrent.futures")

# The child's import line, as CPython's tests write it, and what it becomes:
# Django set up and djthreads imported right there (djthreads registers its
# exit drain when it is imported, so the test's own atexit hooks keep their order).
_CHILD_IMPORTS = [
    f"from concurrent.futures import {name}" for name in ("DjangoExecutor", "ThreadPoolExecutor")
]
_CHILD_PRELUDE = f"import sys; sys.path.insert(0, {str(ROOT)!r})\n"


def _child_code(code: str) -> str:
    """Rewrite a ``-c`` script of CPython's tests to run DjangoExecutor."""
    found = [line for line in _CHILD_IMPORTS if line in code]
    assert found, f"no executor import to adapt in the child's code:\n{code}"
    for line in found:
        name = line.rsplit(" ", 1)[1]
        code = code.replace(
            line, f"import django; django.setup(); from djthreads import DjangoExecutor as {name}"
        )
    return _CHILD_PRELUDE + code


def _adapt_assert_python(real: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(real)
    def assert_python(*args: str, **env_vars: Any) -> Any:
        if len(args) == 2 and args[0] == "-c":
            args = ("-c", _child_code(args[1]))
        return real(*args, **env_vars)

    return assert_python


def _expected_failure(test: Callable[..., Any], reason: str) -> Callable[..., Any]:
    @functools.wraps(test)
    def method(self: unittest.TestCase) -> None:
        test(self)

    marked: Callable[..., Any] = pytest.mark.xfail(
        reason=reason, strict=True, raises=AssertionError
    )(method)
    return marked


@contextlib.contextmanager
def _assert_logged_on_djthreads(self: Any, msg: str) -> Iterator[None]:
    # See ADAPTED: the stdlib test's own check, on the djthreads logger.
    with self.assertLogs("djthreads", "CRITICAL") as cm:
        yield
    assert any(msg in line for line in cm.output), cm.output


def _make(module_name: str, class_name: str) -> type:
    module = importlib.import_module(f"{PACKAGE}.{module_name}")
    util = importlib.import_module(f"{PACKAGE}.util")
    base: type = getattr(module, class_name)
    replacements: list[tuple[types.ModuleType, str, Any]] = [
        (module, "futures", _FUTURES),
        (module, "Future", TASK_FUTURE),
        (util, "Future", TASK_FUTURE),  # create_future()
    ]
    if hasattr(module, "assert_python_ok"):
        replacements.append(
            (module, "assert_python_ok", _adapt_assert_python(module.assert_python_ok))
        )
    patches = [
        mock.patch.object(target, name, value)
        for target, name, value in replacements
        if hasattr(target, name)
    ]

    def set_up(self: Any) -> None:
        for patch in patches:
            patch.start()
            self.addCleanup(patch.stop)
        # pytest's log capture handlers on the root logger take the records
        # that reach logging.lastResort (the current sys.stderr) in a plain
        # unittest run, where the callback tests of test_future look for them.
        assert logging.lastResort is not None
        _FUTURES_LOGGER.addHandler(logging.lastResort)
        self.addCleanup(_FUTURES_LOGGER.removeHandler, logging.lastResort)
        base.setUp(self)  # type: ignore[attr-defined]

    namespace: dict[str, Any] = {
        "executor_type": DjangoExecutor,
        "setUp": set_up,
        "__module__": __name__,
        "__qualname__": class_name,
    }
    if f"{class_name}.test_initializer" in ADAPTED:
        namespace["_assert_logged"] = _assert_logged_on_djthreads
    for key, reason in DIFFERENCES.items():
        owner, test_name = key.split(".")
        if owner == class_name:
            namespace[test_name] = _expected_failure(getattr(base, test_name), reason)
    return type(class_name, (base,), namespace)


for _module_name, _class_names in SUITES.items():
    for _class_name in _class_names:
        globals()[_class_name] = _make(_module_name, _class_name)


def test_every_listed_difference_names_a_test_and_is_documented() -> None:
    docs = (ROOT / "docs" / "_parts" / "executor.md").read_text()
    for key in [*DIFFERENCES, *ADAPTED]:
        class_name, test_name = key.split(".")
        assert callable(getattr(globals()[class_name], test_name)), key
        assert f"`{key}`" in docs, f"{key} is not in docs/_parts/executor.md"
