"""Exceptions raised by djthreads.

Every exception derives from :class:`DjThreadsError`; concrete ones also derive
from a builtin so callers can catch either. Configuration errors are Django's
:class:`~django.core.exceptions.ImproperlyConfigured`.
"""

from __future__ import annotations


class DjThreadsError(Exception):
    """Base class of every djthreads error."""


class QueueFullError(DjThreadsError, RuntimeError):
    """The pool's queue is full and ``DJTHREADS['ON_FULL']`` is ``"raise"``.

    Raised by ``submit()`` (and a ``run_async`` call) in the submitting thread;
    the function was not queued and will not run.
    """


class UnstoppableThreadError(DjThreadsError, NotImplementedError):
    """``DjangoThread.terminate()`` or ``kill()``: a thread cannot be stopped from outside.

    Raised in the calling thread; the DjangoThread keeps running. A
    ``NotImplementedError``, as the standard library raises for an operation
    the platform cannot perform (``multiprocessing.Queue.qsize()`` on macOS).
    Stop the work with a flag its target checks (a ``threading.Event``), or run
    it in a ``DjangoProcess``.
    """
