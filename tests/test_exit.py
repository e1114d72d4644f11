from __future__ import annotations

import pytest

from tests.conftest import run_exiting_child

pytestmark = pytest.mark.timeout(60)


def test_exit_waits_for_tasks_then_names_the_stuck_one() -> None:
    # After "main thread done" the interpreter is exiting; the "go" that
    # run_exiting_child sends lets the in-time task finish during the wait.
    # Its timeout bounds the test: without the bounded exit wait the stuck
    # task would hold the interpreter forever.
    returncode, out, err = run_exiting_child("exit_child.py", "3", timeout=30)
    assert returncode == 0, err
    assert out == "in-time task finished\n"
    assert "WARNING:djthreads:exit: shutdown_timeout=3.0s expired for pool=djthreads" in err
    assert "__main__.stuck_task" in err
    assert "in_time_task" not in err
