"""One worker set: the control worker and agency workers, built and run together.

The dev stack (``renkei up``), the conformance kit, the tests and the benchmarks all run the
same set through :func:`running_workers`; only which parts run and which providers answer differ.
Each worker is built on a client from :func:`workers.plugin.connect`, so the converter,
interceptors and workflow runner come with it.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence

import asyncpg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from temporalio.client import Client
from temporalio.common import MetricMeter
from temporalio.worker import Plugin, Worker

from activities.agencies import SAMPLE_AGENCIES
from activities.direct import DirectServer, DirectWiring
from activities.linkage import Provider
from renkei.kernel import keys, records, telemetry
from renkei.kernel.settings import Settings
from whitelist.models import Catalog
from whitelist.store import LiveWhitelist
from workers import heap
from workers.agency import agency_worker
from workers.control import control_worker, hub_collector, hub_worker, legacy_control_worker
from workers.plugin import HUB, attach_registry, party_client, reads_ring

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
    executors: Iterable[str] | None = None,
    providers: Providers | None = None,
    legacy: bool = True,
    connection: Callable[[str], Client] | None = None,
    direct: DirectWiring | None = None,
    control_plugins: Sequence[Plugin] = (),
) -> list[Worker]:
    """The hub's worker and a control worker per org of ``executors`` (default: every org
    whose key file this process holds) unless ``control`` is false, the legacy control worker of runs from before executor-side control (``legacy``),
    and one agency worker per org of ``agencies``.

    Each worker acts for its own party only, on a client of its own over ``client``'s
    connection: the hub's worker holds the hub's keys, an executor's control worker that
    executor's, an agency's worker that agency's. With ``connection``, each party's workers
    use the connection it gives for that party instead (``renkei up --gateway``: the party's
    own, through the gateway with the party's certificate). ``control_plugins`` are added to
    each executor's control worker (the conformance kit's watch of its flows).
    """

    catalog = whitelist.bind(catalog)  # the org registry's live view

    def acting(party: str, **options: bool) -> Client:
        base = connection(party) if connection is not None else client
        own = party_client(base, settings, [party], **options)
        attach_registry(own, pool, settings)
        return own

    if executors is None:  # every org of the catalog whose key file this process holds
        executors = [o for o in catalog.orgs if keys.org_keys_path(settings, o).exists()]
    workers: list[Worker] = []
    if control:
        workers.append(
            hub_worker(
                acting(HUB, legacy_ring=reads_ring(settings, "hub")),
                pool,
                settings,
                catalog,
                whitelist,
                direct=direct,
            )
        )
        workers.extend(
            control_worker(
                acting(org, legacy_ring=reads_ring(settings, "control")),
                settings,
                org,
                direct=direct,
                plugins=list(control_plugins),
            )
            for org in executors
        )
        if legacy and settings.legacy_runs_before is not None:
            workers.append(
                legacy_control_worker(
                    party_client(
                        connection(HUB) if connection is not None else client,
                        settings,
                        [HUB],
                        legacy=True,
                    ),
                    pool,
                    settings,
                    catalog,
                    whitelist,
                )
            )
    for org in agencies:
        own = providers(org) if providers is not None else None
        workers.append(
            agency_worker(
                acting(org, legacy_ring=reads_ring(settings, "agency")),
                pool,
                settings,
                catalog,
                org,
                whitelist,
                dict(own) if own else None,
                # an agency serves its endpoint when the platform asks linkages so
                direct=direct if settings.linkage_transport == "direct" else None,
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
    executors: Iterable[str] | None = None,
    providers: Providers | None = None,
    legacy: bool = True,
    connection: Callable[[str], Client] | None = None,
    control_plugins: Sequence[Plugin] = (),
    endpoints: dict[str, str] | None = None,
) -> AsyncIterator[list[Worker]]:
    """Run :func:`build_workers`'s set until the block exits (workers stop in reverse order).

    With ``RENKEI_LINKAGE_TRANSPORT=direct`` the agencies of the set serve one direct-channel
    endpoint (``RENKEI_LINKAGE_LISTEN``), which the set's executors ask besides the endpoints
    the settings name. ``endpoints``, for several sets in one process (one running agencies,
    another executors): the providers' endpoints they share, read by each set's executors as
    they ask, to which each set adds its own (default: the settings', for this set alone)."""
    direct = (
        DirectWiring(endpoints if endpoints is not None else dict(settings.linkage_endpoints))
        if "direct" in (settings.linkage_transport, settings.hub_transport)
        else None
    )
    workers = build_workers(
        client,
        pool,
        settings,
        catalog,
        whitelist,
        control=control,
        agencies=agencies,
        executors=executors,
        providers=providers,
        legacy=legacy,
        connection=connection,
        direct=direct,
        control_plugins=control_plugins,
    )
    async with contextlib.AsyncExitStack() as stack:
        if direct is not None:
            # counted where the set's workers count (their client's runtime), as the gate's
            # metrics are of an activity on the provider's queue
            runtime = client.service_client.config.runtime or telemetry.runtime(settings)
            await stack.enter_async_context(
                serving_directly(direct, settings, meter=runtime.metric_meter)
            )
        if control:
            # The hub's worker collects "provided" from the providers' receipts (entered first:
            # it collects what is left once the workers have stopped).
            await stack.enter_async_context(hub_collector(pool, settings))
        if settings.records_chaining == "deferred":
            # Each party of this process links its own chain with its own key (entered first:
            # they link what is left once the workers have stopped).
            signers = [
                records.RecordSigner(party, key)
                for party, key in _chainers(settings, catalog, control)
            ]
            await stack.enter_async_context(records.Chainers(pool, signers))
        for w in workers:
            await stack.enter_async_context(w)
        stack.enter_context(heap.settled())  # start-up done: out of the collector's way
        yield workers


@contextlib.asynccontextmanager
async def serving_directly(
    direct: DirectWiring, settings: Settings, *, meter: MetricMeter | None = None
) -> AsyncIterator[DirectServer | None]:
    """``direct``'s endpoint served (if it serves any provider; yielded) and known to its
    executors while the block runs; its executors' connections closed after. Its metrics go
    to ``meter`` (default: the process's runtime's)."""
    try:
        if direct.served or direct.hub is not None:
            async with DirectServer(
                direct.served,
                settings.task_queue_prefix,
                settings.linkage_listen,
                meter=meter if meter is not None else telemetry.runtime(settings).metric_meter,
                hub=direct.hub,
            ) as server:
                direct.endpoints.update(dict.fromkeys(direct.served, server.address))
                if direct.hub is not None:
                    direct.endpoints[HUB] = server.address
                yield server
        else:
            yield None
    finally:
        for links in direct.links:
            await links.close()


def _chainers(
    settings: Settings, catalog: Catalog, control: bool
) -> list[tuple[str, Ed25519PrivateKey]]:
    """The parties whose chains this process links: the hub's with the hub's worker, and every
    org whose key file it holds (an org's chain holds the hub's records of its requests too)."""
    found: list[tuple[str, Ed25519PrivateKey]] = []
    if control:
        found.append((HUB, keys.load(settings).signer()))
    for org in sorted(catalog.orgs):
        if keys.org_keys_path(settings, org).exists():
            found.append((org, keys.load_org(settings, org).signer()))
    return found


@contextlib.asynccontextmanager
async def live_whitelist(
    dsn: str, sealed_by: Ed25519PublicKey | None
) -> AsyncIterator[LiveWhitelist]:
    """The whitelist index kept current from the database (LISTEN/NOTIFY) while the block runs,
    read only as the hub sealed it (``sealed_by``: the hub's public key)."""
    whitelist = await LiveWhitelist(dsn, sealed_by=sealed_by).start()
    try:
        yield whitelist
    finally:
        await whitelist.stop()
