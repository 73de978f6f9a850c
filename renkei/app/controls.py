"""The PIA registry and the emergency stop, as the platform operator changes them.

The CLI (``renkei pia``, ``renkei suspend``, ``renkei lift``, ``renkei suspensions``) and the
HTTP API (``/api/platform/…``) both come through here: the same checks, the same answers. Only a
platform operator — an operator of the hub's party in that role (``renkei operators add NAME``),
signed in with its own token (the CLI's ``RENKEI_OPERATOR_TOKEN``, the API's bearer token) — may
make a change, and every change names them. What is checked before anything is
written: the org and the task exist in the catalog, the BPF version is registered, the whitelist
row is in the store, the dates follow each other, the reason is a line of text.
"""

from __future__ import annotations

import datetime as dt

import asyncpg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import BaseModel, ConfigDict, Field, model_validator

from renkei.app.actors import Actor, signed_in
from renkei.bpf import registry
from renkei.bpf.models import did_you_mean
from renkei.contracts.names import HUB
from whitelist import controls_store
from whitelist.controls import (
    REASON_MAX,
    REASON_PATTERN,
    Pia,
    PiaLevel,
    Side,
    Suspension,
    SuspensionKind,
)
from whitelist.models import Catalog


class NotAPlatformOperator(PermissionError):
    """The signed-in operator is not a platform operator (the hub's party, in that role)."""


class Refused(ValueError):
    """A change refused for what it asks; the message says why, and names no person."""


Reason = Field(
    min_length=1,
    max_length=REASON_MAX,
    pattern=REASON_PATTERN,
    description="why, in one line (recorded with the change; nothing personal in it)",
)


class PiaChange(BaseModel):
    """A PIA as approved, to record as the one in force for (org, task)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"level": "full", "approved_on": "2026-04-01", "review_due": "2031-03-31"}]
        },
    )

    level: PiaLevel = Field(
        description="basic 基礎項目評価, priority 重点項目評価, full 全項目評価"
    )
    approved_on: dt.date
    review_due: dt.date = Field(description="the day the next review is due; past it, lapsed")
    note: str = Field(default="", max_length=REASON_MAX, pattern=r"^[^\x00-\x1f\x7f-\x9f]*$")

    @model_validator(mode="after")
    def _in_order(self) -> PiaChange:
        if self.review_due < self.approved_on:
            raise ValueError("review_due: before approved_on")
        return self


class Withdrawal(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Reason


class SuspensionAsked(BaseModel):
    """What to suspend: an org (on one side or both), a BPF version, or a whitelist row."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "kind": "org",
                    "target": "example-org",
                    "side": "provider",
                    "reason": "a suspected leak under investigation",
                }
            ]
        },
    )

    kind: SuspensionKind
    target: str = Field(
        min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f-\x9f\s]+$", description="the id"
    )
    version: int | None = Field(default=None, ge=1, description="the BPF's version (kind bpf)")
    side: Side | None = Field(default=None, description="kind org: which side (default both)")
    reason: str = Reason

    @model_validator(mode="after")
    def _fits_kind(self) -> SuspensionAsked:
        if self.kind == "bpf" and self.version is None:
            raise ValueError("version: a BPF is suspended one version at a time")
        if self.kind != "bpf" and self.version is not None:
            raise ValueError(f"version: only a BPF has versions, not a {self.kind}")
        if self.kind != "org" and self.side is not None:
            raise ValueError("side: only an org is suspended on a side")
        return self


