"""The citizen's pages and API: their access records, newest first, in Japanese or English.

``GET /api/citizen/records`` answers a portal code given as a bearer token (the SDK's
:class:`renkei.citizen.PortalClient`). ``/citizen`` is the server-rendered page: the citizen
signs in with their portal code once, and a signed session cookie (the subject id and an
expiry, under a key derived from the hub's) stands for it afterwards, so the code itself is
not kept in the browser.
"""

import base64
import datetime as dt
import hashlib
import hmac
import uuid
from functools import partial
from pathlib import Path
from typing import Annotated, Any

import asyncpg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi import APIRouter, Depends, Form, HTTPException, Query, Request, Security
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.security import HTTPAuthorizationCredentials
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel, ConfigDict, Field
from temporalio.service import RPCError

from activities.claims import kept_ticket, runs_ticket
from renkei.app.citizen import (
    RECORDS,
    CitizenRecord,
    NotACitizen,
    RecordFilter,
    answer,
    records_for_subject,
    subject_of_portal_code,
)
from renkei.app.client import FlowNotFound, RenkeiClient, ResponseRefused
from renkei.app.web.contract import (
    CITIZEN_COOKIE,
    CITIZEN_SESSION,
    PORTAL_CODE,
    FlowId,
    RecordQuery,
    refusals,
)
from renkei.app.web.i18n import LANGS, text
from renkei.bpf import registry
from renkei.bpf.inputs import InputError, validate_values
from renkei.bpf.models import WaitStep, walk
from renkei.contracts.messages import Acknowledged, Pin
from renkei.kernel import keys
from renkei.kernel.pseudonyms import Pseudonyms
from renkei.kernel.settings import get_settings
from whitelist.decide import JST
from whitelist.models import Catalog

SESSION = CITIZEN_COOKIE
SESSION_HOURS = 2
templates = Jinja2Templates(directory=Path(__file__).parent / "templates")


class Sessions:
    """Signed, expiring session tokens naming a subject."""

    def __init__(self, hub_key: str) -> None:
        self._key = hmac.new(hub_key.encode(), b"renkei/portal-session", hashlib.sha256).digest()

    def issue(self, subject: uuid.UUID, now: dt.datetime | None = None) -> str:
        expires = int((now or dt.datetime.now(dt.UTC)).timestamp()) + SESSION_HOURS * 3600
        body = base64.urlsafe_b64encode(f"{subject}.{expires}".encode()).decode()
        return f"{body}.{self._sign(body)}"

    def subject(self, token: str | None) -> uuid.UUID | None:
        if not token or token.count(".") != 1:
            return None
        body, signature = token.split(".")
        if not hmac.compare_digest(signature, self._sign(body)):
            return None
        try:
            subject, expires = base64.urlsafe_b64decode(body).decode().split(".")
            if int(expires) < dt.datetime.now(dt.UTC).timestamp():
                return None
            return uuid.UUID(subject)
        except ValueError:
            return None

    def _sign(self, body: str) -> str:
        return hmac.new(self._key, body.encode(), hashlib.sha256).hexdigest()


def _lang(request: Request, lang: str | None) -> str:
    if lang in LANGS:
        return lang
    remembered = request.cookies.get("renkei_lang")
    if remembered in LANGS:
        return remembered
    accept = request.headers.get("accept-language", "")
    return "en" if accept.lower().startswith("en") else "ja"


