"""What the benchmarks share to run on the local PostgreSQL server (127.0.0.1:5432, user root, database
test, trust auth): a throwaway schema per run."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager

PG_DSN = "host=127.0.0.1 port=5432 user=root dbname=test"
PG_URL = "postgresql+psycopg://root@127.0.0.1:5432/test?options=-csearch_path%3D{schema}&application_name={schema}"


@contextmanager
def pg_schema(prefix: str) -> Iterator[str | None]:
    """A throwaway schema named ``<prefix>_<random>`` on the local server, as a store URL, dropped after;
    ``None`` (and a line saying why) when the server cannot be reached."""
    try:
        import psycopg

        admin = psycopg.connect(PG_DSN, autocommit=True, connect_timeout=3)
    except Exception as exc:  # noqa: BLE001 - any reason the server cannot be reached
        print(f"PostgreSQL skipped: {PG_DSN} unreachable ({type(exc).__name__}: {exc})".strip(), flush=True)
        yield None
        return
    schema = f"{prefix}_{secrets.token_hex(4)}"
    with admin:
        admin.execute(f"CREATE SCHEMA {schema}")
        try:
            yield PG_URL.format(schema=schema)
        finally:
            admin.execute(f"DROP SCHEMA {schema} CASCADE")
