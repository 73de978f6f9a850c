"""The agencies' HTTP API: start a flow, answer a waiting one, read its state.

A counter system or a portal backend calls it with its org's API token (``renkei agencies
token ORG``, kept only as a hash) as ``Authorization: Bearer …``; an org acts only on its own
flows (it is their executor). Starting twice with the same case reference and the same
subject, inputs and version returns the existing run; the same case reference with other
content is a conflict (409), and so is a notification's event id delivered again with another
event, subject or date. An org's outbox (``/api/outbox``) holds the reminders its flows ask
it to send, each listed until the org acknowledges it. The OpenAPI schema is published at
``/api/openapi.json`` (browsable at ``/api/docs``).
"""

from typing import Annotated, Any, Literal

import asyncpg
from fastapi import APIRouter, Depends, HTTPException, Path, Response, Security
from fastapi.security import HTTPAuthorizationCredentials
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field
from temporalio.service import RPCError

from renkei.app import outbox
from renkei.app.client import (
    CaseConflict,
    FlowEnd,
    FlowNotFound,
    RenkeiClient,
    ResponseRefused,
    RunStatus,
)
from renkei.app.notifications import Notification, NotificationConflict, Published, publish
from renkei.app.web.contract import (
    AGENCY_TOKEN,
    EXAMPLE_CODE,
    EXAMPLE_FLOW,
    FlowId,
    Problem,
    StartRequest,
    refusals,
)
from renkei.bpf.admission import StartRefused, admit
from renkei.bpf.inputs import SUBJECT_CODE
from renkei.bpf.models import BPF_ID
from renkei.contracts.failures import Failure
from renkei.contracts.messages import CASE_REF, Acknowledged, Waiting
from renkei.contracts.names import executor_of, workflow_id
from renkei.kernel import holds, keys
from renkei.kernel.pseudonyms import Pseudonyms, UnknownSubject
from renkei.kernel.tokens import new_token, token_hash
from whitelist.catalog import default_catalog
from whitelist.models import Catalog

TOKEN_PREFIX = "rka_"
# The same answer for an unknown flow and for another org's.
NO_FLOW = "no such flow of yours"
NO_MESSAGE = "no such message in your outbox"

# What an agency may say started its flow; life events and notifications are the platform's.
AGENCY_TRIGGERS = ("counter", "portal")
# A refused start's HTTP status by its failure type; every other refusal is a 422.
REFUSAL_STATUS = {
    Failure.NOT_AN_EXECUTOR: 403,
    Failure.PURPOSE_MISMATCH: 403,
    Failure.HOLD_NOT_APPROVED: 403,
    Failure.SUSPENDED: 403,
    # The version conflicts with the law as it now stands (a review stopped it): 409.
    Failure.VERSION_STOPPED: 409,
}


async def issue_token(pool: asyncpg.Pool, org: str) -> str:
    """A new API token for ``org`` (the old one stops working); returned once."""
    token, hashed = new_token(TOKEN_PREFIX)
    await pool.execute(
        "INSERT INTO hub.agency_tokens (org, token_hash) VALUES ($1, $2)"
        " ON CONFLICT (org) DO UPDATE SET token_hash = excluded.token_hash,"
        " created_at = now(), revoked_at = NULL",
        org,
        hashed,
    )
    return token


class Started(BaseModel):
    workflow_id: str
    run_id: str | None
    link: str


class Answer(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"step": "consent", "payload": {"agree": True}}]}
    )

    step: str
    payload: dict[str, Any] = Field(default_factory=dict)
    by: Literal["citizen", "agency", "operator"] = Field(
        default="agency",
        description="who answers: the agency's own staff or an operator. `citizen` is refused"
        " (403): the citizen answers only in their own portal session, never through an agency",
    )


class HoldAsked(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "bpf": EXAMPLE_FLOW.split("/")[0],
                    "case_ref": EXAMPLE_FLOW.split("/")[2],
                    "subject": EXAMPLE_CODE,
                    "reason": "investigation",
                    "until": "2027-01-31T00:00:00+09:00",
                }
            ]
        }
    )

    bpf: str = Field(pattern=BPF_ID)
    case_ref: str = Field(pattern=CASE_REF, description="the one case the hold covers")
    subject: str = Field(
        pattern=SUBJECT_CODE.pattern,
        description="the person the case is about, as the case's start names them (their"
        " code at your org): the hold keeps only their records from their view",
    )
    reason: str = Field(description="one of: " + ", ".join(sorted(holds.REASONS)))
    until: AwareDatetime = Field(description="with its time zone")


