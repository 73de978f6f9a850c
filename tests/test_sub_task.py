"""A query names the ordinance-level task (主務省令で定める事務) under its flow's task: the hub
takes it from the registered definition, decides at that level, and the records keep both."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg

from renkei.kernel import keys, records
from renkei.kernel.settings import Settings
from whitelist import store
from whitelist.models import WhitelistRow
from whitelist.store import LiveWhitelist

from .helpers import code, pick, register_fixture, sdk, start, workers

SUB_TASK = "school-entry-register-check"


@asynccontextmanager
async def _sub_task_row(
    pool: asyncpg.Pool,
    settings: Settings,
    live_whitelist: LiveWhitelist,
    n: int,
    item: str,
    **scope: str,
) -> AsyncIterator[WhitelistRow]:
    """The test's own row, in force while the block runs (the workers have it) and removed
    after: a board of education's query of the resident record for a school-entry notice,
    naming the sub-task; ``item`` its provision, ``scope`` its scope and body if any."""
    row = WhitelistRow(
        id=f"test-sub-task/{n}",
        source="test-sub-task",
        item=item,
        requester_role="municipal-board-of-education",
        task="school-entry-notice",
        provider_role="municipal-board-of-education",
        info="resident-record",
        legal_text=item,
        valid_from=dt.date(2024, 4, 1),
        sub_task=SUB_TASK,
        **scope,
    )
    await live_whitelist.wait_for_version(
        await store.upsert_rows(pool, [row], hub=keys.load(settings).signer())
    )
    try:
        yield row
    finally:
        await live_whitelist.wait_for_version(
            await store.delete_rows(pool, [row.id], hub=keys.load(settings).signer())
        )


async def test_the_hub_decides_a_querys_sub_task_and_the_records_keep_both_levels(
    client, pool, settings, catalog, live_whitelist
) -> None:
    # A row of city-minato's ordinance naming the sub-task.
    ordinance = "港区条例（試験）第1条"
    async with _sub_task_row(
        pool, settings, live_whitelist, 1, ordinance, scope="within-body", body="city-minato"
    ):
        await register_fixture(pool, "sub-task-probe.yaml")
        rc = sdk(client, settings)
        h = pick(settings, lambda h: h.municipality == "city-minato")
        subject = code(settings, "city-minato", h.members[0])
        async with workers(client, pool, settings, catalog, live_whitelist):
            flow = await rc.start(start("sub-task-probe", "city-minato", subject))
            assert (await flow.result()).outcome == "completed"
        kept = [r for r in await records.query(pool, workflow_id=flow.id)]
        for keeper in ("city-minato", records.HUB):
            [rec] = [r for r in kept if r.keeper == keeper]
            assert rec.outcome == "allowed"
            assert (rec.task, rec.sub_task) == ("school-entry-notice", SUB_TASK)
            assert f"[school-entry-notice › {SUB_TASK}]" in rec.reason
            assert rec.whitelist_row is not None


async def test_the_providers_record_keeps_the_sub_task_the_hubs_permit_names(
    client, pool, settings, catalog, live_whitelist
) -> None:
    """Across two bodies: the requester's, the hub's and the provider's records of the attempt
    each keep the statutory task and the ordinance-level one (the provider's from the hub's
    signed permit: its own gate decides on the task and the item)."""
    async with _sub_task_row(pool, settings, live_whitelist, 2, "試験 第2条"):
        await register_fixture(pool, "sub-task-across.yaml")
        rc = sdk(client, settings)
        h = pick(settings, lambda h: h.municipality == "city-shibuya")
        subject = code(settings, "city-minato", h.members[0])
        async with workers(client, pool, settings, catalog, live_whitelist):
            flow = await rc.start(start("sub-task-across", "city-minato", subject))
            assert (await flow.result()).outcome == "completed"
        kept = {r.keeper: r for r in await records.query(pool, workflow_id=flow.id)}
        assert set(kept) == {"city-minato", records.HUB, "city-shibuya"}
        for rec in kept.values():
            assert rec.outcome == "allowed", rec.reason
            assert (rec.task, rec.sub_task) == ("school-entry-notice", SUB_TASK), rec.keeper