class LiftAsked(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: SuspensionKind
    target: str = Field(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f-\x9f\s]+$")
    version: int | None = Field(default=None, ge=1)
    reason: str = Reason

    @model_validator(mode="after")
    def _fits_kind(self) -> LiftAsked:
        if (self.kind == "bpf") != (self.version is not None):
            raise ValueError("version: given for a BPF (one version at a time), and only for one")
        return self


class Changed(BaseModel):
    """A change recorded, and the version running workers reach it at."""

    version: int


class PiaRecorded(Changed):
    pia: Pia


class SuspensionRecorded(Changed):
    suspension: Suspension


class LiftRecorded(Changed):
    lifted: controls_store.SuspensionEvent


def platform_operator(actor: Actor) -> str:
    """The signed-in ``actor``'s name if it is a platform operator (the hub's); else refused."""
    if actor.party != HUB or actor.role != "platform-operator":
        raise NotAPlatformOperator(
            f"{actor} is not a platform operator"
            + ("" if actor.party == HUB else f" (an operator of {actor.party}'s)")
        )
    return actor.name


async def signed_in_platform_operator(pool: asyncpg.Pool) -> str:
    """The signed-in operator's name (``RENKEI_OPERATOR_TOKEN``), if it is a platform operator;
    :class:`NotSignedIn` without a current token, :class:`NotAPlatformOperator` for another's."""
    return platform_operator(await signed_in(pool))


def _org(catalog: Catalog, org: str) -> None:
    if org not in catalog.orgs:
        raise Refused(f"unknown org {org!r}{did_you_mean(org, catalog.orgs)}")


def _task(catalog: Catalog, task: str) -> None:
    if task not in catalog.tasks:
        raise Refused(f"unknown task {task!r}{did_you_mean(task, catalog.tasks)}")


async def _target(
    pool: asyncpg.Pool, catalog: Catalog, kind: str, target: str, v: int | None
) -> None:
    if kind == "org":
        _org(catalog, target)
    elif kind == "bpf":
        if v is None or await registry.state_of(pool, target, v) is None:
            raise Refused(f"{target} version {v} is not registered")
    elif not await pool.fetchval("SELECT 1 FROM whitelist.rows WHERE id = $1", target):
        raise Refused(f"no whitelist row {target!r} (see `renkei whitelist list`)")


async def set_pia(
    pool: asyncpg.Pool,
    catalog: Catalog,
    org: str,
    task: str,
    change: PiaChange,
    operator: str,
    *,
    hub: Ed25519PrivateKey,
) -> PiaRecorded:
    _org(catalog, org)
    _task(catalog, task)
    pia = Pia(org=org, task=task, **change.model_dump())
    recorded, version = await controls_store.set_pia(pool, pia, operator, hub=hub)
    return PiaRecorded(pia=recorded, version=version)


async def withdraw_pia(
    pool: asyncpg.Pool,
    catalog: Catalog,
    org: str,
    task: str,
    reason: str,
    operator: str,
    *,
    hub: Ed25519PrivateKey,
) -> PiaRecorded:
    _org(catalog, org)
    _task(catalog, task)
    try:
        recorded, version = await controls_store.withdraw_pia(
            pool, org, task, reason, operator, hub=hub
        )
    except controls_store.ControlRefused as err:
        raise Refused(str(err)) from None
    return PiaRecorded(pia=recorded, version=version)


async def suspend(
    pool: asyncpg.Pool,
    catalog: Catalog,
    asked: SuspensionAsked,
    operator: str,
    *,
    hub: Ed25519PrivateKey,
) -> SuspensionRecorded:
    await _target(pool, catalog, asked.kind, asked.target, asked.version)
    s, version = await controls_store.suspend(
        pool,
        asked.kind,
        asked.target,
        asked.reason,
        operator,
        hub=hub,
        version=asked.version,
        side=asked.side,
    )
    return SuspensionRecorded(suspension=s, version=version)


async def lift(
    pool: asyncpg.Pool, asked: LiftAsked, operator: str, *, hub: Ed25519PrivateKey
) -> LiftRecorded:
    try:
        event, version = await controls_store.lift(
            pool,
            asked.kind,
            asked.target,
            asked.reason,
            operator,
            hub=hub,
            version=asked.version,
        )
    except controls_store.ControlRefused as err:
        raise Refused(str(err)) from None
    return LiftRecorded(lifted=event, version=version)


def pia_label(pia: Pia | None, day: dt.date) -> str:
    """A PIA in a few words for a listing: its level and dates, or that there is none."""
    return pia.describe(day) if pia else "no PIA"
