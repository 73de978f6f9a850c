"""The control worker: runs the BPF interpreter workflow and the hub's activities."""

from __future__ import annotations

import contextlib

import asyncpg
from temporalio.client import Client
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from activities.hub import HubActivities
from renkei.kernel import keys
from renkei.kernel.pseudonyms import Pseudonyms
from renkei.kernel.settings import Settings
from whitelist.models import Catalog
from whitelist.store import LiveWhitelist
from workflows.interpreter import BpfInterpreter
from workflows.life_events import LifeEventScan

# Modules the sandbox must share with the host rather than re-import for every run: the C++ CEL
# runtime and protobuf cannot be imported twice, and the models are large and pure.
PASSTHROUGH = (
    "pydantic",
    "pydantic_core",
    "cel_expr_python",
    "google.protobuf",
    "renkei.contracts.messages",
    "whitelist",
    "renkei.bpf.models",
    "renkei.bpf.expressions",
    "renkei.kernel.search_attributes",
    "opentelemetry",
)

# The packages whose modules a workflow run imports inside the sandbox.
SANDBOXED_PACKAGES = (
    "workflows",
    "activities",
    "renkei.contracts",
    "renkei.bpf",
    "renkei.kernel",
    "whitelist",
)


def precompile() -> None:
    """Make sure the workflow modules load from bytecode.

    The sandbox imports the workflow modules afresh for every workflow run it starts. Without a
    ``.pyc`` (a read-only tree, or ``PYTHONDONTWRITEBYTECODE`` set) each of those imports
    compiles the source again: about a fifth of a busy control worker's CPU. Writing the
    bytecode once here makes it a read instead; where the tree is read-only (an installed
    package is compiled when installed) this does nothing.
    """
    import compileall
    import importlib
    from pathlib import Path

    for package in SANDBOXED_PACKAGES:
        folder = Path(str(importlib.import_module(package).__file__)).parent
        with contextlib.suppress(OSError):
            compileall.compile_dir(folder, maxlevels=0, quiet=2)


def workflow_runner() -> SandboxedWorkflowRunner:
    return SandboxedWorkflowRunner(
        restrictions=SandboxRestrictions.default.with_passthrough_modules(*PASSTHROUGH)
    )


def control_worker(
    client: Client,
    pool: asyncpg.Pool,
    settings: Settings,
    catalog: Catalog,
    whitelist: LiveWhitelist,
    **options: object,
) -> Worker:
    precompile()
    hub = HubActivities(
        pool,
        catalog,
        Pseudonyms(pool, keys.load(settings).hub_key),
        whitelist,
        settings.task_queue_prefix,
        settings.mode,
        settings.test_time_scale,
        settings.history_limit,
    )
    return Worker(
        client,
        task_queue=settings.control_queue,
        workflows=[BpfInterpreter, LifeEventScan],
        activities=[
            hub.resolve,
            hub.broker,
            hub.remind,
            hub.translate,
            hub.scan_target,
            hub.case_refs,
        ],
        workflow_runner=workflow_runner(),
        **options,  # type: ignore[arg-type]
    )
