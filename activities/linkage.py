"""The linkage activity an org's worker runs for every ``query`` step addressed to it.

Each info item is its own activity type (``query.<info item>``), so operators read in the
Temporal UI what was asked. An agency worker registers one dynamic activity that serves every
``query.*`` type: that way even a query for an item the org does not serve reaches the whitelist
interceptor, is denied and recorded, instead of retrying forever as an unknown activity.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextvars import ContextVar

from temporalio import activity
from temporalio.common import RawValue

from renkei.contracts.failures import Failure
from renkei.contracts.messages import LinkageRequest
from renkei.contracts.names import is_act_activity, is_query_activity
from renkei.contracts.provider import NoMatch, Provider

__all__ = ["ADMITTED", "Provider", "answer_admitted", "make_linkage_activity"]

# The request the whitelist gate admitted for the activity running now (its permit checked, the
# provider's own code for the subject opened); the provider is handed this, never the raw input.
ADMITTED: ContextVar[LinkageRequest | None] = ContextVar("renkei_admitted_linkage", default=None)


async def answer_admitted(
    org: str, providers: Mapping[str, Provider], req: LinkageRequest
) -> dict[str, object]:
    """``org``'s answer to a request its gate admitted, from the provider of its item."""
    provider = providers.get(req.info)
    if provider is None:
        raise Failure.NOT_IMPLEMENTED.error(f"{org} does not implement info item {req.info!r}")
    try:
        payload = await provider(req)
    except NoMatch as none:
        raise Failure.NO_MATCH.error(str(none)) from None
    return payload.model_dump(mode="json")


def make_linkage_activity(org: str, providers: Mapping[str, Provider]) -> Callable[..., object]:
    """The dynamic activity serving ``org``'s info items through ``providers``."""

    @activity.defn(dynamic=True)
    async def linkage(args: Sequence[RawValue]) -> dict[str, object]:
        kind = activity.info().activity_type
        if not (is_query_activity(kind) or is_act_activity(kind)):
            raise Failure.UNKNOWN_ACTIVITY.error(f"{org} does not run activity type {kind}")
        req = ADMITTED.get(None)
        if req is None:  # a worker assembled without the gate must not answer at all
            raise Failure.LINKAGE_REFUSED.error(f"{org}'s gate did not admit this request")
        return await answer_admitted(org, providers, req)

    return linkage
