"""One worker as its own OS process: ``renkei worker control`` / ``renkei worker agency ORG``.

A worker process joins servers that already run: the Temporal frontend and PostgreSQL named by
``RENKEI_TEMPORAL_ADDRESS`` / ``RENKEI_DATABASE_URL``, or those of a ``renkei up`` on the same
data folder. It never starts servers nor migrates the schema (``renkei init`` does). SIGTERM or
SIGINT shut it down gracefully: it stops polling and lets running activities finish.

An agency plugs in its own providers with ``--providers package.module:factory``, where
``factory(org, pool)`` returns ``{info item: provider}``; the sample agencies' providers are the
default.
"""

from __future__ import annotations

import asyncio
import importlib
import signal
from collections.abc import Callable, Mapping
from typing import Literal

import asyncpg
from pydantic import BaseModel

from activities.linkage import Provider
from renkei.kernel import keys
from renkei.kernel.db import APP_ROLE, create_pool, party_role
from renkei.kernel.servers import running_stack
from renkei.kernel.settings import Settings
from whitelist.catalog import default_catalog
from whitelist.store import LiveWhitelist
from workers.plugin import connect

ProviderFactory = Callable[[str, asyncpg.Pool], Mapping[str, Provider]]


class NoStack(RuntimeError):
    """There is no Temporal server or database to join."""


class Servers(BaseModel):
    temporal: str
    database: str


def servers(settings: Settings) -> Servers:
    """The servers a worker process joins: configured ones first, then a running ``renkei up``."""
    running = running_stack(settings.data_dir) or {}
    temporal = settings.temporal_address or running.get("temporal")
    database = settings.database_url or running.get("database")
    if not temporal or not database:
        raise NoStack(
            "no servers to join: set RENKEI_TEMPORAL_ADDRESS and RENKEI_DATABASE_URL,"
            " or run `renkei up` on this data folder first"
        )
    return Servers(temporal=temporal, database=database)


def load_factory(spec: str) -> ProviderFactory:
    """``package.module:function`` → the function."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"--providers {spec!r}: expected package.module:function")
    factory = getattr(importlib.import_module(module_name), attr, None)
    if not callable(factory):
        raise ValueError(f"--providers {spec!r}: {attr} is not a function of {module_name}")
    return factory  # type: ignore[no-any-return]


async def run_worker(
    kind: Literal["control", "agency"],
    settings: Settings,
    *,
    org: str | None = None,
    providers: str | None = None,
    ready: Callable[[str], None] = print,
) -> None:
    """Run one worker until SIGTERM/SIGINT."""
    from workers.agency import agency_worker
    from workers.control import control_worker

    found = servers(settings)
    catalog = default_catalog()
    if kind == "agency" and (org is None or org not in catalog.orgs):
        raise ValueError(f"unknown org {org!r}")
    # An agency works as its own database role: its own schema, its own chain, nothing of the hub's.
    role = party_role(str(org)) if kind == "agency" else APP_ROLE
    pool = await create_pool(found.database, max_size=10, role=role)
    whitelist: LiveWhitelist | None = None
    try:
        if kind == "control":  # the hub's process: the hub's keys, as the database knows them
            await keys.check_against(pool, keys.load(settings), str(keys.keys_path(settings)))
        else:  # an agency's process reads its own key file and nothing of the hub's
            keys.load_org(settings, str(org))
        client = await connect(settings, found.temporal, org=org if kind == "agency" else None)
        whitelist = await LiveWhitelist(found.database).start()
        if kind == "control":
            worker = control_worker(client, pool, settings, catalog, whitelist)
        else:
            assert org is not None
            own = dict(load_factory(providers)(org, pool)) if providers else None
            worker = agency_worker(client, pool, settings, catalog, org, whitelist, own)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        async with worker:
            ready(f"worker {kind}{' ' + org if org else ''} polling {worker.task_queue}")
            await stop.wait()
    finally:
        if whitelist is not None:
            await whitelist.stop()
        await pool.close()
