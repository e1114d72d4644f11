"""Django signals sent around every djthreads task.

Both are sent from the thread that runs the task (a pool worker or a
DjangoThread), inside the task's copied context, with ``send_robust``: a
receiver that raises is logged on ``djthreads`` and never fails the task.

``task_started(sender=fn, name=str, task_id=str, args=tuple, kwargs=dict)``
    Sent just before the function runs. ``name`` is the function's qualified
    name (a ``functools.partial`` is named by the function it wraps);
    ``task_id`` is the task's short id, the one its log lines show (a Tasks
    backend result id for ThreadPoolBackend tasks), the same in both signals.

``task_finished(sender=fn, name=str, task_id=str, result=object, exception=BaseException | None)``
    Sent after the function returned or raised, before the thread's database
    connections are closed, so a receiver may still query.
"""

from __future__ import annotations

from django.dispatch import Signal

task_started = Signal()
task_finished = Signal()
