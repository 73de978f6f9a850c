"""The linkage activity an org's worker runs for every ``query`` step addressed to it.

Each info item is its own activity type (``query.<info item>``), so operators read in the
Temporal UI what was asked. An agency worker registers one dynamic activity that serves every
``query.*`` type: that way even a query for an item the org does not serve reaches the whitelist
interceptor, is denied and recorded, instead of retrying forever as an unknown activity.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence

from pydantic import BaseModel
from temporalio import activity
from temporalio.common import RawValue
from temporalio.exceptions import ApplicationError

from renkei.contracts.messages import LinkageRequest

QUERY_PREFIX = "query."
Provider = Callable[[LinkageRequest], Awaitable[BaseModel]]


def activity_type(info: str) -> str:
    return f"{QUERY_PREFIX}{info}"


def make_linkage_activity(org: str, providers: Mapping[str, Provider]) -> Callable[..., object]:
    """The dynamic activity serving ``org``'s info items through ``providers``."""

    @activity.defn(dynamic=True)
    async def linkage(args: Sequence[RawValue]) -> dict[str, object]:
        kind = activity.info().activity_type
        if not kind.startswith(QUERY_PREFIX):
            raise ApplicationError(
                f"{org} does not run activity type {kind}",
                type="UnknownActivity",
                non_retryable=True,
            )
        req = activity.payload_converter().from_payload(args[0].payload, LinkageRequest)
        provider = providers.get(req.info)
        if provider is None:
            raise ApplicationError(
                f"{org} does not implement info item {req.info!r}",
                type="NotImplemented",
                non_retryable=True,
            )
        payload = await provider(req)
        return payload.model_dump(mode="json")

    return linkage
