"""The whitelist interceptor: no provider code runs unless the law permits the linkage.

It wraps every activity of an agency worker. For a linkage (``query.*``) it

1. reads the request (requester, task, info item, subject code at this org);
2. decides with the worker's live whitelist index: the requester's roles and this org's roles
   come from the catalog held by the worker, never from the request; the date is today in Japan;
3. writes the provider's access record for this attempt, under the provider's own code
   (idempotent on ``workflow/run/step``). If the records database cannot be reached, the gate
   waits for it within the attempt's own time, so an outage of the platform's database does not
   use up the step's retries meant for the provider; past that time the attempt fails and
   Temporal retries it. No provider code runs before the record is written;
4. on denial, raises a non-retryable ``WhitelistDenied`` error carrying the reason and the legal
   reference checked; otherwise hands over to the provider.

The hub has already decided the same question before handing out the provider's code (see
``activities.hub``); this second, independent check is the provider's own: the interpreter
workflow cannot bypass it, since the provider's code runs only in this worker.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import asyncpg
from temporalio import activity
from temporalio.worker import (
    ActivityInboundInterceptor,
    ExecuteActivityInput,
    Interceptor,
)

from activities.attempts import attempt_key, attempt_record
from renkei.contracts.failures import Failure
from renkei.contracts.messages import LinkageRequest
from renkei.contracts.names import is_query_activity, query_activity
from renkei.kernel import records, telemetry
from whitelist.decide import Decision, decide_linkage
from whitelist.models import Catalog
from whitelist.store import LiveWhitelist

log = logging.getLogger(__name__)
T = TypeVar("T")

# What a lost or refused database connection raises; anything else is a real error.
UNREACHABLE: tuple[type[BaseException], ...] = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
)
MARGIN = dt.timedelta(seconds=2)


async def patiently(
    write: Callable[[], Awaitable[T]], deadline: dt.datetime, *, first_pause: float = 0.25
) -> T:
    """Run ``write`` until it gets through to the database or ``deadline`` comes near."""
    pause = first_pause
    while True:
        try:
            return await write()
        except UNREACHABLE as err:
            left = (deadline - dt.datetime.now(dt.UTC) - MARGIN).total_seconds()
            if left <= 0:
                raise
            log.warning("records database unreachable (%s); retrying", type(err).__name__)
            if activity.in_activity():
                activity.heartbeat()
            await asyncio.sleep(min(pause, left))
            pause = min(pause * 2, 5.0)


class WhitelistGate:
    """Decide and record one linkage attempt."""

    def __init__(
        self, org: str, catalog: Catalog, whitelist: LiveWhitelist, pool: asyncpg.Pool
    ) -> None:
        self.org = org
        self.catalog = catalog
        self.whitelist = whitelist
        self.pool = pool

    def decide(self, req: LinkageRequest, at: dt.datetime) -> Decision:
        if req.provider != self.org:
            return Decision(allowed=False, reason=f"request for {req.provider} reached {self.org}")
        return decide_linkage(
            self.catalog, self.whitelist.index, req.requester, self.org, req.task, req.info, at
        )

    async def decide_and_record(self, req: LinkageRequest) -> Decision:
        info = activity.info()
        now = dt.datetime.now(dt.UTC)
        decision = telemetry.decided("provider", self.org, req, lambda: self.decide(req, now))
        limit = info.start_to_close_timeout or dt.timedelta(seconds=60)
        with telemetry.tracer().start_as_current_span(
            "renkei.whitelist.decide",
            attributes=telemetry.linkage_attributes(req, "provider", decision.outcome),
        ):
            await patiently(lambda: self._write(info, req, decision, now), now + limit)
        return decision

    async def _write(
        self, info: activity.Info, req: LinkageRequest, decision: Decision, now: dt.datetime
    ) -> list[records.AccessRecord]:
        return await records.write(
            self.pool,
            attempt_record(
                keeper=self.org,
                subject_code=req.subject,
                # The provider's own record names itself, whatever the request claimed.
                req=req.model_copy(update={"provider": self.org}),
                decision=decision,
                decided_at=now,
                workflow_id=info.workflow_id or "",
                run_id=info.workflow_run_id or "",
                key=attempt_key(
                    info.workflow_id or "", info.workflow_run_id or "", info.activity_id
                ),
            ),
        )


class WhitelistInterceptor(Interceptor):
    """Worker interceptor installing :class:`WhitelistGate` in front of every linkage."""

    def __init__(self, gate: WhitelistGate) -> None:
        self.gate = gate

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _Inbound(next, self.gate)


class _Inbound(ActivityInboundInterceptor):
    def __init__(self, next: ActivityInboundInterceptor, gate: WhitelistGate) -> None:
        super().__init__(next)
        self.gate = gate

    async def execute_activity(self, input: ExecuteActivityInput) -> object:
        kind = activity.info().activity_type
        if not is_query_activity(kind):
            return await super().execute_activity(input)
        raw = input.args[0] if input.args else None
        if isinstance(raw, list | tuple) and raw:  # a dynamic activity receives raw values
            raw = raw[0]
        payload = getattr(raw, "payload", None)
        try:
            req = (
                activity.payload_converter().from_payload(payload, LinkageRequest)
                if payload is not None
                else LinkageRequest.model_validate(raw)
            )
        except Exception:
            raise Failure.MALFORMED_LINKAGE.error("malformed linkage request") from None
        if kind != query_activity(req.info):
            raise Failure.MALFORMED_LINKAGE.error("activity type and requested info item differ")
        decision = await self.gate.decide_and_record(req)
        if not decision.allowed:
            raise Failure.WHITELIST_DENIED.error(
                f"linkage denied by the whitelist: {decision.reason}",
                {
                    "requester": req.requester,
                    "provider": self.gate.org,
                    "task": req.task,
                    "info": req.info,
                },
            )
        return await super().execute_activity(input)
