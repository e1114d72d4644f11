"""``manage.py resend_receipts``: mail every receipt not sent yet, several at a time."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

import djthreads
from shop.models import Order
from shop.receipts import mail_receipt


class Command(BaseCommand):
    help = "Mail the receipts that were never sent, in --workers threads."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--workers", type=int, default=8)

    def handle(self, *args: Any, workers: int, **options: Any) -> None:
        pending = list(Order.objects.filter(receipt_sent=False).values_list("pk", flat=True))
        # Runs mail_receipt(pk) in a pool of `workers` threads made for this call;
        # each thread's connection is closed after its item. Results keep input order.
        sent_by = djthreads.map(mail_receipt, pending, max_workers=workers)
        self.stdout.write(f"mailed {len(sent_by)} receipts")
