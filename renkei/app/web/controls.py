"""The platform operator's API: the PIA registry and the emergency stop (``/api/platform``).

Called with a platform operator's token (``renkei operators add NAME``: an operator of the hub's
party) as ``Authorization: Bearer rko_…``; an org's own operator is refused (403), no token or an
unknown one too (401). Every change names the operator the token belongs to; the checks and
answers are :mod:`renkei.app.controls`'s, as the CLI's are.
"""

from typing import Annotated

import asyncpg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi import APIRouter, Depends, HTTPException, Path, Query, Security
from fastapi.security import HTTPAuthorizationCredentials

from renkei.app import controls
from renkei.app.web.codec_server import operator_and_party
from renkei.app.web.contract import OPERATOR_TOKEN, refusals
from renkei.contracts.names import HUB
from whitelist import controls_store
from whitelist.controls import Pia, Suspension, SuspensionKind
from whitelist.models import ID_PATTERN, Catalog

Id = Annotated[str, Path(pattern=ID_PATTERN, max_length=100)]


def router(pool: asyncpg.Pool, catalog: Catalog, hub: Ed25519PrivateKey) -> APIRouter:
    """``hub``: the hub's key, which signs each change (and whose signatures count)."""
    public = hub.public_key()
    r = APIRouter(prefix="/api/platform", tags=["platform"])

    async def platform_operator(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Security(OPERATOR_TOKEN)],
    ) -> str:
        found = await operator_and_party(pool, credentials.credentials if credentials else None)
        if found is None:
            raise HTTPException(
                401, "a platform operator's token is required", {"WWW-Authenticate": "Bearer"}
            )
        name, party = found
        if party != HUB:
            raise HTTPException(403, f"{name} is an operator of {party}'s, not of the platform")
        return name

    Operator = Annotated[str, Depends(platform_operator)]

    @r.get("/pias", response_model=list[Pia], responses=refusals(401, 403, 422))
    async def list_pias(
        _: Operator,
        org: Annotated[str | None, Query(pattern=ID_PATTERN, max_length=100)] = None,
        task: Annotated[str | None, Query(pattern=ID_PATTERN, max_length=100)] = None,
    ) -> list[Pia]:
        """The PIAs on record: each org's latest for each task."""
        return await controls_store.pias(pool, org, task, hub=public)

    @r.get(
        "/pias/{org}/{task}/history",
        response_model=list[controls_store.PiaEvent],
        responses=refusals(401, 403, 404, 422),
    )
    async def pia_history(org: Id, task: Id, _: Operator) -> list[controls_store.PiaEvent]:
        """Every change of one org's PIA for one task, the oldest first."""
        found = await controls_store.pia_history(pool, org, task, hub=public)
        if not found:
            raise HTTPException(404, f"{org} has no PIA recorded for task {task!r}")
        return found

    @r.put(
        "/pias/{org}/{task}",
        response_model=controls.PiaRecorded,
        responses=refusals(400, 401, 403, 422),
    )
    async def set_pia(
        org: Id, task: Id, change: controls.PiaChange, operator: Operator
    ) -> controls.PiaRecorded:
        """Record an org's PIA for a task as approved; the earlier ones stay in its history."""
        try:
            return await controls.set_pia(pool, catalog, org, task, change, operator, hub=hub)
        except controls.Refused as err:
            raise HTTPException(422, str(err)) from None

    @r.post(
        "/pias/{org}/{task}/withdraw",
        response_model=controls.PiaRecorded,
        responses=refusals(400, 401, 403, 422),
    )
    async def withdraw_pia(
        org: Id, task: Id, asked: controls.Withdrawal, operator: Operator
    ) -> controls.PiaRecorded:
        """Withdraw an org's PIA for a task: from now its linkages under the task are denied."""
        try:
            return await controls.withdraw_pia(
                pool, catalog, org, task, asked.reason, operator, hub=hub
            )
        except controls.Refused as err:
            raise HTTPException(422, str(err)) from None

    @r.get("/suspensions", response_model=list[Suspension], responses=refusals(401, 403))
    async def list_suspensions(_: Operator) -> list[Suspension]:
        """The suspensions in force, the oldest first."""
        return await controls_store.suspensions(pool, hub=public)

    @r.get(
        "/suspensions/history",
        response_model=list[controls_store.SuspensionEvent],
        responses=refusals(401, 403, 422),
    )
    async def suspension_history(
        _: Operator,
        kind: SuspensionKind | None = None,
        target: Annotated[str | None, Query(max_length=200)] = None,
    ) -> list[controls_store.SuspensionEvent]:
        """Every suspension and lift (of one target), the oldest first: who, when, why."""
        return await controls_store.suspension_history(pool, kind, target, hub=public)

    @r.post(
        "/suspensions",
        response_model=controls.SuspensionRecorded,
        status_code=201,
        responses=refusals(400, 401, 403, 422),
    )
    async def suspend(
        asked: controls.SuspensionAsked, operator: Operator
    ) -> controls.SuspensionRecorded:
        """Suspend at once an org (as requester, provider or both), a BPF version or a whitelist
        row: from now its linkages are denied, with this suspension as the reason."""
        try:
            return await controls.suspend(pool, catalog, asked, operator, hub=hub)
        except controls.Refused as err:
            raise HTTPException(422, str(err)) from None

    @r.post(
        "/suspensions/lift",
        response_model=controls.LiftRecorded,
        responses=refusals(400, 401, 403, 422),
    )
    async def lift(asked: controls.LiftAsked, operator: Operator) -> controls.LiftRecorded:
        """Lift a suspension in force (422 when there is none)."""
        try:
            return await controls.lift(pool, asked, operator, hub=hub)
        except controls.Refused as err:
            raise HTTPException(422, str(err)) from None

    return r
