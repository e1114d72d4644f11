#!/usr/bin/env python
"""manage.py of the documentation's example site."""

from __future__ import annotations

import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "docsite.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
