"""Notification triggers: a provider publishes a change (a death, a move, a birth) and the flows
subscribed to it start.

Delivery is at least once (a publisher retries until it gets an answer); processing is exactly
once: the notification is kept under (publisher, event id), and each flow it starts has a case
reference derived from that pair, so a second delivery — even one racing the first — finds the
same flows instead of starting new ones. A second delivery must be the same notification: the
same event id with another event, subject or date is refused (:class:`NotificationConflict`),
and starts nothing.

Who runs a subscribed flow: its executor orgs named literally, and, for an executor role, the
publisher itself when it holds the role (a municipality's death notice stops that municipality's
own allowance).
"""

from __future__ import annotations

import datetime as dt
from typing import Literal

import asyncpg
from pydantic import BaseModel, ConfigDict, Field
from temporalio.client import Client

from activities.approved import why_not_operated
from renkei.app.client import RenkeiClient
from renkei.bpf import registry
from renkei.bpf.inputs import SUBJECT_CODE
from renkei.bpf.models import BpfDefinition
from renkei.contracts.messages import StartFlow
from renkei.contracts.names import workflow_id
from renkei.kernel import attest, keys
from renkei.kernel.pseudonyms import Pseudonyms
from renkei.kernel.settings import Settings
from whitelist.models import Catalog, role_of


class Notification(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "publisher": "city-minato",
                    "event_id": "death-2026-000042",
                    "event": "death",
                    "subject": "MINATOCODEABCDEFGHIJ",
                    "occurred_on": "2026-11-01",
                }
            ]
        }
    )

    publisher: str = Field(description="the org publishing the change")
    event_id: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,79}$", description="unique per publisher"
    )
    event: Literal["death", "move", "birth"]
    subject: str = Field(
        pattern=SUBJECT_CODE.pattern, description="the subject's code at the publisher"
    )
    occurred_on: dt.date


class NotificationConflict(Exception):
    """The event id was delivered before with another event, subject or date."""


class Published(BaseModel):
    duplicate: bool
    started: list[str]


def _subscribed(d: BpfDefinition, n: Notification, catalog: Catalog) -> list[str]:
    for rule in d.notifications():
        if rule.event != n.event or not catalog.refers_to(rule.source, n.publisher):
            continue
        # An executor named by role runs the flow where the event happened: the publisher.
        out = {
            n.publisher if role_of(e) is not None else e
            for e in d.owners.executors
            if (role_of(e) is None and e in catalog.orgs) or catalog.refers_to(e, n.publisher)
        }
        return sorted(out)
    return []


async def publish(
    client: Client,
    pool: asyncpg.Pool,
    settings: Settings,
    catalog: Catalog,
    hub: Pseudonyms,
    n: Notification,
) -> Published:
    """Record the notification (once) and start every subscribed flow (once each).

    Raises :class:`NotificationConflict` if the event id was delivered with other content.
    """
    subject = await hub.subject_of(n.publisher, n.subject)
    inserted = await pool.fetchval(
        "INSERT INTO hub.notifications (publisher, event_id, event, subject_id, occurred_on)"
        " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (publisher, event_id) DO NOTHING RETURNING 1",
        n.publisher,
        n.event_id,
        n.event,
        subject,
        n.occurred_on,
    )
    if inserted is None:
        first = await pool.fetchrow(
            "SELECT event, subject_id, occurred_on FROM hub.notifications"
            " WHERE publisher = $1 AND event_id = $2",
            n.publisher,
            n.event_id,
        )
        if first is not None and (
            (first["event"], str(first["subject_id"]), first["occurred_on"])
            != (n.event, str(subject), n.occurred_on)
        ):
            raise NotificationConflict(
                f"event id {n.event_id!r} of {n.publisher} was delivered before with another"
                " event, subject or date: a new change needs a new event id"
            )
    sdk = RenkeiClient(client, settings)
    platform = keys.load(settings).signer()
    started: list[str] = []
    for found in await registry.runnable(pool, settings.mode):
        for executor in _subscribed(found.definition, n, catalog):
            # In operation, the version the executor put into operation itself, if any.
            try:
                mine = await registry.fetch(
                    pool, found.definition.bpf, None, settings.mode, executor
                )
            except registry.DefinitionAltered:  # logged; the other subscribers are started
                continue
            if mine is None or executor not in _subscribed(mine.definition, n, catalog):
                continue
            d = mine.definition
            if settings.mode == "operation" and await why_not_operated(
                pool,
                platform.public_key(),
                d.bpf,
                d.version,
                mine.content_hash,
                executor,
                before_signing=mine.content_hash in settings.unsigned_approvals,
            ):  # a row in the registry the executor did not sign: nothing reaches it
                continue
            inputs = {
                k: v
                for k, v in {"occurred_on": n.occurred_on.isoformat(), "event": n.event}.items()
                if k in d.inputs
            }
            code = await hub.code_at(executor, subject)
            case_ref = hub.case_ref(executor, d.bpf, "ntf", f"{n.publisher}:{n.event_id}")
            handle = await sdk.start(
                StartFlow(
                    bpf=d.bpf,
                    version=d.version,
                    executor=executor,
                    subject=code,
                    inputs=inputs,
                    trigger="notification",
                    case_ref=case_ref,
                    # The platform's word that this start is the notification's, not a claim.
                    attestation=attest.trigger_start(
                        platform,
                        workflow_id(d.bpf, executor, case_ref),
                        "notification",
                        d.bpf,
                        executor,
                        code,
                    ),
                )
            )
            started.append(handle.id)
    await pool.execute(
        "UPDATE hub.notifications SET started = $3 WHERE publisher = $1 AND event_id = $2",
        n.publisher,
        n.event_id,
        started,
    )
    return Published(duplicate=inserted is None, started=started)
