"""One worker set: the control worker and agency workers, built and run together.

The dev stack (``renkei up``), the conformance kit, the tests and the benchmarks all run the
same set through :func:`running_workers`; only which parts run and which providers answer differ.
Each worker is built on a client from :func:`workers.plugin.connect`, so the converter,
interceptors and sandbox come with it.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Iterable, Mapping

import asyncpg
from temporalio.client import Client
from temporalio.worker import Worker

from activities.agencies import SAMPLE_AGENCIES
from activities.linkage import Provider
from renkei.kernel.settings import Settings
from whitelist.models import Catalog
from whitelist.store import LiveWhitelist
from workers.agency import agency_worker
from workers.control import control_worker

# Providers for an org, or None for the sample agency's own.
Providers = Callable[[str], Mapping[str, Provider] | None]


def build_workers(
    client: Client,
    pool: asyncpg.Pool,
    settings: Settings,
    catalog: Catalog,
    whitelist: LiveWhitelist,
    *,
    control: bool = True,
    agencies: Iterable[str] = SAMPLE_AGENCIES,
    providers: Providers | None = None,
) -> list[Worker]:
    """The control worker (unless ``control`` is false) and one worker per org of ``agencies``."""
    workers = [control_worker(client, pool, settings, catalog, whitelist)] if control else []
    for org in agencies:
        own = providers(org) if providers is not None else None
        workers.append(
            agency_worker(
                client, pool, settings, catalog, org, whitelist, dict(own) if own else None
            )
        )
    return workers


@contextlib.asynccontextmanager
async def running_workers(
    client: Client,
    pool: asyncpg.Pool,
    settings: Settings,
    catalog: Catalog,
    whitelist: LiveWhitelist,
    *,
    control: bool = True,
    agencies: Iterable[str] = SAMPLE_AGENCIES,
    providers: Providers | None = None,
) -> AsyncIterator[list[Worker]]:
    """Run :func:`build_workers`'s set until the block exits (workers stop in reverse order)."""
    workers = build_workers(
        client,
        pool,
        settings,
        catalog,
        whitelist,
        control=control,
        agencies=agencies,
        providers=providers,
    )
    async with contextlib.AsyncExitStack() as stack:
        for w in workers:
            await stack.enter_async_context(w)
        yield workers


@contextlib.asynccontextmanager
async def live_whitelist(dsn: str) -> AsyncIterator[LiveWhitelist]:
    """The whitelist index kept current from the database (LISTEN/NOTIFY) while the block runs."""
    whitelist = await LiveWhitelist(dsn).start()
    try:
        yield whitelist
    finally:
        await whitelist.stop()
