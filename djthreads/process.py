"""DjangoProcess: a ``multiprocessing.Process`` that never shares a connection.

Under the fork start method the child inherits the parent's connection
objects, sockets included. Using one corrupts the parent's session; closing one
(or letting psycopg2 free it, which closes it) sends PostgreSQL a Terminate
message on the shared socket and ends the *parent's* session. The usual fix,
``connections.close_all()`` before ``start()``, costs the parent its
connections and races with its other threads. Here the parent keeps them: the
child sets the inherited ones aside, never used and never freed (the child
ends with ``os._exit``, which runs no finalizer), and opens its own.
"""

from __future__ import annotations

import functools
import gc
import multiprocessing
import multiprocessing.reduction
import os
import pickle
import types
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import connections
from django.db.backends.base.base import BaseDatabaseWrapper

from djthreads._account import PROCESS, Work
from djthreads._run import capture, in_task, run_task

# In a forked child: every connection (and connection pool) inherited from the
# parent. Referenced here so that nothing ever frees, and so closes, them.
_inherited: list[object] = []


def _live_connections() -> list[BaseDatabaseWrapper]:
    # Every thread's connections, not only the calling thread's: fork frees the
    # other threads' thread-locals in the child, and a psycopg2 connection
    # freed there would say goodbye on the socket its parent still uses.
    # type(), not isinstance(): isinstance() reads __class__, which evaluates a
    # Django LazyObject (admin.site, say) as a side effect.
    return [obj for obj in gc.get_objects() if issubclass(type(obj), BaseDatabaseWrapper)]


def _connection_pools(conn: BaseDatabaseWrapper) -> dict[str, Any] | None:
    # Django (>= 5.1) keeps psycopg 3 pools in this class-level dict and has no
    # public way to forget one without closing it; closing the parent's pool in
    # the child would end the parent's pooled sessions.
    pools = getattr(type(conn), "_connection_pools", None)
    return pools if isinstance(pools, dict) else None


def _set_aside_inherited(kept: list[BaseDatabaseWrapper]) -> None:
    """In a forked child: make Django open new connections and pools."""
    _inherited.extend(kept)
    for conn in connections.all(initialized_only=True):
        _inherited.append(conn)
        del connections[conn.alias]  # the next connections[alias] is a fresh wrapper
    for conn in kept:
        pools = _connection_pools(conn)
        if pools:
            _inherited.append(dict(pools))
            pools.clear()


def _close_own_pools() -> None:
    """Close the pools this child created (the parent's were set aside)."""
    for conn in connections.all(initialized_only=True):
        pools = _connection_pools(conn)
        if pools and conn.alias in pools:
            conn.close_pool()  # type: ignore[attr-defined]


def _set_up_django(settings_module: str, names: Mapping[str, Any]) -> None:
    """In a spawned child: set Django up from the parent's settings module."""
    import django
    from django.apps import apps

    os.environ["DJANGO_SETTINGS_MODULE"] = settings_module
    if not apps.ready:
        django.setup()
    # The parent's database names, which a test runner changes at run time
    # (test_<name>); the settings module alone would name the real database.
    for alias, name in names.items():
        if alias in settings.DATABASES:
            settings.DATABASES[alias]["NAME"] = name


def _run_target(self: DjangoProcess) -> None:
    """Run the target; override ``run()`` in a subclass as with ``Process.run``."""
    if self._djthreads_target is not None:
        self._djthreads_target(*self._djthreads_args, **self._djthreads_kwargs)


def _in_child(run: Callable[[DjangoProcess], Any]) -> Callable[[DjangoProcess], None]:
    """Wrap a ``run`` method so it runs with the child's own connections."""

    @functools.wraps(run)
    def wrapper(self: DjangoProcess) -> None:
        if in_task():
            run(self)  # a subclass's run() calling super().run()
            return
        payload = self.__dict__.pop("_djthreads_payload", None)
        if payload is not None:
            setup, blob = payload
            if setup is not None:
                _set_up_django(*setup)
            (
                self._djthreads_target,
                self._djthreads_args,
                self._djthreads_kwargs,
            ) = pickle.loads(blob)
        kept = self.__dict__.pop("_djthreads_kept", None)
        if kept is not None and kept[0] != os.getpid():
            _set_aside_inherited(kept[1])
        target = self._djthreads_target
        if run is _run_target and target is not None:
            fn, args, kwargs = target, self._djthreads_args, self._djthreads_kwargs
        else:
            fn, args, kwargs = types.MethodType(run, self), (), {}
        try:
            run_task(Work(fn, args, kwargs, capture(), PROCESS))
        finally:
            _close_own_pools()

    return wrapper


