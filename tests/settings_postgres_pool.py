"""Test settings on PostgreSQL through psycopg 3 and Django's connection pool (Django >= 5.1).

min_size == max_size, so the pool is full before a test starts and "waited
for a slot" means a slot was held by someone else, not that the pool grew.
"""

from __future__ import annotations

from tests.settings_base import *  # noqa: F403
from tests.settings_postgres import postgres

POOL_MAX_SIZE = 8
DATABASES = postgres(pool={"min_size": POOL_MAX_SIZE, "max_size": POOL_MAX_SIZE, "timeout": 20})
