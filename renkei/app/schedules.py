"""Temporal Schedules for life-event triggers, kept in line with the registry.

Every BPF version that may run (operating, or any but retired in test mode) and names a
``life-event`` trigger gets one schedule per executor org: ``life-event/<bpf>/<org>/<age>-<on>``
— in operation, only for an org that put that version into operation itself.
A birthday rule scans every morning for the day; a school-year rule every 1 October for the
coming school year; a fiscal-year rule every 1 April. :func:`sync` creates the missing
schedules, updates the changed ones and deletes those no definition asks for any more.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

import asyncpg
from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleCalendarSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleRange,
    ScheduleSpec,
    ScheduleUpdate,
    ScheduleUpdateInput,
)
from temporalio.service import RPCError, RPCStatusCode

from activities.approved import why_not_operated
from renkei.bpf import registry
from renkei.bpf.models import BpfDefinition
from renkei.contracts.messages import ScanRequest
from renkei.contracts.names import LIFE_EVENT_SCAN, control_queue, scan_workflow_id
from renkei.kernel import keys
from renkei.kernel.settings import Settings
from whitelist.models import Catalog

PREFIX = "life-event/"
TIME_ZONE = "Asia/Tokyo"


@dataclass
class SyncReport:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)


def _executors(d: BpfDefinition, catalog: Catalog) -> list[str]:
    """Orgs that run the flow and can ask their own register for a cohort."""
    out = {o for e in d.owners.executors for o in catalog.orgs_of(e)}
    return sorted(
        o for o in out if o in catalog.orgs and "resident-cohort" in catalog.orgs[o].serves
    )


def _spec(on: str) -> ScheduleSpec:
    month, day = {
        "birthday": (None, None),
        "school-year-start": (10, 1),
        "fiscal-year-start": (4, 1),
    }[on]
    calendar = ScheduleCalendarSpec(
        hour=[ScheduleRange(6)],
        minute=[ScheduleRange(0)],
        month=[ScheduleRange(month)] if month else [ScheduleRange(1, 12)],
        day_of_month=[ScheduleRange(day)] if day else [ScheduleRange(1, 31)],
    )
    return ScheduleSpec(calendars=[calendar], time_zone_name=TIME_ZONE)


async def desired(
    pool: asyncpg.Pool, settings: Settings, catalog: Catalog
) -> dict[str, ScanRequest]:
    out: dict[str, ScanRequest] = {}
    signer = keys.load(settings).signer()  # the platform signs the scans it schedules
    for found in await registry.runnable(pool, settings.mode):
        for org in _executors(found.definition, catalog):
            # In operation, each org's schedule is for the version it put into operation itself.
            try:
                mine = await registry.fetch(pool, found.definition.bpf, None, settings.mode, org)
            except registry.DefinitionAltered:  # logged; the other BPFs' schedules go on
                continue
            if mine is None:
                continue
            d = mine.definition
            if settings.mode == "operation" and await why_not_operated(
                pool,
                signer.public_key(),
                d.bpf,
                d.version,
                mine.content_hash,
                org,
                before_signing=mine.content_hash in settings.unsigned_approvals,
            ):  # a row in the registry the executor did not sign: no schedule of its
                continue
            for rule in d.life_events():
                if rule.age is None or org not in _executors(d, catalog):
                    continue
                sid = f"{PREFIX}{d.bpf}/{org}/{rule.age}-{rule.on}"
                out[sid] = ScanRequest(
                    bpf=d.bpf, version=d.version, executor=org, age=rule.age, on=rule.on
                ).attested(signer)
    return out


def _schedule(settings: Settings, sid: str, req: ScanRequest) -> Schedule:
    return Schedule(
        action=ScheduleActionStartWorkflow(
            LIFE_EVENT_SCAN,
            req,
            id=scan_workflow_id(req.bpf, req.executor, sid.rsplit("/", 1)[1]),
            task_queue=control_queue(settings.task_queue_prefix, req.executor),
        ),
        spec=_spec(req.on),
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.ALLOW_ALL),
    )


def _fingerprint(settings: Settings, req: ScanRequest) -> str:
    body = {
        "req": req.model_dump(mode="json"),
        "queue": control_queue(settings.task_queue_prefix, req.executor),
    }
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]


async def sync(
    client: Client, pool: asyncpg.Pool, settings: Settings, catalog: Catalog
) -> SyncReport:
    """Make the schedules match the definitions.

    What exists is what Temporal lists plus what renkei recorded creating (the listing is
    eventually consistent): a schedule created a moment ago is compared, not created twice; one
    of a retired definition is deleted even before the listing shows it.
    """
    ns = settings.namespace
    want = await desired(pool, settings, catalog)
    report = SyncReport()
    have: set[str] = {
        r["schedule_id"]
        for r in await pool.fetch("SELECT schedule_id FROM hub.schedules WHERE namespace = $1", ns)
    }
    async for s in await client.list_schedules():
        if s.id.startswith(PREFIX):
            have.add(s.id)

    async def remember(sid: str) -> None:
        await pool.execute(
            "INSERT INTO hub.schedules (namespace, schedule_id) VALUES ($1, $2)"
            " ON CONFLICT DO NOTHING",
            ns,
            sid,
        )

    for sid, req in sorted(want.items()):
        fp = _fingerprint(settings, req)
        handle = client.get_schedule_handle(sid)
        try:
            memo = await (await handle.describe()).memo() if sid in have else None
        except RPCError as err:
            if err.status != RPCStatusCode.NOT_FOUND:
                raise
            memo = None  # recorded, but gone from Temporal (its data was reset)
        if memo is None:
            try:
                await client.create_schedule(
                    sid, _schedule(settings, sid, req), memo={"fingerprint": fp}
                )
                await remember(sid)
                report.created.append(sid)
                continue
            except ScheduleAlreadyRunningError:  # created a moment ago, not listed yet
                memo = await (await handle.describe()).memo()
        await remember(sid)
        if memo.get("fingerprint") == fp:
            report.unchanged.append(sid)
            continue
        new = _schedule(settings, sid, req)

        def update(_: ScheduleUpdateInput, new: Schedule = new) -> ScheduleUpdate:
            return ScheduleUpdate(schedule=new)

        await handle.update(update)
        report.updated.append(sid)
    for sid in sorted(have - set(want)):
        try:
            await client.get_schedule_handle(sid).delete()
        except RPCError as err:
            if err.status != RPCStatusCode.NOT_FOUND:
                raise
        await pool.execute(
            "DELETE FROM hub.schedules WHERE namespace = $1 AND schedule_id = $2", ns, sid
        )
        report.deleted.append(sid)
    return report