class CitizenAnswer(BaseModel):
    """The citizen's own answer to a step of a flow about them (their consent, a document)."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"step": "consent", "payload": {"agree": True}}]}
    )

    step: str
    payload: dict[str, Any] = Field(default_factory=dict)


def router(
    pool: asyncpg.Pool,
    pseudonyms: Pseudonyms,
    catalog: Catalog,
    sessions: Sessions,
    sdk: RenkeiClient | None = None,
    portal_key: Ed25519PrivateKey | None = None,
) -> APIRouter:
    r = APIRouter()
    # The hub's public key, which vouches for the providers' keys their receipts must hold.
    hub_public = (portal_key or keys.load(get_settings()).signer()).public_key()

    async def bearer_subject(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Security(PORTAL_CODE)],
    ) -> uuid.UUID:
        if credentials is None:
            raise HTTPException(401, "a portal code is required", {"WWW-Authenticate": "Bearer"})
        try:
            return await subject_of_portal_code(pseudonyms, credentials.credentials)
        except NotACitizen:
            raise HTTPException(
                401, "this portal code is not known", {"WWW-Authenticate": "Bearer"}
            ) from None

    @r.get(
        "/api/citizen/records",
        response_model=list[CitizenRecord],
        tags=["citizens"],
        responses=refusals(401, 422),
    )
    async def api_records(
        subject: Annotated[uuid.UUID, Depends(bearer_subject)],
        where: Annotated[RecordQuery, Query()],
    ) -> Response:
        found = await records_for_subject(pool, catalog, subject, where, hub=hub_public)
        # Already validated models: serialise once, without FastAPI validating them again.
        return Response(RECORDS.dump_json(found), media_type="application/json")

    async def citizen(
        session: Annotated[str | None, Security(CITIZEN_SESSION)],
        credentials: Annotated[HTTPAuthorizationCredentials | None, Security(PORTAL_CODE)],
    ) -> uuid.UUID:
        """The citizen signed in: by the session cookie, or a portal code as bearer token."""
        subject = sessions.subject(session)
        return subject if subject is not None else await bearer_subject(credentials)

    async def whose(wid: str) -> tuple[str, str, bool, Pin | None]:
        """The flow's executor, its person (their code at the executor), whether a hold keeps
        the case from them, and the version its run was resolved to (``None``: a run from before
        tickets). A case held from the person's view is not theirs to find: answering it would
        tell them what its hold withholds (which case, at which agency, under which procedure),
        so it answers as a flow that does not exist."""
        assert sdk is not None and portal_key is not None
        now = dt.datetime.now(dt.UTC)
        # The hub's first answer in the run's history, else the one ticket it kept for the run.
        run, found = await sdk.resolved_ticket(wid, partial(kept_ticket, pool))
        # the hub's word for this run counts only: not another run's ticket
        ticket = runs_ticket(portal_key.public_key(), found, wid, run, sdk.settings.mode)
        pin = ticket.pin if ticket is not None else None
        try:
            started = await sdk.started_with(wid)
        except (KeyError, RuntimeError):
            # A start this process cannot open: one the executor wrote for itself alone (a
            # counter start), as a deployed hub's process holds the hub's keys only. The
            # hub's own ticket for the run names the person it resolved the run about, and a
            # hold approved for the case counts, whatever the start said.
            if ticket is None:
                raise FlowNotFound(wid) from None
            bpf, executor, case_ref = wid.split("/", 2)
            held = await pool.fetchval(
                "SELECT EXISTS (SELECT 1 FROM hub.holds WHERE bpf = $1 AND executor = $2"
                " AND case_ref = $3 AND approved_by IS NOT NULL AND until > $4)",
                bpf,
                executor,
                case_ref,
                now,
            )
            return executor, ticket.subject, bool(held), pin
        held = started.hold is not None and started.hold.until > now
        # The person the hub resolved the run about, whose records its linkages leave.
        person = ticket.subject if ticket is not None else started.subject
        return started.executor, person, held, pin

    async def why_not(pin: Pin, step: str, payload: dict[str, Any]) -> str | None:
        """Why the flow's registered definition would not take this answer of the citizen's
        (``None``: it would, if the flow waits at the step now). Said here, since the flow's
        own refusal is written for its executor alone, which a deployed hub cannot read."""
        d = await registry.pinned(pool, pin.bpf, pin.version, pin.content_hash)
        if d is None:
            return None
        wait = next((s for s in walk(d.steps) if isinstance(s, WaitStep) and s.id == step), None)
        if wait is None or wait.wait.by == "agency":
            return f"step {step!r} of this flow awaits no answer of yours"
        try:
            validate_values(wait.wait.fields, payload, None, "a field of this response")
        except InputError as err:
            return f"invalid response: {err}"
        return None

    @r.post(
        "/api/citizen/flows/{workflow_id:path}/respond",
        response_model=Acknowledged,
        tags=["citizens"],
        responses=refusals(400, 401, 404, 422, 503),
    )
    async def respond(
        workflow_id: FlowId,
        answer_: CitizenAnswer,
        subject: Annotated[uuid.UUID, Depends(citizen)],
    ) -> Acknowledged:
        """Answer, as yourself, a flow about you that waits for you (its portal signs it)."""
        if sdk is None or portal_key is None:
            raise HTTPException(503, "flows cannot be answered here")
        pin: Pin | None = None
        try:
            executor, person, held, pin = await whose(workflow_id)
            # Compared, not enrolled: naming a flow writes nothing about the one who asks.
            mine = pseudonyms.derived_code(executor, subject) == person
        except (RPCError, ValueError, TypeError, KeyError, RuntimeError, FlowNotFound):
            mine, held = False, False
        if not mine or held:  # the same answer for no flow, someone else's and a held one
            raise HTTPException(404, "no such flow about you")
        if pin is not None and (unfit := await why_not(pin, answer_.step, answer_.payload)):
            raise HTTPException(422, unfit)
        try:
            return await answer(sdk, portal_key, workflow_id, answer_.step, answer_.payload, person)
        except ResponseRefused as err:
            raise HTTPException(422, str(err)) from None
        except FlowNotFound:
            raise HTTPException(404, "no such flow about you") from None

    @r.get("/", include_in_schema=False)
    async def home() -> Response:
        return RedirectResponse("/citizen", status_code=303)

    @r.get("/citizen", response_class=HTMLResponse, include_in_schema=False)
    async def page(
        request: Request,
        lang: str | None = None,
        agency: str | None = None,
        since: str | None = None,
        until: str | None = None,
    ) -> Response:
        language = _lang(request, lang)
        subject = sessions.subject(request.cookies.get(SESSION))
        context: dict[str, Any] = {"lang": language, "t": text(language), "path": "/citizen"}
        if subject is None:
            response = templates.TemplateResponse(request, "signin.html", context)
        else:
            try:
                where = RecordFilter(
                    agency=agency or None, since=since or None, until=until or None
                )
                error = None
            except ValueError:
                where, error = RecordFilter(), "bad_filter"
            found = await records_for_subject(pool, catalog, subject, where, hub=hub_public)
            agencies = sorted(
                {(o.id, getattr(o, language)) for o in catalog.orgs.values()}, key=lambda a: a[0]
            )
            context.update(
                records=found,
                where=where,
                error=error,
                agencies=agencies,
                local=lambda t: t.astimezone(JST).strftime("%Y-%m-%d %H:%M"),
                name=lambda p: getattr(p, language),
            )
            response = templates.TemplateResponse(request, "records.html", context)
        response.set_cookie("renkei_lang", language, samesite="lax", max_age=365 * 86400)
        return response

    @r.post("/citizen/signin", include_in_schema=False)
    async def signin(
        request: Request, portal_code: Annotated[str, Form()], lang: Annotated[str, Form()] = "ja"
    ) -> Response:
        try:
            subject = await subject_of_portal_code(pseudonyms, portal_code.strip().upper())
        except NotACitizen:
            language = _lang(request, lang)
            context = {"lang": language, "t": text(language), "path": "/citizen", "failed": True}
            return templates.TemplateResponse(request, "signin.html", context, status_code=401)
        response = RedirectResponse("/citizen", status_code=303)
        response.set_cookie(
            SESSION,
            sessions.issue(subject),
            httponly=True,
            samesite="strict",
            max_age=SESSION_HOURS * 3600,
        )
        return response

    @r.post("/citizen/signout", include_in_schema=False)
    async def signout() -> Response:
        response = RedirectResponse("/citizen", status_code=303)
        response.delete_cookie(SESSION)
        return response

    return r
