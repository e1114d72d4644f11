"""The one table djthreads.durable adds: a lease per running process.

django-tasks-db's row says who claimed it (``worker_ids``) but has no column
for "that worker is still alive". Rather than write every running row every
few seconds, each process that runs durable tasks keeps one row here and moves
its expiry forward; a RUNNING task whose claimer's lease expired was orphaned
(SIGKILL, OOM kill, a lost machine) and is marked FAILED by the next live
process (see ``djthreads.durable._lease``). Tasks themselves stay in
django-tasks-db's table.
"""

from __future__ import annotations

from django.db import models


class WorkerLease(models.Model):
    """One process running durable tasks, alive until ``expires_at`` (database clock)."""

    # The id this process writes into DBTaskResult.worker_ids when it claims.
    worker_id = models.CharField(primary_key=True, max_length=100)
    hostname = models.CharField(max_length=255)
    pid = models.IntegerField()
    started_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(db_index=True)

    class Meta:
        verbose_name = "worker lease"

    def __str__(self) -> str:
        return self.worker_id