class DjangoProcess(multiprocessing.Process):
    """A ``multiprocessing.Process`` for CPU-bound parts of a Django job.

    The child runs ``target`` (or an overridden ``run()``) with database
    connections of its own: under fork it sets the inherited ones aside
    without closing them, so the parent's connections stay open and working
    (no ``connections.close_all()`` before ``start()``); under spawn and
    forkserver it calls ``django.setup()`` from the parent's
    ``DJANGO_SETTINGS_MODULE`` (and uses the parent's database names) before
    it unpickles the target. ``start_method`` picks "fork", "spawn" or
    "forkserver" for this process (default: multiprocessing's current one).
    When the target returns or raises, the child closes its connections (and
    its own psycopg 3 pools); an exception is logged at ERROR on
    ``djthreads``, printed by multiprocessing and gives ``exitcode`` 1.
    ``override_settings`` in the parent does not reach a spawned child.
    """

    def __init__(
        self,
        group: None = None,
        target: Callable[..., object] | None = None,
        name: str | None = None,
        args: Iterable[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        *,
        daemon: bool | None = None,
        start_method: str | None = None,
    ) -> None:
        if start_method is not None and start_method not in (
            multiprocessing.get_all_start_methods()
        ):
            methods = ", ".join(multiprocessing.get_all_start_methods())
            raise ValueError(
                f"DjangoProcess(start_method=...) must be one of {methods} on this platform, "
                f"got {start_method!r}."
            )
        # The target lives in our own attributes, so a spawned child can
        # unpickle it after Django is set up (it may reference models).
        super().__init__(group, None, name, daemon=daemon)
        self._djthreads_target = target
        self._djthreads_args = tuple(args)
        self._djthreads_kwargs = dict(kwargs or {})
        self._djthreads_start_method = start_method

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "run" in cls.__dict__:
            cls.run = _in_child(cls.__dict__["run"])

    run = _in_child(_run_target)

    @property
    def start_method(self) -> str:
        """The start method of this process ("fork", "spawn" or "forkserver")."""
        return self._djthreads_start_method or multiprocessing.get_start_method()

    def start(self) -> None:
        """Start the child process (runs in the parent; returns at once).

        Raises ImproperlyConfigured for spawn or forkserver when
        DJANGO_SETTINGS_MODULE is not set (settings.configure() cannot be
        repeated in a new interpreter).
        """
        if self.start_method != "fork":
            settings_module = os.environ.get("DJANGO_SETTINGS_MODULE")
            if not settings_module:
                raise ImproperlyConfigured(
                    f"DjangoProcess cannot start a {self.start_method!r} child: it sets "
                    "Django up from DJANGO_SETTINGS_MODULE, which is not set (settings "
                    "made with settings.configure() cannot be repeated in a new "
                    "interpreter). Set DJANGO_SETTINGS_MODULE, or pass "
                    "start_method='fork'."
                )
            self._djthreads_setup = (
                settings_module,
                {alias: db.get("NAME") for alias, db in settings.DATABASES.items()},
            )
            super().start()
            return
        # Taken right before fork, so the child holds every connection that
        # exists at that moment; the parent lets go of the list at once.
        self._djthreads_kept = (os.getpid(), _live_connections())
        try:
            super().start()
        finally:
            del self._djthreads_kept

    @staticmethod
    def _Popen(process_obj: Any) -> Any:
        # multiprocessing picks the start method through this hook (its own
        # context classes override it the same way).
        context = multiprocessing.get_context(process_obj._djthreads_start_method)
        return context.Process._Popen(process_obj)

    def __getstate__(self) -> dict[str, Any]:
        # Pickled for spawn and forkserver, in the parent: the target travels
        # as bytes, unpickled in the child after django.setup().
        state = self.__dict__.copy()
        blob = multiprocessing.reduction.ForkingPickler.dumps(
            (
                state.pop("_djthreads_target"),
                state.pop("_djthreads_args"),
                state.pop("_djthreads_kwargs"),
            )
        )
        state["_djthreads_payload"] = (state.pop("_djthreads_setup", None), bytes(blob))
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._djthreads_target = None
        self._djthreads_args = ()
        self._djthreads_kwargs = {}
