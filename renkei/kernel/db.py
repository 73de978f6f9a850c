"""PostgreSQL access: connection pools and versioned migrations.

Migrations are the numbered ``.sql`` files in ``renkei/migrations``; each runs once, in order, in
its own transaction, and is remembered in ``public.renkei_migrations``. An advisory lock keeps two
processes from migrating at once. They run on a connection of their own, as the login user (the
schema's owner); the application's pools then work as the ``renkei_app`` role, which may not
change or delete access records (migration 0004).
"""

from __future__ import annotations

import json
from pathlib import Path

import asyncpg

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
_LOCK_ID = 7_350_001


APP_ROLE = "renkei_app"


def party_role(org: str) -> str:
    """The database role an org's own processes work as (migration 0014)."""
    return "renkei_org_" + org.replace("-", "_")


async def _init_connection(conn: asyncpg.Connection, role: str | None) -> None:
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")
    if role and await conn.fetchval(
        "SELECT CASE WHEN EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)"
        " THEN pg_has_role(session_user, $1, 'MEMBER') ELSE false END",
        role,
    ):
        await conn.execute(f'SET ROLE "{role}"')


async def create_pool(
    url: str, *, min_size: int = 1, max_size: int = 10, role: str | None = APP_ROLE
) -> asyncpg.Pool:
    """A pool working as ``role`` (when the login user may), decoding ``jsonb`` to Python.

    Call :func:`migrate` first: connections opened before the role exists keep the login user.
    """

    async def init(conn: asyncpg.Connection) -> None:
        await _init_connection(conn, role)

    pool = await asyncpg.create_pool(url, min_size=min_size, max_size=max_size, init=init)
    assert pool is not None
    return pool


async def migrate(url: str, *, retention_years: int | None = None) -> list[str]:
    """Apply every migration not yet applied, as the login user; return the names applied now.

    ``retention_years`` sets the access records' retention policy (the owner's to change).
    """
    conn = await asyncpg.connect(url)
    try:
        applied = await _migrate(conn)
        if retention_years is not None:
            await conn.execute(
                "UPDATE records.policy SET retention = make_interval(years => $1)",
                retention_years,
            )
        return applied
    finally:
        await conn.close()


async def _migrate(conn: asyncpg.Connection) -> list[str]:
    applied_now: list[str] = []
    await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_ID)
    try:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS public.renkei_migrations ("
            " name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r["name"] for r in await conn.fetch("SELECT name FROM public.renkei_migrations")}
        for path in sorted(MIGRATIONS_DIR.glob("*.sql")):
            if path.name in done:
                continue
            async with conn.transaction():
                await conn.execute(path.read_text(encoding="utf-8"))
                await conn.execute(
                    "INSERT INTO public.renkei_migrations (name) VALUES ($1)", path.name
                )
            applied_now.append(path.name)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_ID)
    return applied_now
