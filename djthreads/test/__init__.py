"""Test helpers for code that uses djthreads.

- ``TransactionTestCase``: for tests that run real threads; waits for their
  tasks, fails on stuck tasks, unexpected task exceptions and leaked
  connections (``assertTaskRaises``, ``assertNoLeakedConnections``).
- ``TestCase``: ``django.test.TestCase`` with eager mode on.
- ``eager()``: run ``run_async``/``submit`` calls inline in the caller.
- ``TaskTracker``: the machinery behind TransactionTestCase and the pytest
  plugin's ``djthreads_threads`` fixture (``djthreads.pytest_plugin``).
"""

from __future__ import annotations

from djthreads._eager import eager
from djthreads.test._cases import TestCase, TransactionTestCase
from djthreads.test._tracker import RaisedInTasks, TaskTracker

__all__ = ["RaisedInTasks", "TaskTracker", "TestCase", "TransactionTestCase", "eager"]
