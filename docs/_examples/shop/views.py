"""The example shop's views."""

from __future__ import annotations

import asyncio

from django.db import transaction
from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_POST

from shop.models import Order
from shop.receipts import send_receipt


@require_POST
def checkout(request: HttpRequest) -> JsonResponse:
    with transaction.atomic():
        order = Order.objects.create(
            email=request.POST["email"],
            total=request.POST["total"],
        )
        # Held until the commit, so the pool thread finds the order;
        # if anything below raises, the transaction rolls back and no mail goes out.
        send_receipt(order.pk)
    return JsonResponse({"order": order.pk})


@require_POST
async def resend_receipt(request: HttpRequest, order_id: int) -> JsonResponse:
    # The mail goes out in a pool thread; the event loop awaits its Future.
    thread = await asyncio.wrap_future(send_receipt(order_id))
    return JsonResponse({"order": order_id, "sent_by": thread})
