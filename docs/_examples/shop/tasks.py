"""The receipt as a Django Task: where it runs is the TASKS setting's choice."""

from __future__ import annotations

from django.tasks import task

from shop.receipts import mail_receipt


@task
def mail_receipt_task(order_id: int) -> str:
    return mail_receipt(order_id)
