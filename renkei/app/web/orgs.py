"""The participants' HTTP API (``/api/orgs``): the org registry and onboarding, for operators.

A caller is an operator (``renkei operators add NAME --party P --role R``) with its token as
``Authorization: Bearer …``: a platform operator adds, changes, merges, activates and retires orgs;
the conformance body certifies them. Anyone signed in reads them. Every change is recorded with the
operator's name and reaches running workers without a restart (see :mod:`whitelist.orgs`).
"""

import datetime as dt
from collections.abc import Awaitable
from typing import Annotated

import asyncpg
from fastapi import APIRouter, Depends, HTTPException, Path, Security
from fastapi.security import HTTPAuthorizationCredentials
from pydantic import BaseModel, ConfigDict, Field

from renkei.app import onboarding
from renkei.app.actors import Actor, ActorRole, actor_of
from renkei.app.web.contract import OPERATOR_TOKEN, refusals
from renkei.kernel import keys
from renkei.kernel.settings import Settings
from whitelist import orgs
from whitelist.catalog import default_catalog
from whitelist.models import ID_PATTERN, Acting, Org
from whitelist.seal import WhitelistUnsealed

OrgId = Annotated[str, Path(pattern=ID_PATTERN, max_length=63, examples=["city-example"])]


class OrgList(BaseModel):
    orgs: list[Org]


class Changed(BaseModel):
    org: str
    whitelist_version: int = Field(description="running workers decide with it once they reach it")


class Merger(BaseModel):
    model_config = ConfigDict(extra="forbid")

    into: str = Field(pattern=ID_PATTERN, max_length=63, description="the successor org")
    on: dt.date = Field(description="from this date the successor answers for the roles")


def router(pool: asyncpg.Pool, settings: Settings) -> APIRouter:
    hub = keys.load(settings).signer()  # seals each change of the registry
    r = APIRouter(prefix="/api/orgs", tags=["orgs"])
    catalog = default_catalog()

    async def operator(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Security(OPERATOR_TOKEN)],
    ) -> Actor:
        found = await actor_of(pool, credentials.credentials if credentials else None)
        if found is None:
            raise HTTPException(
                401, "an operator token is required", {"WWW-Authenticate": "Bearer"}
            )
        return found

    Operator = Annotated[Actor, Depends(operator)]

    def only(actor: Actor, role: ActorRole) -> None:
        if actor.role != role:
            raise HTTPException(403, f"{actor} may not do this: it takes a {role}")

    async def changing(org: str, made: Awaitable[int]) -> Changed:
        try:
            version = await made
        except orgs.OrgChangeRefused as err:
            status = 404 if str(err).startswith("unknown org") else 409
            raise HTTPException(status, str(err)) from None
        except WhitelistUnsealed as err:  # the registry holds what no change of ours wrote
            raise HTTPException(409, str(err)) from None
        return Changed(org=org, whitelist_version=version)

    @r.get("", response_model=OrgList, responses=refusals(401))
    async def listing(actor: Operator) -> OrgList:
        """Every org, with its kind, status, roles and items (and their periods)."""
        return OrgList(orgs=list((await orgs.load_orgs(pool)).values()))

    @r.post(
        "", response_model=Changed, status_code=201, responses=refusals(400, 401, 403, 409, 422)
    )
    async def add(new: orgs.NewOrg, actor: Operator) -> Changed:
        """Register an org (a platform operator). It asks and answers nothing until it passed
        its contract test, was certified and activated."""
        only(actor, "platform-operator")
        return await changing(new.id, orgs.add(pool, catalog, new, actor.name, actor.role, hub=hub))

    @r.post(
        "/{org}/change", response_model=Changed, responses=refusals(400, 401, 403, 404, 409, 422)
    )
    async def change(org: OrgId, what: orgs.OrgChange, actor: Operator) -> Changed:
        """Rename an org, or give it roles or items from a date, or end them on one."""
        only(actor, "platform-operator")
        return await changing(
            org, orgs.change(pool, catalog, org, what, actor.name, actor.role, hub=hub)
        )

    @r.post("/{org}/acts", response_model=Changed, responses=refusals(400, 401, 403, 404, 409, 422))
    async def add_act(org: OrgId, act: Acting, actor: Operator) -> Changed:
        """The org carries out an action (a partner's act step) on a basis, over a period:
        the hub and the org's own gate admit the act from then, without a restart."""
        only(actor, "platform-operator")
        return await changing(
            org, orgs.add_act(pool, catalog, org, act, actor.name, actor.role, hub=hub)
        )

    @r.post(
        "/{org}/acts/{action}/end",
        response_model=Changed,
        responses=refusals(400, 401, 403, 404, 409, 422),
    )
    async def end_act(org: OrgId, action: OrgId, end: orgs.ActEnd, actor: Operator) -> Changed:
        """The org stops carrying out an action on a day (the period is kept, closed)."""
        only(actor, "platform-operator")
        return await changing(
            org, orgs.end_act(pool, org, action, end.on, actor.name, actor.role, hub=hub)
        )

    @r.post(
        "/{org}/merge", response_model=Changed, responses=refusals(400, 401, 403, 404, 409, 422)
    )
    async def merge(org: OrgId, merger: Merger, actor: Operator) -> Changed:
        """Merge an org into another on a date: from then the successor answers for it."""
        only(actor, "platform-operator")
        return await changing(
            org, orgs.merge(pool, org, merger.into, merger.on, actor.name, actor.role, hub=hub)
        )

    @r.post("/{org}/activate", response_model=Changed, responses=refusals(401, 403, 404, 409))
    async def activate(org: OrgId, actor: Operator) -> Changed:
        """Activate a certified org: from now on it asks and answers."""
        only(actor, "platform-operator")
        return await changing(
            org, orgs.transition(pool, org, "active", actor.name, actor.role, hub=hub)
        )

    @r.post("/{org}/retire", response_model=Changed, responses=refusals(401, 403, 404, 409))
    async def retire(org: OrgId, actor: Operator) -> Changed:
        """Retire an org: it never asks nor answers again."""
        only(actor, "platform-operator")
        return await changing(
            org, orgs.transition(pool, org, "retired", actor.name, actor.role, hub=hub)
        )

    @r.post(
        "/{org}/certify",
        response_model=onboarding.Certificate,
        responses=refusals(401, 403, 404, 409),
    )
    async def certify(org: OrgId, actor: Operator) -> onboarding.Certificate:
        """Certify an org over its last passing contract test (the conformance body)."""
        only(actor, "conformance-body")
        try:
            return await onboarding.certify(pool, settings, org, actor.name)
        except onboarding.NotCertifiable as err:
            raise HTTPException(409, str(err)) from None
        except orgs.OrgChangeRefused as err:
            status = 404 if str(err).startswith("unknown org") else 409
            raise HTTPException(status, str(err)) from None

    return r
