"""djthreads: run I/O-bound Django work in threads that close their connections.

Public API: DjangoThread, run_async, submit, get_executor, wait_for_tasks,
DjangoExecutor, eager, map, DjangoProcess and the exceptions. Signals live in
``djthreads.signals``.
"""

from __future__ import annotations

from djthreads._default import get_executor, wait_for_tasks
from djthreads._eager import eager
from djthreads.batch import map
from djthreads.decorators import run_async, submit
from djthreads.exceptions import DjThreadsError, QueueFullError, UnstoppableThreadError
from djthreads.executor import DjangoExecutor
from djthreads.process import DjangoProcess
from djthreads.threads import DjangoThread

__all__ = [
    "DjThreadsError",
    "DjangoExecutor",
    "DjangoProcess",
    "DjangoThread",
    "QueueFullError",
    "UnstoppableThreadError",
    "eager",
    "get_executor",
    "map",
    "run_async",
    "submit",
    "wait_for_tasks",
]
