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
from typing import Any, TypeVar, get_type_hints

from temporalio import workflow
from temporalio.common import RawValue, RetryPolicy

with workflow.unsafe.imports_passed_through():
    from temporalio.api.common.v1 import Payload

    from renkei.contracts.failures import Failure
    from renkei.contracts.names import control_parts, hub_queue
    from renkei.contracts.retries import HUB_RETRY, HUB_TIMEOUT
    from renkei.kernel.channels import channel_parties

A = TypeVar("A")
R = TypeVar("R")


def activity_name(method: Callable[..., Any]) -> str:
    """The name on the hub's queue of one of the hub's activity methods."""
    name: str = method.__temporal_activity_definition.name  # type: ignore[attr-defined]
    return name


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
    # The answer comes raw, and is read only if the hub wrote it: a worker polling the hub's
    # queue in the hub's place answers on a pair of its own, which the codec does not open
    # (renkei.kernel.channels). The flow then fails, saying so, instead of failing its workflow
    # task on an answer it cannot read, again and again.
    name = activity_name(method)
    raw: RawValue = await workflow.execute_activity(
        name,
        arg,
        result_type=RawValue,
        task_queue=hub_queue(prefix),
        start_to_close_timeout=HUB_TIMEOUT,
        retry_policy=retry_policy,
    )
    answer_type = get_type_hints(method).get("return", Any)
    try:
        result: R = workflow.payload_converter().from_payload(raw.payload, answer_type)
    except Exception:  # the marker of a payload no converter reads, or not the answer's shape
        raise Failure.FORGED_ANSWER.error(
            f"the answer to {name} was not written by the hub (a worker on the hub's"
            " queue answered in its place)"
        ) from None
    return result
