"""Fail loudly, before the suite starts, when a service the tests need is not reachable."""

from __future__ import annotations

import os
import sys

import psycopg

url = os.environ.get("IHUB_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
backends = os.environ.get("IHUB_TEST_BACKENDS", "sqlite,postgresql")
if "postgresql" in backends:
    try:
        with psycopg.connect(url, connect_timeout=5) as conn:
            version = conn.execute("show server_version").fetchone()[0]
    except psycopg.OperationalError as error:
        sys.exit(f"PostgreSQL is not reachable at {url}: {error}\nStart it or set IHUB_TEST_POSTGRES_URL.")
    print(f"PostgreSQL {version} at {url}")
