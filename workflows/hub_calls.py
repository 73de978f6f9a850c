"""How a flow calls the hub: on the hub's own queue, or (runs from before) in its own worker.

A flow runs on its executor's control worker (``<prefix>.control.<executor>``), which holds the
executor's keys and none of the hub's: the hub's activities (resolve, broker, translate, ...)
run on the hub's queue (``<prefix>.hub``), in the hub's process, with the hub's keys. A run
started before executor-side control lives on the shared ``<prefix>.control`` queue, whose worker
runs the hub's activities as local activities: it goes on doing so, so its history replays.
The path follows from the run itself and never changes within it: a run on an executor's queue,
or whose start came sealed in a channel (what a replayer sees: it runs every history on a queue
of its own), calls the hub remotely.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from temporalio.api.common.v1 import Payload

    from renkei.contracts.names import control_parts, hub_queue
    from renkei.contracts.retries import HUB_RETRY, HUB_TIMEOUT
    from renkei.kernel.channels import channel_parties

A = TypeVar("A")
R = TypeVar("R")


def calls_hub_remotely(start: Payload) -> bool:
    """Whether this run calls the hub on the hub's queue, from its start's ``payload`` (decoded)
    and its task queue (see the module's docstring)."""
    return (
        control_parts(workflow.info().task_queue)[1] is not None
        or channel_parties(start) is not None
    )


async def hub_call(
    method: Callable[[Any, A], Awaitable[R]],
    arg: A,
    *,
    remote: bool,
    retry_policy: RetryPolicy | None = HUB_RETRY,
) -> R:
    """Run the hub's activity ``method`` for this flow: ``remote`` as
    :func:`calls_hub_remotely` said at the run's start."""
    prefix = control_parts(workflow.info().task_queue)[0]
    if not remote:
        return await workflow.execute_local_activity_method(
            method, arg, start_to_close_timeout=HUB_TIMEOUT, retry_policy=retry_policy
        )
    return await workflow.execute_activity_method(
        method,
        arg,
        task_queue=hub_queue(prefix),
        start_to_close_timeout=HUB_TIMEOUT,
        retry_policy=retry_policy,
    )
