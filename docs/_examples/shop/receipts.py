"""Mail an order's receipt: slow I/O that does not belong in the request."""

from __future__ import annotations

import threading

from django.core.mail import send_mail

from djthreads import run_async
from shop.models import Order


def mail_receipt(order_id: int) -> str:
    """Mail the receipt of one order; return the name of the thread that did it."""
    order = Order.objects.get(pk=order_id)
    send_mail(
        f"Your receipt for order {order.pk}",
        f"Total: {order.total}",
        "shop@example.com",
        [order.email],
    )
    Order.objects.filter(pk=order_id).update(receipt_sent=True)
    return threading.current_thread().name


@run_async
def send_receipt(order_id: int) -> str:
    """Mail the receipt in a djthreads pool thread, after the caller's commit."""
    return mail_receipt(order_id)
