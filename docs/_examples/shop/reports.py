"""A CPU-bound part of a batch job, for DjangoProcess."""

from __future__ import annotations

import hashlib
from pathlib import Path

from shop.models import Order


def write_report(path: str) -> None:
    """Write one line per order with a checksum; runs in a child process."""
    lines = []
    for order in Order.objects.order_by("pk"):
        digest = hashlib.sha256(f"{order.pk}:{order.total}".encode()).hexdigest()
        lines.append(f"{order.pk} {order.total} {digest[:12]}\n")
    Path(path).write_text("".join(lines))
