"""The citizen's view: every exchange of data about them, as the hub recorded it.

A citizen signs in with their portal code (the code of the ``portal`` code space; a real
identity provider comes later). The hub translates it into its subject id and reads its own
records of that subject, which name the requesting and providing agencies, the info item, the
administrative task, its legal reference, the BPF and the application (workflow id). Records
under a disclosure hold stay hidden until the hold ends; from then on they show the hold.

This module is the SDK side (in-process, and :class:`PortalClient` over HTTP); the web app in
:mod:`renkei.app.web` and ``renkei records mine`` both call :func:`records_of`.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections.abc import Mapping
from typing import Any, Literal

import asyncpg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from renkei.app.client import RenkeiClient
from renkei.bpf import registry
from renkei.bpf.inputs import SUBJECT_CODE
from renkei.contracts.messages import Acknowledged
from renkei.kernel import attest
from renkei.kernel.pseudonyms import PORTAL, Pseudonyms, UnknownSubject
from renkei.kernel.records import (
    COLUMNS,
    HUB,
    AccessRecord,
    AttemptOutcome,
    PartyKey,
    keyring,
    outcome_problem,
    receipt_holds,
    record_problem,
)
from whitelist.decide import JST
from whitelist.models import ID_PATTERN, Action, Catalog, InfoItem, Org, Task


class NotACitizen(PermissionError):
    """The portal code is not known. Carries no personal data."""


class Party(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str
    ja: str
    en: str


Exchange = Literal[
    "provided", "unreceipted", "no_answer", "failed", "cancelled", "not_asked", "denied", "pending"
]


class CitizenRecord(BaseModel):
    """One exchange about the citizen, in the words the citizen needs."""

    model_config = ConfigDict(frozen=True)

    at: dt.datetime = Field(description="when the linkage was decided")
    outcome: Literal["allowed", "denied"]
    requester: Party
    provider: Party
    info: Party
    task: Party
    legal_reference: str
    bpf: str = Field(
        description="the flow that made the linkage (for a one-stop procedure: the"
        " part of it that did)"
    )
    bpf_version: int
    procedure: Party = Field(
        default=Party(id="", ja="", en=""),
        description="the procedure the citizen applied for, by its title: the one-stop flow a"
        " part of it served, or the flow itself",
    )
    application: str = Field(
        description="the application (workflow id) the linkage served: the one-stop flow's when"
        " a part of it made the linkage"
    )
    step: str
    action: bool = Field(
        default=False,
        description="a partner was asked to carry out an action (an act step), not to answer:"
        " ``info`` names the action and ``provider`` the partner",
    )
    exchange: Exchange = Field(
        default="pending",
        description="what became of the exchange: ``provided`` only on the provider's own"
        " signed word (its receipt, forwarded to the hub, or kept by the provider itself);"
        " ``unreceipted``: permitted, and the provider's receipt never reached the hub (the"
        " executor said it was provided); ``not_asked``: permitted ahead of its step, and the"
        " procedure ended before the provider was asked (nothing provided); ``pending``:"
        " permitted, no outcome yet",
    )
    provided_per: Literal["hub", "provider"] | None = Field(
        default=None,
        description="where ``provided`` comes from: ``hub``, the hub's outcome (on the"
        " provider's receipt the executor forwarded); ``provider``, the provider's own record"
        " of its answer only (the executor reported a failure, or nothing), counted only for an"
        " attempt the hub permitted and under the provider's key the hub registered",
    )
    held_until: dt.datetime | None = Field(
        default=None, description="the record is (or was) withheld from the citizen until then"
    )
    hold_reason: str | None = None
    vouched: bool = Field(
        default=True,
        description="the record is signed by a party entitled to write it, with a key the hub"
        " registered, and its content is what was signed (and so is its outcome, by the hub);"
        " false: someone wrote or changed it in another's name — shown, flagged, and reported"
        " by ``renkei records verify``",
    )
    withheld: bool = Field(
        default=False,
        description="the record exists but is withheld until held_until, under an approved"
        " disclosure hold: what it is about is shown only then",
    )


log = logging.getLogger(__name__)

WITHHELD = Party(id="withheld", ja="（表示保留中）", en="(withheld)")


# The days a citizen may narrow their records by: wide enough for any record, and never a day
# at the edge of what a date holds (0001-01-01 in Japan time is before year 1 in UTC, and the
# day after 9999-12-31 does not exist): a filter outside is refused (422), not a 500.
FIRST_DAY, LAST_DAY = dt.date(1900, 1, 1), dt.date(2999, 12, 31)


class RecordFilter(BaseModel):
    """What a citizen may narrow the list by."""

    agency: str | None = Field(
        default=None, pattern=ID_PATTERN, description="requesting or providing org id"
    )
    since: dt.date | None = Field(default=None, ge=FIRST_DAY, le=LAST_DAY)
    until: dt.date | None = Field(default=None, ge=FIRST_DAY, le=LAST_DAY, description="inclusive")
    limit: int = Field(default=500, ge=1, le=5000)


RECORD_COLUMNS = ", ".join(f"r.{c}" for c in COLUMNS)
OUTCOME_COLUMNS = ", ".join(f"o.{f} AS o_{f}" for f in AttemptOutcome.model_fields)


def _vouched(r: asyncpg.Record, ring: dict[str, PartyKey]) -> tuple[bool, bool]:
    """(the record holds, its outcome holds): each checked on its own against the keys the hub
    registered (``renkei records verify`` checks them in their chains too)."""
    rec = AccessRecord.model_construct(**{c: r[c] for c in COLUMNS})
    record_ok = record_problem(rec, ring, r["stored_at"]) is None
    if r["o_attempt_key"] is None:
        return record_ok, True
    o = AttemptOutcome.model_construct(**{f: r[f"o_{f}"] for f in AttemptOutcome.model_fields})
    outcome_ok = outcome_problem(o, rec.entry_hash or rec.record_hash, ring) is None
    return record_ok and outcome_ok, outcome_ok


def _party(table: Mapping[str, Org | Task | InfoItem | Action], key: str) -> Party:
    found = table.get(key)
    if found is None:
        return Party(id=key, ja=key, en=key)
    return Party(id=key, ja=found.ja, en=found.en)


async def subject_of_portal_code(pseudonyms: Pseudonyms, portal_code: str) -> uuid.UUID:
    if not SUBJECT_CODE.match(portal_code):  # not even the shape of a code: nothing to look up
        raise NotACitizen("this portal code is not known")
    try:
        return await pseudonyms.subject_of(PORTAL, portal_code)
    except UnknownSubject:
        raise NotACitizen("this portal code is not known") from None


async def records_of(
    pool: asyncpg.Pool,
    pseudonyms: Pseudonyms,
    catalog: Catalog,
    portal_code: str,
    where: RecordFilter | None = None,
    *,
    hub: Ed25519PublicKey,
    now: dt.datetime | None = None,
) -> list[CitizenRecord]:
    """The records about the holder of ``portal_code``, newest first (``hub``: the hub's
    public signing key, which vouches for the providers' keys their receipts are checked
    against)."""
    subject = await subject_of_portal_code(pseudonyms, portal_code)
    return await records_for_subject(pool, catalog, subject, where, hub=hub, now=now)


async def records_for_subject(
    pool: asyncpg.Pool,
    catalog: Catalog,
    subject: uuid.UUID,
    where: RecordFilter | None = None,
    *,
    hub: Ed25519PublicKey,
    now: dt.datetime | None = None,
) -> list[CitizenRecord]:
    """The hub's records about ``subject`` the citizen may see now, newest first.

    A provider's own receipt shows an exchange as provided only if the hub permitted the
    attempt and the receipt is signed with the provider's key the hub registered (``hub``: the
    hub's public signing key), not revoked when the database stored it: a receipt the
    application's role wrote in the provider's name, or one the provider kept of an attempt
    the hub denied (no permit was ever issued), shows nothing."""
    f = where or RecordFilter()
    moment = now or dt.datetime.now(dt.UTC)
    args: list[object] = [HUB, str(subject)]
    conds = ["r.keeper = $1", "r.subject_code = $2"]
    if f.agency:
        # A withheld record is listed whatever agency is asked for: listed under its own
        # parties alone, it would name who asked whom, which is what it withholds.
        args.extend([f.agency, moment])
        conds.append(
            f"(r.requester = ${len(args) - 1} OR r.provider = ${len(args) - 1}"
            f" OR r.hold_until > ${len(args)})"
        )
    if f.since:
        args.append(dt.datetime.combine(f.since, dt.time(), tzinfo=JST))
        conds.append(f"r.decided_at >= ${len(args)}")
    if f.until:
        args.append(dt.datetime.combine(f.until + dt.timedelta(days=1), dt.time(), tzinfo=JST))
        conds.append(f"r.decided_at < ${len(args)}")
    args.append(f.limit)
    # What became of each exchange: the hub's outcome, and the provider's own receipt of its
    # answer (which shows an exchange the executor hid by reporting a failure, or nothing).
    rows = await pool.fetch(
        f"SELECT {RECORD_COLUMNS}, r.stored_at, {OUTCOME_COLUMNS}, o.outcome AS ended,"
        " o.receipt IS NOT NULL AS receipted, p.id IS NOT NULL AS answered,"
        " p.permit_signature, p.answer_digest, p.signature AS receipt_signature,"
        " p.stored_at AS receipt_stored_at"
        " FROM records.access_records r"
        " LEFT JOIN records.attempt_outcomes o ON o.attempt_key = r.attempt_key"
        " LEFT JOIN records.answer_receipts p ON p.keeper = r.provider"
        " AND p.attempt_key = r.attempt_key"
        f" WHERE {' AND '.join(conds)}"
        f" ORDER BY r.decided_at DESC, r.id DESC LIMIT ${len(args)}",
        *args,
    )

    # Each record and outcome is checked on its own against the keys the hub registered (and
    # the provider's own receipts the hub's outcome does not already say): a row the
    # application's role wrote, or changed, in the hub's name is no one's word.
    ring = {}
    if rows:
        async with pool.acquire() as conn:
            ring = await keyring(conn, hub)
    vouched = {id(r): _vouched(r, ring) for r in rows}
    if not all(v for v, _ in vouched.values()):
        log.warning(
            "citizen view: %d of %d records or outcomes fail their signature check;"
            " renkei records verify names them",
            sum(1 for v, _ in vouched.values() if not v),
            len(rows),
        )

    def answered(r: asyncpg.Record) -> bool:
        return (
            r["answered"]
            and r["outcome"] == "allowed"
            and receipt_holds(
                ring,
                r["provider"],
                r["permit_signature"],
                r["answer_digest"],
                r["receipt_signature"],
                r["receipt_stored_at"],
            )
        )

    def exchange(r: asyncpg.Record) -> tuple[Exchange, Literal["hub", "provider"] | None]:
        ended_ok = vouched[id(r)][1]  # an outcome the hub did not sign says nothing
        if ended_ok and r["ended"] == "provided":
            return "provided", "hub"
        if answered(r):  # the provider's own word, whatever the executor said
            return "provided", "provider"
        if ended_ok and r["ended"] is not None:
            ended: Exchange = r["ended"]
            return ended, None
        return ("denied" if r["outcome"] == "denied" else "pending"), None

    # Each procedure by its title (its newest registered version's, as registered: a version
    # changed in the database since names nothing here), as the catalog names it.
    titles = {
        bpf: Party(id=bpf, ja=versions[0].title.ja or bpf, en=versions[0].title.en or bpf)
        for bpf, versions in (
            await registry.versions_of(pool, {r["parent_bpf"] or r["bpf"] for r in rows})
        ).items()
    }

    def procedure(r: asyncpg.Record) -> Party:
        applied = r["parent_bpf"] or r["bpf"]
        return titles.get(applied) or Party(id=applied, ja=applied, en=applied)

    parties: dict[tuple[str, str], Party] = {}

    def party(kind: str, table: Mapping[str, Org | Task | InfoItem | Action], key: str) -> Party:
        found = parties.get((kind, key))
        if found is None:
            found = parties[(kind, key)] = _party(table, key)
        return found

    def withheld(r: asyncpg.Record) -> CitizenRecord:
        # The citizen learns that a record exists and until when it is withheld, and why; not
        # who asked whom for what.
        return CitizenRecord.model_construct(
            at=r["decided_at"],
            outcome=r["outcome"],
            requester=WITHHELD,
            provider=WITHHELD,
            info=WITHHELD,
            task=WITHHELD,
            legal_reference="",
            bpf="",
            bpf_version=0,
            procedure=WITHHELD,
            application="",
            step="",
            held_until=r["hold_until"],
            hold_reason=r["hold_reason"],
            withheld=True,
            vouched=vouched[id(r)][0],
        )

    # Rows come from typed columns under the database's constraints: built without re-validation.
    return [
        withheld(r)
        if r["hold_until"] is not None and r["hold_until"] > moment
        else CitizenRecord.model_construct(
            at=r["decided_at"],
            outcome=r["outcome"],
            requester=party("org", catalog.orgs, r["requester"]),
            provider=party("org", catalog.orgs, r["provider"]),
            # A partner's act names its action (what the partner was asked to do).
            info=party("info", catalog.actions, r["info"])
            if r["info"] in catalog.actions
            else party("info", catalog.info_items, r["info"]),
            action=r["info"] in catalog.actions,
            task=party("task", catalog.tasks, r["task"]),
            legal_reference=r["legal_reference"],
            bpf=r["bpf"],
            bpf_version=r["bpf_version"],
            procedure=procedure(r),
            application=r["parent_workflow_id"] or r["workflow_id"],
            step=r["step"],
            exchange=exchange(r)[0],
            provided_per=exchange(r)[1],
            held_until=r["hold_until"],
            hold_reason=r["hold_reason"],
            withheld=False,
            vouched=vouched[id(r)][0],
        )
        for r in rows
    ]


RECORDS = TypeAdapter(list[CitizenRecord])


class PortalClient:
    """The citizen's records over HTTP, as a portal or an app would read them."""

    def __init__(self, base_url: str, portal_code: str) -> None:
        self._base = base_url.rstrip("/")
        self._code = portal_code

    async def records(self, where: RecordFilter | None = None) -> list[CitizenRecord]:
        import httpx

        params = (where or RecordFilter()).model_dump(mode="json", exclude_none=True)
        async with httpx.AsyncClient(timeout=30) as http:
            response = await http.get(
                f"{self._base}/api/citizen/records",
                params=params,
                headers={"Authorization": f"Bearer {self._code}"},
            )
        if response.status_code == 401:
            raise NotACitizen("this portal code is not known")
        response.raise_for_status()
        return RECORDS.validate_json(response.content)


async def answer(
    sdk: RenkeiClient,
    portal: Ed25519PrivateKey,
    workflow_id: str,
    step: str,
    payload: dict[str, Any],
    person: str,
) -> Acknowledged:
    """The citizen's own answer to a flow about them (their consent, a document), as their
    portal session gives it: signed by the portal, so the flow knows it is the citizen's, and
    for ``person`` (the citizen's code at the flow's executor), so it counts for no one else.

    Call it only for the citizen signed in, about a flow whose subject they are (the portal's
    route checks that, see :mod:`renkei.app.web.portal`).
    """
    run = (await sdk.describe(workflow_id)).run_id or ""  # the run answered now
    return await sdk.respond(
        workflow_id,
        step,
        payload,
        by="citizen",
        attestation=attest.citizen_response(portal, workflow_id, run, step, payload, person),
    )
