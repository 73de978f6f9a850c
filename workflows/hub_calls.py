"""How a flow calls the hub: on the hub's own queue, or (runs from before) in its own worker.

A flow runs on its executor's control worker (``<prefix>.control.<executor>``), which holds the
executor's keys and none of the hub's: the hub's activities (resolve, broker, translate, ...)
run on the hub's queue (``<prefix>.hub``), in the hub's process, with the hub's keys. A run
started before executor-side control lives on the shared ``<prefix>.control`` queue, whose worker
runs the hub's activities as local activities: it goes on doing so, so its history replays.
The path follows from the run's task queue, which never changes within a run.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from renkei.contracts.names import control_parts, hub_queue
    from renkei.contracts.retries import HUB_RETRY, HUB_TIMEOUT

A = TypeVar("A")
R = TypeVar("R")


async def hub_call(
    method: Callable[[Any, A], Awaitable[R]],
    arg: A,
    *,
    retry_policy: RetryPolicy | None = HUB_RETRY,
) -> R:
    """Run the hub's activity ``method`` for this flow (see the module's docstring)."""
    prefix, executor = control_parts(workflow.info().task_queue)
    if executor is None:
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
