"""URLs of the documentation's example site."""

from __future__ import annotations

from django.urls import path
from shop import views

urlpatterns = [
    path("checkout/", views.checkout, name="checkout"),
    path("orders/<int:order_id>/resend/", views.resend_receipt, name="resend"),
]