class FlowState(BaseModel):
    run: RunStatus
    waiting: list[Waiting]
    ended: FlowEnd | None = Field(
        default=None,
        description="once the flow is closed: its result, or the reason it was rejected,"
        " denied or failed",
    )


def router(pool: asyncpg.Pool, sdk: RenkeiClient, catalog: Catalog | None = None) -> APIRouter:
    r = APIRouter(prefix="/api", tags=["flows"])
    catalog = catalog or default_catalog()
    hub = keys.load(sdk.settings).signer().public_key()  # whose suspensions stop a start

    async def agency(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Security(AGENCY_TOKEN)],
    ) -> str:
        org: str | None = None
        if credentials is not None:
            org = await pool.fetchval(
                "SELECT org FROM hub.agency_tokens WHERE token_hash = $1 AND revoked_at IS NULL",
                token_hash(credentials.credentials),
            )
        if org is None:
            raise HTTPException(
                401, "an agency API token is required", {"WWW-Authenticate": "Bearer"}
            )
        return org

    Org = Annotated[str, Depends(agency)]

    def own(org: str, workflow_id: str) -> None:
        parts = workflow_id.split("/")
        if len(parts) != 3 or parts[1] != org:
            raise HTTPException(404, NO_FLOW)

    @r.post(
        "/flows",
        response_model=Started,
        status_code=201,
        responses=refusals(400, 401, 403, 409, 422, 503),
    )
    async def start(asked: StartRequest, org: Org, response: Response) -> Started:
        """Start a flow (the caller is its executor). The same case reference with the same
        subject, inputs and version returns the run already started; with other content it is
        refused (409), as is a version a review after a change of the law stopped (409, its
        reason naming the source and the day)."""
        flow = asked.to_start()
        if flow.executor != org:
            raise HTTPException(403, f"{org} cannot start flows as {flow.executor}")
        if flow.trigger not in AGENCY_TRIGGERS:
            raise HTTPException(
                403,
                f"an agency starts flows at its counter or portal; a {flow.trigger} start comes"
                " only from the platform",
            )
        try:
            _, inputs = await admit(
                pool,
                catalog,
                sdk.settings.mode,
                bpf=flow.bpf,
                version=flow.version,
                executor=flow.executor,
                subject=flow.subject,
                inputs=flow.inputs,
                trigger=flow.trigger,
                hub=hub,
            )
        except StartRefused as refused:
            raise HTTPException(
                REFUSAL_STATUS.get(Failure(refused.kind), 422), refused.reason
            ) from None
        if flow.hold is not None:
            try:
                await holds.check(
                    pool,
                    org,
                    flow.hold.approval,
                    flow.hold.reason,
                    flow.hold.until,
                    workflow_id(flow.bpf, org, flow.case_ref),
                    hub=hub,
                )
            except holds.HoldNotApproved as err:
                raise HTTPException(403, str(err)) from None
        try:
            handle = await sdk.start(flow.model_copy(update={"inputs": inputs}))
        except CaseConflict as err:
            raise HTTPException(409, str(err)) from None
        except ValueError as err:
            raise HTTPException(422, str(err)) from None
        except RPCError as err:
            raise HTTPException(503, f"Temporal refused the start: {err.status.name}") from None
        return Started(
            workflow_id=handle.id,
            run_id=handle.result_run_id,
            link=sdk.settings.run_link(handle.id, handle.result_run_id),
        )

    @r.get(
        "/flows/{workflow_id:path}/state",
        response_model=FlowState,
        responses=refusals(401, 404, 503),
    )
    async def state(workflow_id: FlowId, org: Org) -> FlowState:
        """The run's status and what it waits for, until when; once it is closed, its result
        or the reason it was rejected, denied or failed (`ended`)."""
        own(org, workflow_id)
        try:
            run = await sdk.describe(workflow_id)
            waiting: list[Waiting] = []
            if run.status == "RUNNING":
                waiting = await sdk.waiting(workflow_id)
                # The query waits for a workflow task in flight, so it may see a step the first
                # description did not: describe again, so the run's summary is at least as new
                # as what it waits for.
                run = await sdk.describe(workflow_id)
                if run.status != "RUNNING":
                    waiting = []
            ended = await sdk.ending(workflow_id) if run.status != "RUNNING" else None
        except FlowNotFound:
            raise HTTPException(404, NO_FLOW) from None
        return FlowState(run=run, waiting=waiting, ended=ended)

    @r.post(
        "/flows/{workflow_id:path}/respond",
        response_model=Acknowledged,
        responses=refusals(400, 401, 403, 404, 422, 503),
    )
    async def respond(workflow_id: FlowId, answer: Answer, org: Org) -> Acknowledged:
        """Answer a waiting step; refused with the reason if it does not validate."""
        own(org, workflow_id)
        if answer.by == "citizen":
            raise HTTPException(
                403,
                "an agency cannot answer as the citizen: the citizen answers in their own portal"
                " session",
            )
        try:
            return await sdk.respond(workflow_id, answer.step, answer.payload, answer.by)
        except ResponseRefused as err:
            raise HTTPException(422, str(err)) from None
        except FlowNotFound:
            raise HTTPException(404, NO_FLOW) from None

    @r.post(
        "/holds",
        response_model=holds.HoldRequest,
        status_code=201,
        tags=["holds"],
        responses=refusals(400, 401, 422),
    )
    async def request_hold(asked: HoldAsked, org: Org) -> holds.HoldRequest:
        """Ask for a disclosure hold; a start may name it once a platform operator approved it
        (`renkei holds approve ID`, signed in as one)."""
        try:
            return await holds.request(
                pool,
                org,
                asked.bpf,
                asked.case_ref,
                asked.reason,
                asked.until,
                requested_by=org,
                subject=asked.subject,
            )
        except holds.HoldNotApproved as err:
            raise HTTPException(422, str(err)) from None

    @r.post(
        "/notifications",
        response_model=Published,
        tags=["notifications"],
        responses=refusals(400, 401, 403, 422, 503),
    )
    async def notify(n: Notification, org: Org) -> Published:
        """Publish a change (death, move, birth) of a subject you hold; subscribed flows start.
        Delivering the same event id again is safe: it starts nothing new. The same event id
        with another event, subject or date is refused (409)."""
        if n.publisher != org:
            raise HTTPException(403, f"{org} cannot publish as {n.publisher}")
        hub = Pseudonyms(pool, keys.load(sdk.settings).hub_key)
        try:
            published = await publish(sdk.client, pool, sdk.settings, default_catalog(), hub, n)
            # Its own flows only: another executor's case references are that executor's.
            return published.model_copy(
                update={"started": [w for w in published.started if executor_of(w) == org]}
            )
        except UnknownSubject:
            raise HTTPException(
                422, "no subject is enrolled under this code at the publisher"
            ) from None
        except NotificationConflict as err:
            raise HTTPException(409, str(err)) from None

    @r.get(
        "/outbox",
        response_model=list[outbox.OutboxMessage],
        tags=["outbox"],
        responses=refusals(401),
    )
    async def list_outbox(org: Org) -> list[outbox.OutboxMessage]:
        """Your outbox: the reminders your flows ask you to send, the oldest first (at most
        100). Each comes again on every listing until you acknowledge it. A message names the
        flow, the step, what it waits for and the deadline, never the person."""
        return await outbox.pending(pool, org)

    @r.post(
        "/outbox/{message_id}/ack",
        response_model=outbox.Acknowledgement,
        tags=["outbox"],
        responses={
            **refusals(401, 422),
            404: {
                "model": Problem,
                "description": "No such message in the caller's outbox (the same answer for a"
                " message that does not exist and for another party's).",
            },
        },
    )
    async def acknowledge(
        message_id: Annotated[int, Path(ge=1, le=outbox.MAX_ID, description="the message's id")],
        org: Org,
    ) -> outbox.Acknowledgement:
        """Acknowledge a message: it is not listed again. Acknowledging it twice is safe."""
        done = await outbox.ack(pool, org, message_id)
        if done is None:
            raise HTTPException(404, NO_MESSAGE)
        return done

    return r
