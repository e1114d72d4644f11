#!/usr/bin/env python
"""The example project's manage.py: run it from anywhere."""

from __future__ import annotations

import os
import sys
from pathlib import Path

if __name__ == "__main__":
    # The repository root, so that ``example.*`` imports.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "example.project.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
