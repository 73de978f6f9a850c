"""All-in-one: the control worker and every sample agency's worker in one process."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import asyncpg
from temporalio.client import Client
from temporalio.worker import Worker

from activities.agencies import SAMPLE_AGENCIES
from renkei.kernel.settings import Settings
from whitelist.models import Catalog
from whitelist.store import LiveWhitelist
from workers.agency import agency_worker
from workers.control import control_worker


@contextlib.asynccontextmanager
async def running_workers(
    client: Client, pool: asyncpg.Pool, settings: Settings, catalog: Catalog, dsn: str
) -> AsyncIterator[list[Worker]]:
    """Run the control worker and the sample agencies' workers until the block exits."""
    whitelist = await LiveWhitelist(dsn).start()
    workers = [control_worker(client, pool, settings, catalog, whitelist)]
    workers += [
        agency_worker(client, pool, settings, catalog, org, whitelist) for org in SAMPLE_AGENCIES
    ]
    try:
        async with contextlib.AsyncExitStack() as stack:
            for w in workers:
                await stack.enter_async_context(w)
            yield workers
    finally:
        await whitelist.stop()
