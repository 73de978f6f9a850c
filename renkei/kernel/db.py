"""PostgreSQL access: connection pools and versioned migrations.

Migrations are the numbered ``.sql`` files in ``renkei/migrations``; each runs once, in order, in
its own transaction, and is remembered in ``public.renkei_migrations``. An advisory lock keeps two
processes from migrating at once. They run on a connection of their own, as the login user (the
schema's owner); the application's pools then work as the ``renkei_app`` role, which may not
change or delete access records (migration 0004).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from pathlib import Path

import asyncpg

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
_LOCK_ID = 7_350_001


APP_ROLE = "renkei_app"
# `renkei gateway`'s role (migration 0047): it reads the revocations, nothing else.
GATEWAY_ROLE = "renkei_gateway"
GATEWAY = "gateway"


def party_role(org: str) -> str:
    """The database role an org's own processes work as (migration 0014); the gateway's
    (:data:`GATEWAY`) is :data:`GATEWAY_ROLE` (migration 0047)."""
    if org == GATEWAY:
        return GATEWAY_ROLE
    return "renkei_org_" + org.replace("-", "_")


def scram_verifier(password: str, *, iterations: int = 4096) -> str:
    """PostgreSQL's SCRAM-SHA-256 verifier of ``password`` (RFC 5802/7677, as the server stores
    it), so that a password is set without ever being sent."""
    salt = secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.digest(salted, b"Client Key", "sha256")
    server_key = hmac.digest(salted, b"Server Key", "sha256")
    stored_key = hashlib.sha256(client_key).digest()
    b64 = base64.b64encode
    return (
        f"SCRAM-SHA-256${iterations}:{b64(salt).decode()}"
        f"${b64(stored_key).decode()}:{b64(server_key).decode()}"
    )


def login_role(org: str) -> str:
    """The login an org's own processes connect with: a member of its role and nothing else."""
    return "renkei_login_" + org.replace("-", "_")


async def create_login(pool: asyncpg.Pool, org: str, password: str) -> str:
    """Create (or give a new password to) ``org``'s own database login; return its name.

    The login holds no privilege of its own (``NOINHERIT``) and is a member of the org's role
    only: a process connected with it works as that role (``SET ROLE``, as :func:`create_pool`
    does), and leaving the role (``RESET ROLE``) leaves it with less, never more. The pool's
    login must be the platform's database owner (it acts as itself here, not as the
    application's role); the org's role comes from the migrations (0014). ``org`` may be
    :data:`GATEWAY`: the gateway's login, a member of :data:`GATEWAY_ROLE` only (0047).
    """
    role = party_role(org)
    login = login_role(org)
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SET LOCAL ROLE NONE")
        if not await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)", role
        ):
            raise LookupError(f"no database role {role} for {org!r} (is it a known org?)")
        exists = await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)", login
        )
        # The server is given the password's SCRAM verifier, never the password: a statement
        # log (log_statement = 'ddl') keeps nothing it could log in with.
        statement = await conn.fetchval(
            "SELECT format('ALTER ROLE %I LOGIN NOINHERIT PASSWORD %L', $1::text, $2::text)"
            if exists
            else "SELECT format('CREATE ROLE %I LOGIN NOINHERIT PASSWORD %L IN ROLE %I',"
            " $1::text, $2::text, $3::text)",
            login,
            scram_verifier(password),
            *(() if exists else (role,)),
        )
        await conn.execute(statement)
    return login


async def _init_connection(conn: asyncpg.Connection, role: str | None) -> None:
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")
    if role and await conn.fetchval(
        "SELECT CASE WHEN EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)"
        " THEN pg_has_role(session_user, $1, 'MEMBER') ELSE false END",
        role,
    ):
        await conn.execute(f'SET ROLE "{role}"')


async def connect(url: str, *, role: str | None = APP_ROLE) -> asyncpg.Connection:
    """One connection working as ``role`` (when the login user may), like a pool's."""
    conn = await asyncpg.connect(url)
    try:
        await _init_connection(conn, role)
    except BaseException:
        await conn.close()
        raise
    return conn


async def create_pool(
    url: str, *, min_size: int = 1, max_size: int = 10, role: str | None = APP_ROLE
) -> asyncpg.Pool:
    """A pool working as ``role`` (when the login user may), decoding ``jsonb`` to Python.

    Call :func:`migrate` first: connections opened before the role exists keep the login user.
    """

    async def init(conn: asyncpg.Connection) -> None:
        await _init_connection(conn, role)

    pool = await asyncpg.create_pool(
        url, min_size=min_size, max_size=max_size, init=init, reset=_released
    )
    assert pool is not None
    return pool


async def _released(conn: asyncpg.Connection) -> None:
    """What a connection given back to a pool is reset with, beyond what the pool always does
    (roll back a transaction left open, drop its listeners): nothing.

    asyncpg's default sends ``pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL`` on
    every release, a round trip each time a connection is taken (fourteen in a 3-query flow).
    None of it has anything to undo here: renkei's code takes no session-level advisory lock
    (the migration runner's is on a connection of its own), no cursor outside a transaction, no
    ``LISTEN`` on a pooled connection (the live whitelist has its own) and sets no session
    parameter but the pool's role when the connection is opened (``SET LOCAL`` otherwise, which
    ends with its transaction; ``RESET ALL`` does not reset the role anyway).
    ``tests/unit/test_db_pool.py`` checks that the code stays so."""


_READABLE = "0068_schema_readable.sql"  # the migration from which any role reads the others


class SchemaBehind(RuntimeError):
    """The database lacks migrations of this release: ``renkei init`` has not run since."""


async def require_schema(pool: asyncpg.Pool) -> None:
    """Raise :class:`SchemaBehind` unless every migration of this release is applied (read as
    the pool's role, which need not own the schema: migration 0068)."""
    known = sorted(path.name for path in MIGRATIONS_DIR.glob("*.sql"))
    try:
        applied = {r[0] for r in await pool.fetch("SELECT public.renkei_migrations_applied()")}
    except asyncpg.UndefinedFunctionError:  # a schema from before migration 0068
        raise SchemaBehind(
            f"the database's schema is from before {_READABLE} of this release: run"
            " `renkei init` (it migrates the schema) with this release, then start its workers"
        ) from None
    except asyncpg.InsufficientPrivilegeError:  # a role made after the migration granted it
        raise SchemaBehind(
            "this worker's database role may not read which migrations are applied: grant it"
            " EXECUTE on public.renkei_migrations_applied() (migration 0068 granted it to"
            " renkei_app and renkei_party, of which an org's role is a member, where they"
            " existed then)"
        ) from None
    missing = [name for name in known if name not in applied]
    if missing:
        raise SchemaBehind(
            f"the database lacks {len(missing)} migration(s) of this release, from"
            f" {missing[0]} to {missing[-1]}: run `renkei init` (it migrates the schema) with"
            " this release, then start its workers"
        )


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
