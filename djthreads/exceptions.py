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
