"""The control worker: runs the BPF interpreter workflow and the hub's activities.

It is built on a client from :func:`workers.plugin.connect`, whose plugin brings the encrypting
converter, tracing and the workflow sandbox.
"""

from __future__ import annotations

import asyncpg
from temporalio.client import Client
from temporalio.worker import Worker

from activities.hub import HubActivities
from activities.permits import PermitIssuer
from renkei.contracts.names import control_queue
from renkei.kernel import keys
from renkei.kernel.pseudonyms import Pseudonyms
from renkei.kernel.settings import Settings
from whitelist.models import Catalog
from whitelist.store import LiveWhitelist
from workers.plugin import precompile, require_plugin
from workflows.interpreter import BpfInterpreter
from workflows.life_events import LifeEventScan


def control_worker(
    client: Client,
    pool: asyncpg.Pool,
    settings: Settings,
    catalog: Catalog,
    whitelist: LiveWhitelist,
    **options: object,
) -> Worker:
    require_plugin(client)
    precompile()
    hub_keys = keys.load(settings)
    hub = HubActivities(
        pool,
        catalog,
        Pseudonyms(pool, hub_keys.hub_key),
        whitelist,
        PermitIssuer(pool, hub_keys),
        settings.task_queue_prefix,
        settings.mode,
        settings.test_time_scale,
        settings.history_limit,
    )
    return Worker(
        client,
        task_queue=control_queue(settings.task_queue_prefix),
        workflows=[BpfInterpreter, LifeEventScan],
        activities=[
            hub.resolve,
            hub.broker,
            hub.remind,
            hub.translate,
            hub.scan_target,
            hub.case_refs,
            hub.attest_starts,
            hub.sign_resume,
            hub.check_resume,
        ],
        **options,  # type: ignore[arg-type]
    )
