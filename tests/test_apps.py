from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(60)

CHILD = Path(__file__).with_name("no_app_child.py")


def test_works_without_the_app_in_installed_apps() -> None:
    child = subprocess.run(
        [sys.executable, str(CHILD)],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=CHILD.parent.parent,
        check=False,
    )
    assert child.returncode == 0, child.stderr
    assert child.stdout.splitlines() == [
        "checks: []",
        "error: ImproperlyConfigured DJTHREADS['ON_FULL'] must be 'block' or 'raise', "
        "got 'sideways'.",
        "result: 6",
    ]
