"""The executor's outbox: the reminders its flows ask for, delivered at least once.

A definer's outbox also holds reviews (kind ``review``): after a change of the whitelist, each
operating version the change touches (:mod:`renkei.bpf.review`), with its executors and what no
longer conforms.

A ``wait`` step with ``remind:`` has the hub queue a reminder that long before the deadline
(``hub.remind``). Each reminder is a message in the outbox of the flow's executor: the flow's
workflow id, the step, what the step waits for and the deadline. It names no subject: the
executor finds the person in its own file by the workflow id (its case reference), so a message
read by the wrong eyes discloses no one.

Delivery is at least once. A message is listed every time the executor asks until the executor
acknowledges it (each listing counts as a delivery); an org sees and acknowledges its own
messages only. Read it over HTTP (``GET /api/outbox``, ``POST /api/outbox/{id}/ack``), with
``renkei outbox list|ack --org ORG``, or in code::

    async for message in deliver(pool, "city-minato"):
        await send_the_letter(message)   # acknowledged once this body completes

A body that raises (or a process that dies in it) leaves its message unacknowledged: it comes
again on the next delivery.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator

import asyncpg
from pydantic import BaseModel, Field

from renkei.bpf import registry
from renkei.bpf.models import WaitStep, walk

# The outbox's message ids are the reminders' (a bigserial).
MAX_ID = 2**63 - 1
# The most messages one listing hands out (the oldest first); the rest come on the next one.
LISTING_LIMIT = 100


class OutboxMessage(BaseModel):
    """A reminder for the executor to send; nothing personal."""

    id: int = Field(description="acknowledge it with `POST /api/outbox/{id}/ack`")
    kind: str = Field(
        default="reminder",
        description="what the message is: a reminder (for an executor), or a review (for a"
        " definer: a change of the whitelist touched one of its operating versions)",
    )
    workflow_id: str = Field(
        description="the flow: `<bpf>/<executor>/<case reference>`; for a review, the version"
        " (`<bpf>/v<version>`)"
    )
    step: str = Field(description="the wait step the reminder is for")
    waits_for: str | None = Field(
        description="what the step waits for (its `wait.for`), if its definition is registered"
    )
    deadline: dt.datetime = Field(description="when the wait times out")
    queued_at: dt.datetime = Field(description="when the flow asked for the reminder")
    deliveries: int = Field(description="how many times it was handed out, this one included")
    note: str | None = Field(
        default=None,
        description="a review's text: the source loaded, the effective date, the version's"
        " executors and what no longer conforms",
    )


class Acknowledgement(BaseModel):
    """A message acknowledged, and when (the first acknowledgement)."""

    id: int
    acknowledged_at: dt.datetime


async def pending(pool: asyncpg.Pool, org: str, limit: int = LISTING_LIMIT) -> list[OutboxMessage]:
    """``org``'s unacknowledged messages, the oldest first, each counted as delivered once more."""
    rows = await pool.fetch(
        "WITH d AS (UPDATE hub.reminders r SET deliveries = r.deliveries + 1,"
        " delivered_at = coalesce(r.delivered_at, now())"
        " WHERE r.id IN (SELECT id FROM hub.reminders WHERE executor = $1 AND acked_at IS NULL"
        " ORDER BY id LIMIT $2)"
        " RETURNING r.id, r.workflow_id, r.step, r.deadline, r.created_at, r.deliveries,"
        " r.kind, r.note)"
        " SELECT d.* FROM d ORDER BY d.id",
        org,
        limit,
    )
    waits = await _waits_for(pool, {(r["workflow_id"].split("/", 1)[0], r["step"]) for r in rows})
    return [
        OutboxMessage(
            id=r["id"],
            kind=r["kind"],
            note=r["note"],
            workflow_id=r["workflow_id"],
            step=r["step"],
            waits_for=waits.get((r["workflow_id"].split("/", 1)[0], r["step"])),
            deadline=r["deadline"],
            queued_at=r["created_at"],
            deliveries=r["deliveries"],
        )
        for r in rows
    ]


async def _waits_for(pool: asyncpg.Pool, steps: set[tuple[str, str]]) -> dict[tuple[str, str], str]:
    """What each (BPF, step) waits for, from the newest registered version of the BPF with a
    wait step of that id, as registered (:func:`renkei.bpf.registry.versions_of`: a version
    changed in the database since says nothing here); none if no such version has one."""
    versions = await registry.versions_of(pool, {bpf for bpf, _ in steps})
    found: dict[tuple[str, str], str] = {}
    for bpf, step in steps:
        for definition in versions.get(bpf, []):
            wait = next(
                (
                    s.wait
                    for s in walk(definition.steps)
                    if isinstance(s, WaitStep) and s.id == step
                ),
                None,
            )
            if wait is not None:
                found[(bpf, step)] = wait.for_
                break
    return found


async def ack(pool: asyncpg.Pool, org: str, message_id: int) -> Acknowledgement | None:
    """Acknowledge ``org``'s message (again: the first time stands); ``None`` if ``org`` has no
    message of this id (unknown, or another org's: the same answer)."""
    if not 0 < message_id <= MAX_ID:
        return None
    row = await pool.fetchrow(
        "UPDATE hub.reminders SET acked_at = coalesce(acked_at, now())"
        " WHERE id = $1 AND executor = $2 RETURNING id, acked_at",
        message_id,
        org,
    )
    return None if row is None else Acknowledgement(id=row["id"], acknowledged_at=row["acked_at"])


async def deliver(
    pool: asyncpg.Pool, org: str, *, follow: bool = False, poll: float = 5.0
) -> AsyncIterator[OutboxMessage]:
    """Yield ``org``'s messages; each is acknowledged when the loop body that got it completes
    (when the next one is asked for). A body that raises, or a loop left with ``break``, leaves
    its message unacknowledged: it is delivered again. Without ``follow`` it ends once the
    outbox is empty; with it, it looks again every ``poll`` seconds."""
    while True:
        batch = await pending(pool, org)
        for message in batch:
            yield message
            await ack(pool, org, message.id)
        if not batch:
            if not follow:
                return
            await asyncio.sleep(poll)
