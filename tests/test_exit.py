from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(60)

CHILD = Path(__file__).with_name("exit_child.py")


def test_exit_waits_for_tasks_then_names_the_stuck_one() -> None:
    child = subprocess.Popen(
        [sys.executable, str(CHILD), "3"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=CHILD.parent.parent,
    )
    assert child.stdout is not None
    assert child.stdin is not None
    assert child.stdout.readline() == "main thread done\n"
    # The interpreter is exiting now; this task finishes during the wait.
    child.stdin.write("go\n")
    child.stdin.flush()
    out, err = child.communicate(timeout=30)
    assert child.returncode == 0, err
    assert out == "in-time task finished\n"
    assert "WARNING:djthreads:shutdown timeout=3.0s expired" in err
    assert "__main__.stuck_task" in err
    assert "in_time_task" not in err
    # communicate(timeout=30) bounds the test: without the bounded exit wait
    # the stuck task would hold the interpreter forever.
