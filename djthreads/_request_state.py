"""The per-request Django state that crosses into a task (see ``RequestState``).

``djthreads._run.capture`` drops asgiref's Local storage from the copied
context (see there) and carries these values instead.
"""

from __future__ import annotations

import threading
from datetime import tzinfo
from typing import Any

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver
from django.urls import get_script_prefix, get_urlconf, set_script_prefix, set_urlconf
from django.utils import timezone, translation

# Per submitting thread: (what the context's asgiref Locals held, settings
# generation, the RequestState read then). A request submits several tasks
# with the same state; reading it through Django's accessors costs asgiref's
# lock four times, comparing the Locals' contents a fraction of that.
_last = threading.local()
generation = 0  # bumped on every setting_changed: LANGUAGE_CODE, TIME_ZONE, ROOT_URLCONF...


@receiver(setting_changed)
def _forget_on_settings_change(**kwargs: Any) -> None:
    global generation
    generation += 1


class RequestState:
    """The submitter's per-request Django state that a task runs with.

    Django's request handling keeps these in asgiref Locals, which do not cross
    threads: the active language (``translation.activate``; None after
    ``deactivate_all()``), time zone (``timezone.activate``), urlconf
    (``set_urlconf``) and script prefix (``set_script_prefix``). A value left
    at its default is stored as None (the prefix as "/") and not set again in
    the task, whose fresh context already answers the default.
    """

    __slots__ = ("language", "script_prefix", "timezone", "urlconf")

    def __init__(
        self,
        language: str | None,
        tz: tzinfo | None = None,
        urlconf: str | None = None,
        script_prefix: str = "/",
    ) -> None:
        self.language = language
        self.timezone = tz
        self.urlconf = urlconf
        self.script_prefix = script_prefix

    @classmethod
    def of(cls, storages: list[Any]) -> RequestState:
        """The calling context's state, given the values of its asgiref Local storage.

        Runs in the submitting thread. Django's accessors read the state from
        ``storages`` (one per asgiref Local in the context) and from settings,
        so while both are unchanged the state read last in this thread is
        still the answer, and comparing costs far less than the four reads.
        asgiref >= 3.13 replaces a storage object on every write (compared by
        identity); older asgiref keeps a dict and writes into it (compared by
        its items).
        """
        contents = [
            list(storage.items()) if type(storage) is dict else storage for storage in storages
        ]
        last = getattr(_last, "entry", None)
        if last is not None and last[1] == generation and last[0] == contents:
            state: RequestState = last[2]
            return state
        state = cls.capture()
        _last.entry = (contents, generation, state)
        return state

    @classmethod
    def capture(cls) -> RequestState:
        """Read the calling context's state (the submitter's, at submit time)."""
        tz: tzinfo | None = timezone.get_current_timezone()
        if tz is timezone.get_default_timezone():
            tz = None
        urlconf = get_urlconf()
        # Django's handler sets ROOT_URLCONF on every request; carrying the
        # default would cost every task a set_urlconf() for nothing.
        if urlconf is not None and urlconf == getattr(settings, "ROOT_URLCONF", None):
            urlconf = None
        return cls(translation.get_language(), tz, urlconf, get_script_prefix())

    def apply(self) -> None:
        """Make this state active in the calling context (the task's own copy)."""
        if self.language is None:
            translation.deactivate_all()
        elif self.language != settings.LANGUAGE_CODE:
            translation.activate(self.language)
        if self.timezone is not None:
            timezone.activate(self.timezone)
        if self.urlconf is not None:
            set_urlconf(self.urlconf)
        if self.script_prefix != "/":
            set_script_prefix(self.script_prefix)
