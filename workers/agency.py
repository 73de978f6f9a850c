"""An agency worker: one org's providers behind the whitelist interceptor, on its own queue."""

from __future__ import annotations

import asyncpg
from temporalio.client import Client
from temporalio.worker import Worker

from activities.agencies import providers_for
from activities.direct import DirectWiring, Served
from activities.gate import WhitelistGate, WhitelistInterceptor
from activities.linkage import Provider, make_linkage_activity
from renkei.contracts.names import agency_queue
from renkei.kernel import keys
from renkei.kernel.channels import ChannelCodec
from renkei.kernel.settings import Settings
from whitelist.models import Catalog
from whitelist.store import LiveWhitelist
from workers.plugin import require_plugin


def agency_worker(
    client: Client,
    pool: asyncpg.Pool,
    settings: Settings,
    catalog: Catalog,
    org: str,
    whitelist: LiveWhitelist,
    providers: dict[str, Provider] | None = None,
    *,
    direct: DirectWiring | None = None,
    **options: object,
) -> Worker:
    """The worker of ``org``; ``providers`` defaults to the sample agency's own. With
    ``direct``, the same gate and providers are also served on the process's direct-channel
    endpoint (:class:`activities.direct.DirectServer`)."""
    if org not in catalog.orgs:
        raise ValueError(f"unknown org {org!r}")
    require_plugin(client)
    gate = WhitelistGate(
        org,
        catalog,
        whitelist,
        pool,
        keys.load_org(settings, org),
        accept_unpermitted=settings.accept_unpermitted_linkages,
        deferred_records=settings.records_chaining == "deferred",
        operation=settings.mode == "operation",
        act_seconds=(settings.act_seconds_min, settings.act_seconds_max),
    )
    served = providers if providers is not None else providers_for(org, pool)
    if direct is not None:
        codec = client.data_converter.payload_codec
        if not isinstance(codec, ChannelCodec):
            raise ValueError("an agency's direct channel needs the channel codec")
        direct.served[org] = Served(gate, served, codec)
    return Worker(
        client,
        task_queue=agency_queue(settings.task_queue_prefix, org),
        activities=[make_linkage_activity(org, served)],
        interceptors=[WhitelistInterceptor(gate)],
        **options,  # type: ignore[arg-type]
    )
