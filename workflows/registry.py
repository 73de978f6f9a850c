"""The BPF registry in PostgreSQL: every registered version with its content hash.

A version, once registered, is immutable: registering different content under the same
(bpf, version) is refused, because running flows are pinned to it.
"""

from __future__ import annotations

import asyncpg

from workflows.loader import LoadedBpf
from workflows.models import BpfDefinition


class RegistryConflict(ValueError):
    """Different content under an already registered (bpf, version)."""


class RegisteredBpf:
    def __init__(self, definition: BpfDefinition, content_hash: str) -> None:
        self.definition = definition
        self.content_hash = content_hash


async def register(pool: asyncpg.Pool, loaded: LoadedBpf) -> bool:
    """Register a validated definition; ``True`` if new, ``False`` if already there."""
    d = loaded.definition
    async with pool.acquire() as conn, conn.transaction():
        existing = await conn.fetchval(
            "SELECT content_hash FROM registry.bpf_versions WHERE bpf = $1 AND version = $2",
            d.bpf,
            d.version,
        )
        if existing == loaded.content_hash:
            return False
        if existing is not None:
            raise RegistryConflict(
                f"{loaded.source_name}: {d.bpf} version {d.version} is already registered with "
                "different content; a changed definition needs a new version number"
            )
        await conn.execute(
            "INSERT INTO registry.bpf_versions"
            " (bpf, version, content_hash, source_name, source_text, definition)"
            " VALUES ($1, $2, $3, $4, $5, $6)",
            d.bpf,
            d.version,
            loaded.content_hash,
            loaded.source_name,
            loaded.source_text,
            d.model_dump(mode="json", by_alias=True),
        )
    return True


async def fetch(pool: asyncpg.Pool, bpf: str, version: int | None = None) -> RegisteredBpf | None:
    """One registered version (the highest if ``version`` is ``None``)."""
    if version is None:
        row = await pool.fetchrow(
            "SELECT definition, content_hash FROM registry.bpf_versions WHERE bpf = $1"
            " ORDER BY version DESC LIMIT 1",
            bpf,
        )
    else:
        row = await pool.fetchrow(
            "SELECT definition, content_hash FROM registry.bpf_versions"
            " WHERE bpf = $1 AND version = $2",
            bpf,
            version,
        )
    if row is None:
        return None
    return RegisteredBpf(BpfDefinition.model_validate(row["definition"]), row["content_hash"])


async def listing(pool: asyncpg.Pool) -> list[asyncpg.Record]:
    """Every registered version, newest first within each BPF."""
    return await pool.fetch(
        "SELECT bpf, version, content_hash, source_name, loaded_at,"
        " definition->'title'->>'en' AS title, definition->>'task' AS task"
        " FROM registry.bpf_versions ORDER BY bpf, version DESC"
    )
