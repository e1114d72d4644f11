from __future__ import annotations

from django import forms


class JobForm(forms.Form):
    total = forms.IntegerField(label="Items to fetch", min_value=1, max_value=5000, initial=200)
    workers = forms.IntegerField(label="Threads", min_value=1, max_value=32, initial=8)
