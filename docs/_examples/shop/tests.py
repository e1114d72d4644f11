"""The shop's tests in unittest style (run by ``manage.py test shop``)."""

from __future__ import annotations

from django.core import mail
from django.db import transaction

import djthreads
from djthreads.test import TestCase, TransactionTestCase
from shop.models import Order
from shop.receipts import send_receipt


class ReceiptTests(TestCase):
    """Eager mode: tasks run inline in the test's thread and transaction."""

    def test_receipt_is_mailed(self) -> None:
        order = Order.objects.create(email="ada@example.com", total=10)
        future = send_receipt(order.pk)  # ran inline; it saw the uncommitted row
        assert future.done()
        assert mail.outbox[0].to == ["ada@example.com"]

    def test_receipt_waits_for_the_commit(self) -> None:
        order = Order.objects.create(email="ada@example.com", total=10)
        with self.captureOnCommitCallbacks(execute=True):
            with transaction.atomic():  # an atomic block of the code under test
                future = send_receipt(order.pk)
            assert not future.done()  # held for the commit...
        assert future.done()  # ...and run by the on_commit callbacks


class CheckoutTests(TransactionTestCase):
    """Real threads: the end of each test waits for its tasks and checks them."""

    task_timeout = 5.0  # seconds to wait for the test's tasks (default 10)

    def test_checkout_mails_the_receipt(self) -> None:
        response = self.client.post("/checkout/", {"email": "ada@example.com", "total": "10"})
        djthreads.wait_for_tasks(timeout=5)  # the pool thread has mailed it
        order = Order.objects.get(pk=response.json()["order"])
        assert order.receipt_sent
        assert len(mail.outbox) == 1

    def test_unknown_order(self) -> None:
        with self.assertTaskRaises(Order.DoesNotExist):
            send_receipt(12345)  # the block waits for the task and catches its error
        self.assertNoLeakedConnections()  # also checked after every test
