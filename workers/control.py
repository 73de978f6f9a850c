"""The hub's worker and the executors' control workers.

The hub's activities (resolve, broker, translate, ...) run in the hub's worker, on the hub's
queue, with the hub's keys. Each executor's flows run in that executor's control worker, on its
own queue, with its own keys. Each is built on a client acting for its party alone
(:func:`workers.plugin.party_client`), whose plugin brings the sealing converter, tracing and the
workflow runner (outside the sandbox unless ``RENKEI_WORKFLOW_SANDBOX`` asks for it).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import asyncpg
from temporalio.client import Client
from temporalio.worker import Worker

from activities.approved import ApprovalCheck
from activities.direct import DirectLinks, DirectWiring, ServedHub
from activities.hub import HubActivities
from activities.permits import PermitIssuer
from renkei.contracts.names import HUB, control_queue, hub_queue
from renkei.kernel import keys, records
from renkei.kernel.channels import ChannelCodec
from renkei.kernel.pseudonyms import Pseudonyms
from renkei.kernel.settings import Settings
from whitelist.models import Catalog
from whitelist.store import LiveWhitelist
from workers.plugin import precompile, require_plugin
from workflows.interpreter import BpfInterpreter
from workflows.life_events import LifeEventScan


def _hub(
    pool: asyncpg.Pool,
    settings: Settings,
    catalog: Catalog,
    whitelist: LiveWhitelist,
    *,
    legacy: bool = False,
) -> HubActivities:
    hub_keys = keys.load(settings)
    return HubActivities(
        pool,
        catalog,
        Pseudonyms(pool, hub_keys.hub_key),
        whitelist,
        PermitIssuer(pool, hub_keys, kit=settings.mode == "test", fields=settings.permit_fields),
        settings.task_queue_prefix,
        settings.mode,
        settings.test_time_scale,
        settings.history_limit,
        settings.kit_clock,
        runs_before=settings.legacy_runs_before if legacy else None,
        unticketed_before=settings.unticketed_runs_before,
        deferred_records=settings.records_chaining == "deferred",
        # the legacy worker's runs reach providers as they always did
        links_directly=settings.linkage_transport == "direct" and not legacy,
        approvals=ApprovalCheck(
            pool,
            hub_keys.signer().public_key(),
            settings.conformance_body,
            accept_unsigned=settings.unsigned_approvals,
        )
        if settings.mode == "operation"
        else None,
    )


def _hub_activities(hub: HubActivities) -> list[Callable[..., Any]]:
    return [
        hub.resolve,
        hub.broker,
        hub.broker_group,
        hub.outcome,
        hub.outcomes,
        hub.remind,
        hub.translate,
        hub.scan_target,
        hub.case_refs,
        hub.attest_starts,
        hub.sign_resume,
        hub.sign_resume_text,
        hub.check_resume,
    ]


def hub_worker(
    client: Client,
    pool: asyncpg.Pool,
    settings: Settings,
    catalog: Catalog,
    whitelist: LiveWhitelist,
    *,
    direct: DirectWiring | None = None,
    **options: object,
) -> Worker:
    """The hub's worker: its activities on the hub's own queue, with the hub's keys only.
    With ``direct`` and ``RENKEI_HUB_TRANSPORT=direct``, the process's direct-channel endpoint
    also resolves runs (:func:`activities.direct.resolve_run`).

    ``client`` must act for the hub alone (:func:`workers.plugin.party_client`): what flows
    send to the hub is sealed between the flow's executor and the hub.
    """
    require_plugin(client)
    hub = _hub(pool, settings, catalog, whitelist)
    if direct is not None and settings.hub_transport == "direct":
        codec = client.data_converter.payload_codec
        if not isinstance(codec, ChannelCodec):
            raise ValueError("the hub's endpoint needs the channel codec")
        direct.hub = ServedHub(hub.resolve, client, codec)
    return Worker(
        client,
        task_queue=hub_queue(settings.task_queue_prefix),
        activities=_hub_activities(hub),
        **options,  # type: ignore[arg-type]
    )


def hub_collector(pool: asyncpg.Pool, settings: Settings) -> records.Collector:
    """The hub's receipt collector (:class:`renkei.kernel.records.Collector`), with the hub's
    key: it runs wherever the hub's worker runs, since the hub tells its flows it collects."""
    return records.Collector(pool, records.RecordSigner(HUB, keys.load(settings).signer()))


def control_worker(
    client: Client,
    settings: Settings,
    executor: str,
    *,
    direct: DirectWiring | None = None,
    **options: object,
) -> Worker:
    """``executor``'s control worker: its flows and life-event scans, on its own queue, and
    its flows' asks over the direct channel (to ``direct``'s endpoints, default: those the
    settings name).

    ``client`` acts for the executor alone: the worker reads its flows' payloads with the
    executor's keys; it holds nothing of the hub's (the hub's activities run on the hub's
    queue) and cannot read what other executors' flows exchange.
    """
    require_plugin(client)
    if settings.workflow_sandbox:
        precompile()
    codec = client.data_converter.payload_codec
    if not isinstance(codec, ChannelCodec):
        raise ValueError("a control worker's client must seal with the channel codec")
    links = DirectLinks(
        codec,
        settings.task_queue_prefix,
        direct.endpoints if direct is not None else settings.linkage_endpoints,
    )
    if direct is not None:
        direct.links.append(links)
    return Worker(
        client,
        task_queue=control_queue(settings.task_queue_prefix, executor),
        workflows=[BpfInterpreter, LifeEventScan],
        activities=[links.ask, links.resolve],
        **options,  # type: ignore[arg-type]
    )


def legacy_control_worker(
    client: Client,
    pool: asyncpg.Pool,
    settings: Settings,
    catalog: Catalog,
    whitelist: LiveWhitelist,
    **options: object,
) -> Worker:
    """The shared control worker of runs started before executor-side control: the
    interpreter with the hub's activities in one process, under the shared payload ring.

    It serves only the runs still in flight on the old queue (``<prefix>.control``): those
    started before ``RENKEI_LEGACY_RUNS_BEFORE`` (it refuses to resolve a run started there
    later: any ring holder could start one, as any executor); new runs start on their
    executor's queue. ``client`` must carry the legacy converter
    (``renkei_plugin(legacy=True)``). Retire it once no run is left on that queue.
    """
    if settings.legacy_runs_before is None:
        raise ValueError("the legacy control worker serves runs started before a moment: set it")
    require_plugin(client)
    if settings.workflow_sandbox:
        precompile()
    return Worker(
        client,
        task_queue=control_queue(settings.task_queue_prefix),
        workflows=[BpfInterpreter, LifeEventScan],
        activities=_hub_activities(_hub(pool, settings, catalog, whitelist, legacy=True)),
        **options,  # type: ignore[arg-type]
    )
