"""The shop's tests in pytest style (pytest-django and the djthreads plugin)."""

from __future__ import annotations

from typing import Any

import pytest

from djthreads.test import TaskTracker
from shop.models import Order
from shop.receipts import send_receipt


def test_receipt_is_mailed(db: None, djthreads_eager: None, mailoutbox: list[Any]) -> None:
    order = Order.objects.create(email="ada@example.com", total=10)
    assert send_receipt(order.pk).done()  # ran inline in the test's transaction
    assert mailoutbox[0].to == ["ada@example.com"]


def test_checkout(client: Any, djthreads_threads: TaskTracker, mailoutbox: list[Any]) -> None:
    response = client.post("/checkout/", {"email": "ada@example.com", "total": "10"})
    djthreads_threads.assert_no_leaked_connections()  # waits for the tasks first
    assert Order.objects.get(pk=response.json()["order"]).receipt_sent
    assert len(mailoutbox) == 1


def test_unknown_order(djthreads_threads: TaskTracker) -> None:
    with djthreads_threads.assert_task_raises(Order.DoesNotExist):
        send_receipt(12345)


@pytest.mark.djthreads(timeout=5, expected=(Order.DoesNotExist,))
def test_marker() -> None:  # the marker adds djthreads_threads (and transactional_db)
    send_receipt(12345)  # fails in its thread; the marker expects that
