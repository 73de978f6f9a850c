"""One party's worker as its own OS process: ``renkei worker hub`` (the hub's activities),
``renkei worker control ORG`` (an executor's flows) and ``renkei worker agency ORG`` (an org's
providers). Each reads its own party's key file only and logs in as its own database role.

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
import contextlib
import importlib
import signal
from collections.abc import Callable, Mapping
from typing import Literal

import asyncpg
from pydantic import BaseModel
from temporalio.worker import Worker

from activities.direct import DirectWiring
from activities.linkage import Provider
from renkei.kernel import keys, records
from renkei.kernel.db import APP_ROLE, create_pool, party_role, require_schema
from renkei.kernel.db import connect as connect_db
from renkei.kernel.servers import running_stack
from renkei.kernel.settings import Settings
from whitelist.catalog import default_catalog
from whitelist.models import Org
from whitelist.orgs import load_orgs
from whitelist.store import LiveWhitelist
from workers import heap
from workers.control import hub_collector
from workers.plugin import HUB, attach_registry, connect, party_client, reads_ring

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


async def registered_orgs(dsn: str, role: str | None = APP_ROLE) -> dict[str, Org]:
    """The org registry's orgs (empty before ``renkei init`` seeded it), read as ``role``."""
    conn = await connect_db(dsn, role=role)
    try:
        return await load_orgs(conn)
    finally:
        await conn.close()


async def run_worker(
    kind: Literal["hub", "control", "agency"],
    settings: Settings,
    *,
    org: str | None = None,
    providers: str | None = None,
    ready: Callable[[str], None] = print,
) -> None:
    """Run one party's worker until SIGTERM/SIGINT: the hub's (with the legacy control worker
    of runs from before executor-side control), an executor's control worker, or an agency's."""
    from workers.agency import agency_worker
    from workers.assembly import serving_directly
    from workers.carried import carry_over_unsigned
    from workers.control import control_worker, hub_worker, legacy_control_worker

    found = servers(settings)
    # An org works as its own database role: its own schema, its own chain, nothing of the hub's.
    role = party_role(str(org)) if kind != "hub" else APP_ROLE
    # The org registry's view, as the database holds it now (workers then follow it live).
    catalog = default_catalog().model_copy(
        update={"orgs": await registered_orgs(found.database, role) or default_catalog().orgs}
    )
    if kind != "hub" and (org is None or org not in catalog.orgs):
        raise ValueError(
            f"unknown org {org!r}"
            + (
                " (the hub's activities now run in `renkei worker hub`; each executor's flows in"
                " `renkei worker control ORG`)"
                if kind == "control" and org is None
                else ""
            )
        )
    # An org works as its own database role: its own schema, its own chain, nothing of the hub's.
    pool = await create_pool(found.database, max_size=10, role=role)
    whitelist: LiveWhitelist | None = None
    try:
        await require_schema(pool)  # not a write failing on a column a release later
        if kind == "hub":  # the hub's process: the hub's keys, as the database knows them
            await keys.check_against(pool, keys.load(settings), str(keys.keys_path(settings)))
            await carry_over_unsigned(pool, settings)  # an upgrade's, once (workers.carried)
        else:  # an org's process reads its own key file and nothing of the hub's
            keys.load_org(settings, str(org))
        party = HUB if kind == "hub" else str(org)
        client = await connect(
            settings,
            found.temporal,
            parties=[party],
            legacy_ring=reads_ring(settings, kind),
        )
        attach_registry(client, pool, settings)
        # the hub's seal on the whitelist, checked with the hub's key as this party holds it
        sealed_by = (
            keys.load(settings).signer().public_key()
            if kind == "hub"
            else keys.load_org(settings, str(org)).hub_verifier()
        )
        whitelist = await LiveWhitelist(found.database, sealed_by=sealed_by, role=role).start()
        catalog = whitelist.bind(default_catalog())
        workers: list[Worker]
        direct = DirectWiring(dict(settings.linkage_endpoints))
        if kind == "hub":
            workers = [hub_worker(client, pool, settings, catalog, whitelist, direct=direct)]
            if settings.legacy_runs_before is not None:  # runs from before, still in flight
                legacy = party_client(client, settings, [HUB], legacy=True)
                workers.append(legacy_control_worker(legacy, pool, settings, catalog, whitelist))
        if kind == "control":
            workers = [control_worker(client, settings, party, direct=direct)]
        elif kind != "hub":
            own = dict(load_factory(providers)(party, pool)) if providers else None
            workers = [
                agency_worker(
                    client,
                    pool,
                    settings,
                    catalog,
                    party,
                    whitelist,
                    own,
                    # an agency serves its direct-channel endpoint when the platform asks so
                    direct=direct if settings.linkage_transport == "direct" else None,
                )
            ]
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        async with contextlib.AsyncExitStack() as running:
            if kind == "hub":  # the hub collects "provided" from the providers' receipts
                await running.enter_async_context(hub_collector(pool, settings))
            if settings.records_chaining == "deferred":
                # The party's own workers link its own chain, with its own key: its control
                # worker too, so an org that only asks (its chain holds the hub's records of its
                # requests) has its records linked without running an agency worker. Two of an
                # org's workers chaining at once take turns on the chain's lock.
                key = keys.load(settings) if kind == "hub" else keys.load_org(settings, party)
                chainer = records.Chainer(pool, records.RecordSigner(party, key.signer()))
                await running.enter_async_context(chainer)
            endpoint = await running.enter_async_context(serving_directly(direct, settings))
            for w in workers:
                await running.enter_async_context(w)
            running.enter_context(heap.settled())  # start-up done: out of the collector's way
            queues = ", ".join(w.task_queue for w in workers)
            serves = "the hub's endpoint" if kind == "hub" else "linkages directly"
            ready(
                f"worker {kind}{' ' + org if org else ''} polling {queues}"
                + (f", serving {serves} on {endpoint.listening}" if endpoint else "")
                + (_asks_directly(settings) if kind == "control" else "")
            )
            await stop.wait()
    finally:
        if whitelist is not None:
            await whitelist.stop()
        await pool.close()


def _asks_directly(settings: Settings) -> str:
    """What a control process's ready line says of the providers' endpoints it knows: the hub,
    not this process, tells each run how to reach providers, so an operator sees here whether
    this process could ask them directly."""
    known = sorted(set(settings.linkage_endpoints) - {HUB})
    said = ""
    if known:
        said = ", knows the direct-channel endpoints of " + ", ".join(known)
    elif settings.linkage_transport == "direct":
        said = (
            ", but no provider's direct-channel endpoint is known (RENKEI_LINKAGE_ENDPOINTS):"
            " its flows' linkages fail until it is set"
        )
    if HUB in settings.linkage_endpoints:
        said += ", and the hub's"
    elif settings.hub_transport == "direct":
        said += (
            ", but not the hub's endpoint (`hub` in RENKEI_LINKAGE_ENDPOINTS): the runs started"
            " to be resolved there wait to start until it is set"
        )
    return said
