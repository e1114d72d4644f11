"""Why a job failed, in words for the person who started it.

The status page shows :func:`explain`'s sentence; the traceback is kept as
well, folded away under "Technical details", for whoever has to fix it.
"""

from __future__ import annotations

import json
from urllib.error import HTTPError, URLError

from django.db import IntegrityError, OperationalError


def explain(exc: BaseException, source: str) -> str:
    """Return one or two sentences saying what went wrong and what to try.

    ``source`` is the data source's URL the job fetched from.
    """
    if isinstance(exc, HTTPError):
        item = exc.url.rpartition("/")[2].partition("?")[0] if exc.url else "?"
        return (
            f"The data source at {source} answered “{exc.code} {exc.reason}” for item "
            f"{item}, so the job stopped. Check that the source serves /items/<number>."
        )
    reason = exc.reason if isinstance(exc, URLError) else exc
    if isinstance(reason, ConnectionRefusedError):
        return (
            f"Could not connect to the data source at {source}: nothing is listening there. "
            "Start the source, or set HARVEST_SOURCE_URL to one that is running."
        )
    if isinstance(reason, TimeoutError):
        return (
            f"The data source at {source} took too long to answer, so the job stopped. "
            "Try again when it is less busy."
        )
    if isinstance(exc, URLError):
        return f"Could not reach the data source at {source} ({exc.reason})."
    if isinstance(exc, (json.JSONDecodeError, KeyError)):
        return (
            f"The data source at {source} sent an answer the job could not read, "
            "so the job stopped."
        )
    if isinstance(exc, IntegrityError):
        return (
            "The database already held a record with the same item number for this job, "
            "so the job stopped rather than store it twice."
        )
    if isinstance(exc, OperationalError):
        return f"The database could not store a record ({exc}). Try again with fewer threads."
    return f"The job stopped on an unexpected error: {type(exc).__name__}: {exc}"
