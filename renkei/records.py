"""Access records (アクセス記録): one row per linkage attempt, allowed or denied.

The attempt key is ``workflow id / run id / step id``; an activity retried after a failure or a
worker crash presents the same key, and the insert does nothing the second time, so every attempt
leaves exactly one record whatever happens to the worker.
"""

from __future__ import annotations

import datetime as dt

import asyncpg
from pydantic import BaseModel, ConfigDict


class AccessRecord(BaseModel):
    """One access record, as stored."""

    model_config = ConfigDict(frozen=True)

    attempt_key: str
    decided_at: dt.datetime
    requester: str
    provider: str
    task: str
    info: str
    legal_reference: str
    whitelist_row: str | None
    subject_code: str
    bpf: str
    bpf_version: int
    content_hash: str
    workflow_id: str
    run_id: str
    step: str
    outcome: str
    reason: str
    seq: int | None = None
    recorded_at: dt.datetime | None = None


_FIELDS = [f for f in AccessRecord.model_fields if f not in ("seq", "recorded_at")]


async def write(pool: asyncpg.Pool, record: AccessRecord) -> AccessRecord:
    """Write ``record`` unless its attempt already has one; return the stored record."""
    placeholders = ", ".join(f"${i}" for i in range(1, len(_FIELDS) + 1))
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            f"INSERT INTO records.access_records ({', '.join(_FIELDS)}) VALUES ({placeholders})"
            " ON CONFLICT (attempt_key) DO NOTHING",
            *(getattr(record, f) for f in _FIELDS),
        )
        row = await conn.fetchrow(
            "SELECT * FROM records.access_records WHERE attempt_key = $1", record.attempt_key
        )
    assert row is not None
    return AccessRecord(**dict(row))


async def query(
    pool: asyncpg.Pool | asyncpg.Connection,
    *,
    provider: str | None = None,
    subject_code: str | None = None,
    bpf: str | None = None,
    workflow_id: str | None = None,
    limit: int = 1000,
) -> list[AccessRecord]:
    """Records matching every given filter, oldest first."""
    conds: list[str] = []
    args: list[object] = []
    for column, value in (
        ("provider", provider),
        ("subject_code", subject_code),
        ("bpf", bpf),
        ("workflow_id", workflow_id),
    ):
        if value is not None:
            args.append(value)
            conds.append(f"{column} = ${len(args)}")
    where = f"WHERE {' AND '.join(conds)}" if conds else ""
    args.append(limit)
    rows = await pool.fetch(
        f"SELECT * FROM records.access_records {where} ORDER BY seq LIMIT ${len(args)}", *args
    )
    return [AccessRecord(**dict(r)) for r in rows]
