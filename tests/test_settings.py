from __future__ import annotations

import threading
from typing import Any

import pytest
from django.apps import apps
from django.core.checks import run_checks
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

import djthreads
from djthreads import QueueFullError
from djthreads.checks import check_settings
from tests import tasks

pytestmark = pytest.mark.timeout(60)

BAD = [
    (
        {"MAX_WORKERS": 0},
        "djthreads.E003",
        "DJTHREADS['MAX_WORKERS'] must be a positive integer, got 0.",
    ),
    ({"MAX_WORKERS": True}, "djthreads.E003", "got True"),
    (
        {"MAX_QUEUE": -1},
        "djthreads.E004",
        "DJTHREADS['MAX_QUEUE'] must be an integer >= 0, got -1.",
    ),
    ({"ON_FULL": "drop"}, "djthreads.E005", "must be 'block' or 'raise', got 'drop'"),
    ({"ON_COMMIT": "yes"}, "djthreads.E006", "must be True or False, got 'yes'"),
    ({"SHUTDOWN_TIMEOUT": -1}, "djthreads.E007", "must be a number of seconds >= 0, got -1"),
    ({"THREAD_NAME_PREFIX": ""}, "djthreads.E008", "must be a non-empty string"),
    ({"MAX_WORKER": 4}, "djthreads.E002", "unknown key 'MAX_WORKER'"),
]


@pytest.mark.parametrize(("value", "check_id", "message"), BAD)
def test_check_and_executor_report_the_same_error(
    value: dict[str, Any], check_id: str, message: str
) -> None:
    with override_settings(DJTHREADS=value):
        errors = check_settings()
        assert [e.id for e in errors] == [check_id]
        assert message in errors[0].msg
        with pytest.raises(ImproperlyConfigured) as info:
            djthreads.get_executor()
        assert str(info.value) == errors[0].msg


def test_not_a_dict() -> None:
    with override_settings(DJTHREADS=[1]):
        assert [e.id for e in check_settings()] == ["djthreads.E001"]


def test_registered_with_the_checks_framework() -> None:
    # Only djthreads' app: Django 6.1's model checks would query the database.
    ours = [apps.get_app_config("djthreads")]
    with override_settings(DJTHREADS={"ON_FULL": "drop"}):
        assert "djthreads.E005" in [e.id for e in run_checks(app_configs=ours)]
    assert not [e for e in run_checks(app_configs=ours) if (e.id or "").startswith("djthreads")]


def test_valid_settings_pass() -> None:
    with override_settings(
        DJTHREADS={
            "MAX_WORKERS": 2,
            "MAX_QUEUE": 0,
            "ON_FULL": "raise",
            "ON_COMMIT": False,
            "SHUTDOWN_TIMEOUT": 5,
            "THREAD_NAME_PREFIX": "jobs",
        }
    ):
        assert check_settings() == []
        executor = djthreads.get_executor()
        assert (executor.max_workers, executor.max_queue, executor.on_full) == (2, 0, "raise")
        assert djthreads.submit(tasks.thread_name).result(10).startswith("jobs_")


def test_override_settings_replaces_executor_and_old_one_drains() -> None:
    old = djthreads.get_executor()
    release = threading.Event()
    running = djthreads.submit(tasks.wait_for, release)
    with override_settings(DJTHREADS={"MAX_WORKERS": 1, "MAX_QUEUE": 0, "ON_FULL": "raise"}):
        new = djthreads.get_executor()
        assert new is not old
        blocker = threading.Event()
        first = djthreads.submit(tasks.wait_for, blocker)
        with pytest.raises(QueueFullError):
            djthreads.submit(tasks.noop)
        blocker.set()
        assert first.result(10) is True
        # The old pool still finishes what it holds...
        assert not running.done()
        release.set()
        assert running.result(10) is True
    # ...and after the override a new default pool is built from the restored settings.
    assert djthreads.get_executor().max_workers == 8
