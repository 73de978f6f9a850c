"""Life-event schedules and scans, and change notifications: each person's flow starts once."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid

import asyncpg
import pytest
from temporalio.client import Client, ScheduleBackfill, ScheduleOverlapPolicy

from activities.agencies.synthetic import REFERENCE_DATE, Person
from renkei.app.notifications import Notification, publish
from renkei.app.schedules import PREFIX, sync
from renkei.contracts.messages import ScanRequest, ScanResult
from renkei.contracts.names import LIFE_EVENT_SCAN, control_queue, scan_workflow_id
from renkei.kernel import keys, records
from renkei.kernel.pseudonyms import Pseudonyms
from renkei.kernel.settings import Settings
from whitelist.decide import JST
from workflows.life_events import cohort_for

from .helpers import code, households, sdk, workers

BPF = "coming-of-age-pension-notice"
MINATO = "city-minato"


def test_cohorts_of_each_rule() -> None:
    b = cohort_for(18, "birthday", dt.date(2026, 11, 26))
    assert (b.period_start, b.period_end) == (dt.date(2026, 11, 26), dt.date(2026, 11, 27))
    assert (b.born_from, b.born_to) == (dt.date(2008, 11, 26), dt.date(2008, 11, 27))
    leap = cohort_for(18, "birthday", dt.date(2027, 2, 28))
    assert leap.born_from == dt.date(2009, 2, 28)
    school = cohort_for(6, "school-year-start", dt.date(2026, 10, 1))
    # entering school in April 2027: born 2 April 2020 to 1 April 2021
    assert (school.born_from, school.born_to) == (dt.date(2020, 4, 2), dt.date(2021, 4, 2))
    assert school.period_start == dt.date(2027, 4, 1)
    fy = cohort_for(20, "fiscal-year-start", dt.date(2027, 1, 15))
    assert (fy.period_start, fy.born_from, fy.born_to) == (
        dt.date(2026, 4, 1),
        dt.date(2006, 4, 1),
        dt.date(2007, 4, 1),
    )


def _turning_20(settings: Settings) -> tuple[Person, dt.date]:
    # The sample population has no one of 18 or 19: a 16- or 17-year-old, on their 20th birthday.
    person = next(
        p
        for h in households(settings)
        for p in h.members
        if h.municipality == "city-minato" and 16 <= p.age(REFERENCE_DATE) <= 17
    )
    b = person.birth_date
    return person, b.replace(year=b.year + 20)


async def _scan(client: Client, settings: Settings, day: dt.date) -> ScanResult:
    return await client.execute_workflow(
        LIFE_EVENT_SCAN,
        ScanRequest(bpf=BPF, executor="city-minato", age=20, on="birthday", day=day).attested(
            keys.load(settings).signer()
        ),
        id=scan_workflow_id(BPF, "city-minato", f"test-{uuid.uuid4().hex[:8]}"),
        task_queue=control_queue(settings.task_queue_prefix, "city-minato"),
        result_type=ScanResult,
    )


async def test_a_scan_run_twice_starts_each_persons_flow_once(
    client: Client, pool: asyncpg.Pool, settings: Settings, catalog, live_whitelist
) -> None:
    person, day = _turning_20(settings)
    hub = Pseudonyms(pool, keys.load(settings).hub_key)
    async with workers(client, pool, settings, catalog, live_whitelist):
        first = await _scan(client, settings, day)
        second = await _scan(client, settings, day)
        ref = hub.case_ref(
            "city-minato", BPF, f"le{day:%Y%m%d}", code(settings, "city-minato", person)
        )
        flow = await sdk(client, settings).result(f"{BPF}/city-minato/{ref}")
    assert first.found >= 1 and first.started == first.found and first.already == 0
    assert second.started == 0 and second.already == first.found
    assert flow.outcome == "completed" and flow.result["household_size"] >= 1
    # the cohort query itself was decided and recorded like any linkage
    scans = [
        r
        for r in await records.query(pool, keeper="city-minato", limit=100000)
        if r.info == "resident-cohort" and r.step == f"scan-{day.isoformat()}"
    ]
    assert scans and {(r.outcome, r.trigger, r.subject_code) for r in scans} == {
        ("allowed", "life-event", "cohort")
    }
    runs = await sdk(client, settings).runs(bpf=BPF, trigger="life-event", limit=1000)
    assert sum(r.workflow_id == f"{BPF}/city-minato/{ref}" for r in runs) == 1


async def test_schedules_follow_the_definitions_and_a_backfill_starts_nothing_twice(
    client: Client, pool: asyncpg.Pool, settings: Settings, catalog, live_whitelist
) -> None:
    person, day = _turning_20(settings)
    try:
        report = await sync(client, pool, settings, catalog)
        ours = [s for s in report.created if s.startswith(PREFIX)]
        assert f"{PREFIX}{BPF}/city-minato/20-birthday" in ours
        assert f"{PREFIX}school-entry-notice/city-shibuya/6-school-year-start" in ours
        again = await sync(client, pool, settings, catalog)
        assert again.created == [] and sorted(again.unchanged) == sorted(ours)

        handle = client.get_schedule_handle(f"{PREFIX}{BPF}/city-minato/20-birthday")
        described = await handle.describe()
        assert described.schedule.spec.time_zone_name == "Asia/Tokyo"
        six = dt.time(6, 0, tzinfo=JST)
        window = ScheduleBackfill(
            start_at=dt.datetime.combine(day - dt.timedelta(days=1), six) - dt.timedelta(minutes=1),
            end_at=dt.datetime.combine(day + dt.timedelta(days=1), six) + dt.timedelta(minutes=1),
            overlap=ScheduleOverlapPolicy.ALLOW_ALL,
        )
        ref = Pseudonyms(pool, keys.load(settings).hub_key).case_ref(
            "city-minato", BPF, f"le{day:%Y%m%d}", code(settings, "city-minato", person)
        )
        async with workers(client, pool, settings, catalog, live_whitelist):
            await handle.backfill(window)
            flow = await asyncio.wait_for(
                _eventually_result(client, settings, f"{BPF}/city-minato/{ref}"), 60
            )
            scans = await _completed_scans(client, settings, 3)
            await handle.backfill(window)  # the same days again
            await _completed_scans(client, settings, 6)
        assert flow.outcome == "completed"
        results = [
            await client.get_workflow_handle(w, result_type=ScanResult).result() for w in scans
        ]
        assert sorted(r.period_start for r in results) == [
            day - dt.timedelta(days=1),
            day,
            day + dt.timedelta(days=1),
        ]
        rounds = sorted(
            [
                (
                    w.start_time,
                    await client.get_workflow_handle(w.id, result_type=ScanResult).result(),
                )
                async for w in client.list_workflows(
                    f"WorkflowType = '{LIFE_EVENT_SCAN}' AND TaskQueue = '{control_queue(settings.task_queue_prefix, 'city-minato')}'"
                )
            ],
            key=lambda x: x[0],
        )
        assert len(rounds) == 6
        for _, again_scan in rounds[3:]:  # the second backfill: every flow already there
            assert again_scan.started == 0 and again_scan.already == again_scan.found
    finally:
        retired = settings.model_copy(update={"mode": "operation"})
        gone = await sync(client, pool, retired, catalog)
        assert set(gone.deleted) >= {s for s in report.created}


async def _eventually_result(client: Client, settings: Settings, wid: str):
    while True:
        try:
            return await sdk(client, settings).result(wid)
        except Exception:  # not started yet
            await asyncio.sleep(0.3)


async def _completed_scans(client: Client, settings: Settings, n: int) -> list[str]:
    query = (
        f"WorkflowType = '{LIFE_EVENT_SCAN}' AND TaskQueue = '{control_queue(settings.task_queue_prefix, 'city-minato')}'"
        " AND ExecutionStatus = 'Completed'"
    )
    for _ in range(300):
        found = [w.id async for w in client.list_workflows(query)]
        if len(found) >= n:
            return found
        await asyncio.sleep(0.2)
    raise AssertionError(f"fewer than {n} scans completed")


async def test_a_notification_delivered_twice_is_processed_once(
    client: Client, pool: asyncpg.Pool, settings: Settings, catalog, live_whitelist
) -> None:
    h = next(
        h for h in households(settings) if h.municipality == "city-minato" and h.kind == "family"
    )
    recipient = h.members[0]
    hub = Pseudonyms(pool, keys.load(settings).hub_key)
    n = Notification(
        publisher="city-minato",
        event_id=f"death-{uuid.uuid4().hex[:12]}",
        event="death",
        subject=code(settings, "city-minato", recipient),
        occurred_on=dt.date(2026, 10, 31),
    )
    async with workers(client, pool, settings, catalog, live_whitelist):
        first, second = await asyncio.gather(
            publish(client, pool, settings, catalog, hub, n),
            publish(client, pool, settings, catalog, hub, n),
        )
        third = await publish(client, pool, settings, catalog, hub, n)
        [wid] = first.started
        result = await sdk(client, settings).result(wid)
    assert first.started == second.started == third.started
    assert sorted([first.duplicate, second.duplicate]) == [False, True] and third.duplicate
    assert wid.startswith("allowance-stop-on-death/city-minato/ntf-")
    assert result.result == {"stop_from": "2026-10-31", "others_in_household": len(h.members) - 1}
    kept = await records.query(pool, workflow_id=wid)
    assert kept and {r.trigger for r in kept} == {"notification"}
    # a publisher the flow does not subscribe to starts nothing
    from_jps = n.model_copy(
        update={"publisher": "jps", "subject": code(settings, "jps", recipient), "event_id": "x-1"}
    )
    assert (await publish(client, pool, settings, catalog, hub, from_jps)).started == []
    with pytest.raises(Exception, match="no subject is enrolled"):
        await publish(
            client, pool, settings, catalog, hub, n.model_copy(update={"subject": "A" * 20})
        )
