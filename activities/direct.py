"""The direct channel: a provider answers the executor's own worker, with no Temporal crossing.

Through Temporal, a linkage is an activity on the provider's queue: the flow's task completes,
the server dispatches the activity to the provider's worker, the answer completes the activity,
and the server dispatches the flow's next task. That is two dispatches per linkage where an
activity on the flow's own queue costs one (eager execution). Over the direct channel the
executor's worker asks the provider's endpoint itself, from a local activity of the flow, and
the answer is recorded in the flow's history as the local activity's marker.

Nothing of the trust protocol changes:

- the request is sealed between the flow's executor (the party the workflow id names) and the
  provider, with the same channel keys as a payload on the provider's queue
  (:mod:`renkei.kernel.channels`): no other party can read it or write one the provider opens,
  and the provider refuses anything else, unrecorded, as its worker refuses a payload it cannot
  read;
- the provider's gate (:class:`activities.gate.WhitelistGate`) serves it exactly as an activity:
  the hub's permit must be for exactly the attempt the sealed request names (flow, run, step,
  requester, item, sealed subject, not expired), the provider decides with its own whitelist,
  writes its own record of the attempt (one per attempt, however often it is asked), runs its
  code on the admitted request only, signs the answer for the permit and keeps its receipt
  before the answer leaves;
- the answer goes back sealed in the same pair, and the flow checks the provider's signature
  for its permit as it does for an answer from the provider's queue.

The endpoint's address is no secret and no trust: an endpoint that is not the provider's cannot
open the request nor sign an answer the flow accepts. Nor is a gRPC status the provider's word:
anyone on the network can send one, so the executor takes a refusal or a failure only sealed in
a reply, and any status as an endpoint out of reach (asked again within the step's budget).

The wire is gRPC (one unary method, raw bytes): an envelope naming the flow and the provider in
clear (ids only, nothing personal), around the sealed request, padded (as the reply) so that
its length tells nothing of what it holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import grpc
from cachetools import LRUCache
from google.protobuf.message import DecodeError
from opentelemetry import context as otel_context
from opentelemetry import propagate
from pydantic import BaseModel
from temporalio import activity
from temporalio.api.common.v1 import Payload
from temporalio.client import Client
from temporalio.common import MetricMeter
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import ActivitySerializationContext
from temporalio.exceptions import ApplicationError

from activities.claims import asked_by, described_run
from activities.gate import Attempt, WhitelistGate
from activities.linkage import Provider, answer_admitted
from renkei.contracts.failures import TIMED_OUT, UNREACHED, Failure
from renkei.contracts.messages import (
    DirectFailure,
    DirectLinkage,
    DirectReply,
    DirectResolve,
    DirectResolved,
    LinkageRequest,
    ResolvedRun,
    ResolveRequest,
)
from renkei.contracts.names import (
    DIRECT_LINKAGE,
    DIRECT_RESOLVE,
    HUB,
    agency_queue,
    executor_of,
    hub_queue,
    is_act_activity,
    is_query_activity,
)
from renkei.contracts.retries import ENDPOINT_TIMEOUT
from renkei.kernel import telemetry
from renkei.kernel.channels import CHANNEL, ChannelCodec
from renkei.kernel.codec import UNENCRYPTED

__all__ = [
    "DIRECT_LINKAGE",
    "DirectLinks",
    "DirectServer",
    "DirectWiring",
    "Refused",
    "Served",
    "envelope_of",
    "open_request",
    "opened_reply",
    "sealed_request",
]

log = logging.getLogger(__name__)


def _not_taken(provider: str, step: str, why: str) -> None:
    """A reply the flow did not take from ``provider``'s endpoint: asked again like an endpoint
    out of reach, but logged and counted (``renkei_direct_replies_not_taken``), since it means
    someone on the path, or keys that do not match. Names the provider, step and kind only."""
    log.warning("a reply from %s's endpoint to step %s was not taken: %s", provider, step, why)
    telemetry.reply_not_taken(provider, why)


METHOD = "/renkei.direct.v1.Linkage/Ask"
MAX_MESSAGE = 1 << 20  # a request or a reply: 1 MiB at most, either way
MAX_CONCURRENT = 256  # requests one endpoint serves at once
# Requests of one party (the executor a request is sealed by) one endpoint serves at once: past
# it, that party's next is answered "resource exhausted" at once, so that no one executor,
# however many requests it sends, takes the whole endpoint from the others (an executor's run
# asks again, and a run asking the hub goes to the hub's queue after three tries).
PER_PARTY = MAX_CONCURRENT // 2
# Seconds a request may take to arrive once its call is open: a call counts against
# MAX_CONCURRENT from its first frame, so one that sends nothing (no deadline either) would
# hold its place for ever, and MAX_CONCURRENT of them the whole endpoint.
ARRIVAL = 10.0
# Replies kept for a sealed request sent again byte for byte (anyone on the network can replay
# one): the endpoint answers it with the reply it had instead of running the gate again.
REPLAYS_KEPT = 1024
REPLAY_BYTES = 32 << 20
# What goes sealed on the wire is padded to a multiple of this many bytes: its length would
# otherwise tell anyone on the network, beside the flow the envelope names in clear, how much
# the request or the answer holds (a household's members, say).
PAD = 4096
_PAD_KEY = "renkei-pad"
_VERSION = b"v1"
_CONVERTER = pydantic_data_converter.payload_converter
_Call = TypeVar("_Call", DirectLinkage, DirectResolve)
_Reply = TypeVar("_Reply", DirectReply, DirectResolved)


def _sealing(codec: ChannelCodec, prefix: str, provider: str, workflow_id: str) -> ChannelCodec:
    """``codec`` in the pair of a linkage of ``workflow_id``'s flow to ``provider``: the
    executor the workflow id names and the provider, as on the provider's queue (``provider``
    the hub: as on the hub's queue)."""
    return codec.with_context(
        ActivitySerializationContext(
            namespace="",
            activity_id=None,
            activity_type=None,
            activity_task_queue=hub_queue(prefix)
            if provider == HUB
            else agency_queue(prefix, provider),
            workflow_id=workflow_id,
            workflow_type=None,
            is_local=False,
        )
    )


@dataclass(frozen=True)
class Served:
    """One provider as its endpoint serves it: its gate, its code, its own keys."""

    gate: WhitelistGate
    providers: Mapping[str, Provider]
    codec: ChannelCodec


@dataclass(frozen=True)
class ServedHub:
    """The hub as its endpoint serves it: its resolution of a run (``hub.resolve``), its own
    Temporal client (to check the run a request names) and keys."""

    resolve: Callable[[ResolveRequest], Awaitable[ResolvedRun]]
    client: Client
    codec: ChannelCodec


class Refused(Exception):
    """A message the endpoint does not take: answered with a gRPC status and this reason."""

    def __init__(self, code: grpc.StatusCode, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class DirectServer:
    """A provider's endpoint of the direct channel (one or more providers of this process)."""

    def __init__(
        self,
        served: Mapping[str, Served],
        prefix: str,
        listen: str,
        *,
        meter: MetricMeter | None = None,
        hub: ServedHub | None = None,
    ) -> None:
        """``meter``: where the gate's metrics (its refusals among them) are counted, as an
        activity's are on the provider's queue (the process's runtime's). ``hub``: the hub, when
        this process serves its endpoint too (runs resolved over it)."""
        self._served = dict(served)
        self._hub = hub
        self._meter = meter
        self._prefix = prefix
        self._listen = listen
        self._server: grpc.aio.Server | None = None
        self.port = 0
        # (provider, workflow id, digest of the sealed request) -> the sealed reply it had
        # at most REPLAY_BYTES in all, and REPLAYS_KEPT replies: each counts as its share at least
        self._replies: LRUCache[tuple[str, str, bytes], bytes] = LRUCache(
            REPLAY_BYTES, getsizeof=lambda reply: max(len(reply), REPLAY_BYTES // REPLAYS_KEPT)
        )
        # requests being served, by the party that sealed them (PER_PARTY at most each)
        self._serving: dict[str, int] = {}
        self._over: set[str] = set()  # parties told of in the log as holding their share
        # requests being served, by what a replay of them would be kept under: their reply
        self._pending: dict[tuple[str, str, bytes], asyncio.Future[bytes]] = {}

    async def __aenter__(self) -> DirectServer:
        server = grpc.aio.server(
            # beyond this many requests at once, one is answered "resource exhausted" at once
            # (the asking flow retries it within its budget), not queued without bound
            maximum_concurrent_rpcs=MAX_CONCURRENT,
            options=[
                ("grpc.max_receive_message_length", MAX_MESSAGE),
                ("grpc.max_send_message_length", MAX_MESSAGE),
            ],
        )
        # Served as a stream of requests (the same on the wire as one request), so that the
        # endpoint reads the request itself and can give up on one that does not arrive.
        handler: grpc.RpcMethodHandler[bytes, bytes] = grpc.stream_unary_rpc_method_handler(
            self._ask
        )
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler("renkei.direct.v1.Linkage", {"Ask": handler}),)
        )
        self.port = server.add_insecure_port(self._listen)
        if not self.port:
            raise OSError(f"the direct channel cannot listen on {self._listen}")
        await server.start()
        self._server = server
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._server is not None:
            await self._server.stop(grace=2)
            self._server = None

    @property
    def address(self) -> str:
        """Where a process on this machine reaches the endpoint (the dev stack's executors)."""
        host = self._listen.rsplit(":", 1)[0]
        return f"{'127.0.0.1' if host in ('', '0.0.0.0', '[::]') else host}:{self.port}"

    @property
    def listening(self) -> str:
        """Where the endpoint listens, as configured, with the port it got (for port 0)."""
        return f"{self._listen.rsplit(':', 1)[0]}:{self.port}"

    async def _ask(
        self, requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext[bytes, bytes]
    ) -> bytes:
        telemetry.SERVING_METER.set(self._meter)  # this call's own context (its own task)
        try:
            body = await _arrived(context)
            return await self.answer(body)
        except Refused as refused:
            await context.abort(refused.code, refused.reason)
            raise  # abort raises; this keeps the type checker's flow
        except Exception as err:  # the endpoint's own fault (its database, say): asked again
            # Its type only: what failed may hold an answer, and gRPC would log it whole.
            log.warning("the direct endpoint failed a request: %s", type(err).__name__)
            await context.abort(grpc.StatusCode.INTERNAL, "the endpoint failed; ask again")
            raise

    async def answer(self, body: bytes) -> bytes:
        """The sealed reply to one envelope, or :class:`Refused` for one that is not a sealed
        request of the flow's executor to a provider this endpoint serves (or to the hub)."""
        provider, workflow_id, sealed = envelope_of(body)
        hub = self._hub
        if provider == HUB and hub is not None:
            return await self._reply_once(
                HUB,
                workflow_id,
                sealed,
                hub.codec,
                lambda: _opened(hub.codec, self._prefix, HUB, workflow_id, sealed, DirectResolve),
                lambda call: resolve_run(hub, self._prefix, call),
                lambda call: "ServeDirect:hub.resolve",
            )
        served = self._served.get(provider)
        if served is None:
            raise Refused(grpc.StatusCode.NOT_FOUND, f"no provider {provider!r} is served here")
        return await self._reply_once(
            provider,
            workflow_id,
            sealed,
            served.codec,
            lambda: open_request(served.codec, self._prefix, provider, workflow_id, sealed),
            lambda call: self._serve(provider, served, call),
            lambda call: f"ServeDirect:{call.activity_type}",
        )

    async def _reply_once(
        self,
        party: str,
        workflow_id: str,
        sealed: Payload,
        codec: ChannelCodec,
        opened: Callable[[], Awaitable[_Call]],
        serve: Callable[[_Call], Awaitable[DirectReply | DirectResolved]],
        span: Callable[[_Call], str],
    ) -> bytes:
        """``party``'s sealed reply to the request ``sealed``: opened, served within the
        asking executor's share of the endpoint and in the flow's trace, sealed back."""
        # The executor seals each ask afresh: the same sealed bytes again are a replay (anyone
        # who captured them can send them), answered with the reply they had, sealed to the
        # executor as before, without the work again (the gate's chain lock, the provider's
        # code, the hub's resolution).
        seen = (party, workflow_id, hashlib.sha256(sealed.data).digest())
        kept = self._replies.get(seen)
        if kept is not None:
            return kept
        # A copy sent while the first is being served waits for its reply: a replay takes no
        # place of the executor's share, however many copies of one request come at once.
        first = self._pending.get(seen)
        if first is not None:
            return await asyncio.shield(first)
        pending: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        pending.add_done_callback(lambda f: f.cancelled() or f.exception())  # retrieved
        self._pending[seen] = pending
        try:
            call = await opened()  # sealed by the executor the workflow id names: it asks
            with self._share_of(executor_of(workflow_id) or "-"):
                # Served in the flow's trace, as an activity on a queue is (its context came
                # sealed, as a Temporal header does): one flow, one trace.
                token = otel_context.attach(propagate.extract(call.trace))
                try:
                    with telemetry.tracer().start_as_current_span(span(call)):
                        reply = await serve(call)
                finally:
                    otel_context.detach(token)
            [out] = await _sealing(codec, self._prefix, party, workflow_id).encode(
                [_padded(_CONVERTER.to_payload(reply))]
            )
            sent = out.SerializeToString()
        except BaseException as err:
            pending.set_exception(
                err
                if isinstance(err, Exception)
                else Refused(grpc.StatusCode.CANCELLED, "the request was given up")
            )
            raise
        else:
            pending.set_result(sent)
        finally:
            del self._pending[seen]
        # Kept whatever it says (an executor seals each try afresh, so the same bytes again
        # are a replay, never a try of its own): a replay is answered, not served again.
        self._keep(seen, sent)
        return sent

    @contextlib.contextmanager
    def _share_of(self, executor: str) -> Iterator[None]:
        """One of ``executor``'s :data:`PER_PARTY` places at this endpoint, or :class:`Refused`
        (resource exhausted) when it holds them all."""
        held = self._serving.get(executor, 0)
        if held >= PER_PARTY:
            telemetry.over_share(executor)
            if executor not in self._over:  # once while it lasts, not once a request
                self._over.add(executor)
                log.warning(
                    "%s holds its share of this endpoint: its next asks are refused", executor
                )
            raise Refused(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"{PER_PARTY} requests of yours are being served here: ask again later",
            )
        self._serving[executor] = held + 1
        try:
            yield
        finally:
            left = self._serving[executor] - 1
            if left:
                self._serving[executor] = left
            else:
                del self._serving[executor]
                self._over.discard(executor)

    def _keep(self, seen: tuple[str, str, bytes], reply: bytes) -> None:
        if seen not in self._replies and len(reply) <= REPLAY_BYTES:
            self._replies[seen] = reply

    async def _serve(self, provider: str, served: Served, call: DirectLinkage) -> DirectReply:
        answer, failure = await self._answer(provider, served, call)
        return DirectReply(
            workflow_id=call.workflow_id,
            run_id=call.run_id,
            step=call.step,
            answer=answer,
            failure=failure,
        )

    async def _answer(
        self, provider: str, served: Served, call: DirectLinkage
    ) -> tuple[dict[str, Any] | None, DirectFailure | None]:
        kind = call.activity_type
        if not (is_query_activity(kind) or is_act_activity(kind)):
            failure = Failure.UNKNOWN_ACTIVITY.error(
                f"{provider} does not run activity type {kind}"
            )
            return None, _failure(failure)
        attempt = Attempt(
            call.workflow_id,
            call.run_id,
            call.step,
            dt.timedelta(seconds=call.timeout_seconds),
        )

        async def run(admitted: LinkageRequest) -> object:
            return await answer_admitted(provider, served.providers, admitted)

        try:
            answer = await served.gate.serve(kind, call.request, attempt, run)
        except ApplicationError as err:
            return None, _failure(err)
        except Exception as err:  # the provider's own fault: retried, as an activity's would be
            log.warning("%s failed a direct linkage: %s", provider, type(err).__name__)
            return None, DirectFailure(
                type=Failure.PROVIDER_ERROR.value,
                message=f"{provider} failed: {type(err).__name__}",
                non_retryable=False,
            )
        if not isinstance(answer, dict):
            return None, _failure(Failure.PROVIDER_ERROR.error("no answer"))
        return answer, None


async def _arrived(context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
    """The one request of a call, once it has arrived within :data:`ARRIVAL` seconds; else
    :class:`Refused`."""
    try:
        async with asyncio.timeout(ARRIVAL):
            body = await context.read()
    except TimeoutError:
        raise Refused(
            grpc.StatusCode.DEADLINE_EXCEEDED,
            f"the request did not arrive within {ARRIVAL:g} s of the call",
        ) from None
    if not isinstance(body, bytes):  # the call ended before a request
        raise Refused(grpc.StatusCode.INVALID_ARGUMENT, "no request")
    return body


def _failure(err: ApplicationError) -> DirectFailure:
    return DirectFailure(
        type=err.type or Failure.PROVIDER_ERROR.value,
        message=err.message[:2000],
        non_retryable=err.non_retryable,
        details=list(err.details)[:10],
    )


class DirectLinks:
    """The executor's side: the local activity that asks a provider's endpoint.

    ``codec`` holds the executor's keys (its control worker's); ``endpoints`` maps a provider to
    its endpoint's ``host:port`` and may be filled after the worker is built (the dev stack's
    own endpoint starts with the workers)."""

    def __init__(self, codec: ChannelCodec, prefix: str, endpoints: Mapping[str, str]) -> None:
        self._codec = codec
        self._prefix = prefix
        self._endpoints = endpoints
        self._channels: dict[str, grpc.aio.Channel] = {}

    async def close(self) -> None:
        channels, self._channels = self._channels, {}
        for channel in channels.values():
            await channel.close()

    def _channel(self, address: str) -> grpc.aio.Channel:
        channel = self._channels.get(address)
        if channel is None:
            channel = self._channels[address] = grpc.aio.insecure_channel(
                address,
                options=[
                    ("grpc.max_receive_message_length", MAX_MESSAGE),
                    ("grpc.max_send_message_length", MAX_MESSAGE),
                ],
            )
        return channel

    @activity.defn(name=DIRECT_LINKAGE)
    async def ask(self, call: DirectLinkage) -> dict[str, object]:
        """The provider's signed answer to one linkage attempt of the calling flow."""
        info = activity.info()
        if not info.is_local or (info.workflow_id, info.workflow_run_id) != (
            call.workflow_id,
            call.run_id,
        ):
            # Only the flow itself asks, as its own local activity: not an activity another
            # process schedules on the executor's queue, nor one for another flow.
            raise Failure.LINKAGE_REFUSED.error("a direct linkage is asked by its own flow only")
        provider = call.request.provider
        address = self._endpoints.get(provider)
        if address is None:
            raise Failure.PROVIDER_ERROR.error(
                f"no direct endpoint is configured for {provider} (RENKEI_LINKAGE_ENDPOINTS)",
                UNREACHED,
                non_retryable=False,
            )
        # The attempt bounds its own time: the flow gives this local activity no start-to-close
        # timer (renkei.contracts.retries says why).
        own = asyncio.timeout(call.timeout_seconds)
        try:
            async with own:
                return await self._asked(provider, address, call)
        except TimeoutError:
            if not own.expired():  # another's timeout (its database's, say): not the attempt's
                raise
            raise Failure.PROVIDER_ERROR.error(
                f"{provider}'s endpoint: no answer within the attempt's time",
                UNREACHED,
                TIMED_OUT,
                non_retryable=False,
            ) from None

    async def _asked(self, provider: str, address: str, call: DirectLinkage) -> dict[str, object]:
        carrier: dict[str, str] = {}
        propagate.inject(carrier)  # the activity's span: the provider's hang under it
        call = call.model_copy(update={"trace": carrier})
        envelope = await sealed_request(self._codec, self._prefix, call)
        try:
            ask: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = self._channel(
                address
            ).unary_unary(METHOD)
            body: bytes = await ask(envelope, timeout=call.timeout_seconds)
        except grpc.aio.AioRpcError as err:
            raise _rpc_failure(provider, err) from None
        reply = await opened_reply(self._codec, self._prefix, call, body)
        if reply is not None and reply.answer is None and reply.failure is None:
            # What the provider never sends: the flow's own request sent back as the reply (it
            # opens in the same pair and names the same attempt). Anyone on the network can do
            # that, so it is an endpoint out of reach, asked again within the step's budget.
            _not_taken(provider, call.step, "a reply with neither an answer nor a failure")
            raise Failure.PROVIDER_ERROR.error(
                f"{provider}'s endpoint: a reply with neither an answer nor a failure",
                UNREACHED,
                non_retryable=False,
            )
        if reply is None or (reply.workflow_id, reply.run_id, reply.step) != (
            call.workflow_id,
            call.run_id,
            call.step,
        ):
            # Not sealed in the pair, or the provider's reply to another attempt (captured and
            # sent again): none is taken, and since anyone on the network between them can send
            # it, it is no word of the provider's on this attempt either: the endpoint was out of
            # reach, and the flow asks again within the step's budget. Not silently: someone on
            # the path, or keys that do not match, is the operator's to know.
            _not_taken(
                provider,
                call.step,
                "not sealed in the pair" if reply is None else "a reply to another attempt",
            )
            raise Failure.PROVIDER_ERROR.error(
                f"step {call.step}: the answer did not come from {provider} for this attempt"
                " (asked again)",
                UNREACHED,
                non_retryable=False,
            )
        if reply.failure is not None:
            raise _their_failure(reply.failure)
        assert reply.answer is not None  # neither: refused above
        return reply.answer

    @activity.defn(name=DIRECT_RESOLVE)
    async def resolve(self, call: DirectResolve) -> ResolvedRun:
        """The hub's resolution of the calling flow's run, asked over the hub's endpoint (a
        run of ``RESOLVED_DIRECTLY_PATHS``): what ``hub.resolve`` on the hub's queue answers."""
        info = activity.info()
        if not info.is_local or (info.workflow_id, info.workflow_run_id) != (
            call.workflow_id,
            call.run_id,
        ):
            # Only the flow itself asks, as its own local activity, for its own run.
            raise Failure.MALFORMED_START.error(
                "a run is resolved over the hub's endpoint by its own flow only"
            )
        address = self._endpoints.get(HUB)
        if address is None:
            # Asking again changes nothing until the process is configured: the run asks on
            # the hub's queue at once (the process's ready line says the endpoint is unknown).
            raise Failure.HUB_UNREACHED.error(
                "no endpoint is configured for the hub (RENKEI_LINKAGE_ENDPOINTS)",
                non_retryable=True,
            )
        # The try bounds its own time: the flow gives this local activity no start-to-close
        # timer (renkei.contracts.retries says why). A try past it is not made again (as a call
        # past its deadline, below): the run asks on the hub's queue at once.
        own = asyncio.timeout(ENDPOINT_TIMEOUT.total_seconds())
        try:
            async with own:
                return await self._resolved(address, call)
        except TimeoutError:
            if not own.expired():  # another's timeout (its database's, say): not the try's
                raise
            raise Failure.HUB_UNREACHED.error(
                "the hub's endpoint: too slow", non_retryable=True
            ) from None

    async def _resolved(self, address: str, call: DirectResolve) -> ResolvedRun:
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        call = call.model_copy(update={"trace": carrier})
        envelope = await _sealed(self._codec, self._prefix, HUB, call.workflow_id, call)
        try:
            ask: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = self._channel(
                address
            ).unary_unary(METHOD)
            # within the local activity's own time, so that the call's end is the endpoint's
            body: bytes = await ask(envelope, timeout=ENDPOINT_TIMEOUT.total_seconds() - 1)
        except grpc.aio.AioRpcError as err:
            if err.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                # A hub too slow now is not asked the same again here (its work would be done
                # again in full): the run asks on the hub's queue at once.
                raise Failure.HUB_UNREACHED.error(
                    "the hub's endpoint: too slow", non_retryable=True
                ) from None
            # anyone's status: no word of the hub's, asked again as a hub out of reach
            raise Failure.HUB_UNREACHED.error(
                f"the hub's endpoint: {err.code().name.lower()}", non_retryable=False
            ) from None
        reply = await _reply(self._codec, self._prefix, HUB, call.workflow_id, body, DirectResolved)
        if (
            reply is None
            or (reply.workflow_id, reply.run_id) != (call.workflow_id, call.run_id)
            or (reply.run is None) == (reply.failure is None)
        ):
            # Not sealed in the pair, the hub's reply to another run, or the run's own request
            # sent back: anyone on the network can send those, so none is the hub's word.
            _not_taken(HUB, "resolve", "not the hub's reply for this run")
            raise Failure.HUB_UNREACHED.error(
                "the answer did not come from the hub for this run (asked again)",
                non_retryable=False,
            )
        if reply.failure is not None:
            raise _their_failure(reply.failure)
        assert reply.run is not None
        return reply.run


async def resolve_run(hub: ServedHub, prefix: str, call: DirectResolve) -> DirectResolved:
    """The hub's reply to a run asking over the hub's endpoint to be resolved. What an activity
    on the hub's queue has from Temporal (which run asks: its workflow id, run id and type) the
    hub takes from Temporal's description of the run the request names
    (:func:`activities.claims.described_run`: running, on its executor's own control queue,
    started by no other flow); who asks, from the pair it is sealed in (the executor the
    workflow id names). Then the run is resolved exactly as ``hub.resolve`` resolves it, and a
    refusal is the reply's failure, sealed: the executor takes it as the hub's word."""
    try:
        run = await described_run(hub.client, prefix, call.workflow_id, call.run_id)
        if call.request.parent is not None or call.request.called_by is not None:
            raise Failure.MALFORMED_START.error(
                "a flow another flow calls resolves on the hub's queue, with its caller"
            )
        with asked_by(run):
            resolved = await hub.resolve(call.request)
    except ApplicationError as err:
        return DirectResolved(
            workflow_id=call.workflow_id, run_id=call.run_id, failure=_failure(err)
        )
    return DirectResolved(workflow_id=call.workflow_id, run_id=call.run_id, run=resolved)


def envelope_of(body: bytes) -> tuple[str, str, Payload]:
    """(provider, workflow id, sealed request) of an envelope, or :class:`Refused`."""
    try:
        envelope = Payload.FromString(body)
        sealed = Payload.FromString(envelope.data)
    except DecodeError:
        raise Refused(grpc.StatusCode.INVALID_ARGUMENT, "not a direct linkage envelope") from None
    if envelope.metadata.get("renkei-direct") != _VERSION:
        raise Refused(grpc.StatusCode.INVALID_ARGUMENT, "not a direct linkage envelope (v1)")
    provider = envelope.metadata.get("provider", b"").decode(errors="replace")[:100]
    workflow_id = envelope.metadata.get("workflow-id", b"").decode(errors="replace")
    if executor_of(workflow_id) is None:
        raise Refused(grpc.StatusCode.INVALID_ARGUMENT, "the envelope names no renkei flow")
    return provider, workflow_id, sealed


async def open_request(
    codec: ChannelCodec, prefix: str, provider: str, workflow_id: str, sealed: Payload
) -> DirectLinkage:
    """The request sealed in an envelope of ``workflow_id``'s flow to ``provider``, opened
    with ``codec``'s keys; :class:`Refused` unless it is sealed between the executor the
    workflow id names and the provider, and names that flow itself."""
    call = await _opened(codec, prefix, provider, workflow_id, sealed, DirectLinkage)
    if call.request.provider != provider:
        raise Refused(
            grpc.StatusCode.PERMISSION_DENIED,
            "linkage refused: the sealed request is for another flow or provider than its envelope",
        )
    return call


async def _opened(
    codec: ChannelCodec,
    prefix: str,
    provider: str,
    workflow_id: str,
    sealed: Payload,
    model: type[_Call],
) -> _Call:
    """What ``sealed`` holds, as ``model``: see :func:`open_request`."""
    if not await _keys_known(codec, provider, sealed):
        telemetry.refused(provider, "a direct request sealed with a key not registered")
        raise Refused(
            grpc.StatusCode.PERMISSION_DENIED,
            "linkage refused: the request is sealed with a key not registered (or not yet)",
        )
    try:
        [opened] = await _sealing(codec, prefix, provider, workflow_id).decode([sealed])
    except DecodeError:  # sealed in the pair, but not a payload at all
        raise Refused(grpc.StatusCode.INVALID_ARGUMENT, "malformed linkage request") from None
    if opened.metadata.get("encoding") == UNENCRYPTED:
        # Not sealed between the executor the workflow id names and this provider (a third
        # party's, a forged or a tampered request): refused before anything is recorded, as
        # the provider's worker refuses a payload it cannot read on its queue.
        telemetry.refused(provider, "a direct request not sealed by the flow's executor")
        raise Refused(
            grpc.StatusCode.PERMISSION_DENIED,
            "linkage refused: the request is not sealed between the flow's executor and"
            f" {provider}",
        )
    try:
        call = _CONVERTER.from_payload(opened, model)
    except Exception:
        # Sealed by the flow's executor, but no request a gate reads (a name past its bound):
        # refused before anything is recorded, and counted, as on the provider's queue.
        telemetry.refused(provider, "a malformed request")
        raise Refused(grpc.StatusCode.INVALID_ARGUMENT, "malformed linkage request") from None
    if not isinstance(call, model) or call.workflow_id != workflow_id:
        raise Refused(
            grpc.StatusCode.PERMISSION_DENIED,
            "linkage refused: the sealed request is for another flow or provider than its envelope",
        )
    return call


async def _keys_known(codec: ChannelCodec, provider: str, sealed: Payload) -> bool:
    """Whether the other party's key that ``sealed`` names in clear is one the registry had
    a moment ago: anyone can name a key no one has, and each would send the codec to read the
    whole registry (the directory reads it for such keys once a second at most, and none
    waits for it)."""
    parts = sealed.metadata.get(CHANNEL, b"").decode(errors="replace").split(",")
    if len(parts) != 4:
        return True  # not a channel at all: the codec does not read it
    for party, kid in ((parts[0], parts[1]), (parts[2], parts[3])):
        if party != provider and await codec.directory.by_id(kid, patient=False) is None:
            return False
    return True


async def sealed_request(codec: ChannelCodec, prefix: str, call: DirectLinkage) -> bytes:
    """The envelope of ``call`` as ``codec``'s party sends it: sealed between the executor
    the workflow id names and the provider (``codec`` must hold the executor's keys)."""
    return await _sealed(codec, prefix, call.request.provider, call.workflow_id, call)


async def _sealed(
    codec: ChannelCodec, prefix: str, provider: str, workflow_id: str, call: BaseModel
) -> bytes:
    sealing = _sealing(codec, prefix, provider, workflow_id)
    [sealed] = await sealing.encode([_padded(_CONVERTER.to_payload(call))])
    return Payload(
        metadata={
            "renkei-direct": _VERSION,
            "provider": provider.encode(),
            "workflow-id": workflow_id.encode(),
        },
        data=sealed.SerializeToString(),
    ).SerializeToString()


async def opened_reply(
    codec: ChannelCodec, prefix: str, call: DirectLinkage, body: bytes
) -> DirectReply | None:
    """The provider's reply to ``call``, or ``None`` if it is not one sealed between the
    flow's executor and the provider."""
    return await _reply(codec, prefix, call.request.provider, call.workflow_id, body, DirectReply)


async def _reply(
    codec: ChannelCodec,
    prefix: str,
    provider: str,
    workflow_id: str,
    body: bytes,
    model: type[_Reply],
) -> _Reply | None:
    sealing = _sealing(codec, prefix, provider, workflow_id)
    try:
        [opened] = await sealing.decode([Payload.FromString(body)])
        if opened.metadata.get("encoding") == UNENCRYPTED:
            return None
        found = _CONVERTER.from_payload(opened, model)
    except Exception:
        return None
    return found if isinstance(found, model) else None


def _padded(payload: Payload) -> Payload:
    """``payload`` with filler in its metadata (which the converter does not read), so that
    its size is a multiple of :data:`PAD`."""
    payload.metadata[_PAD_KEY] = b""
    bare = payload.ByteSize()
    target = -(-bare // PAD) * PAD
    while True:
        n = target - bare
        for _ in range(4):  # the filler's length is written too, in one to three bytes
            payload.metadata[_PAD_KEY] = bytes(max(n, 0))
            over = payload.ByteSize() - target
            if over == 0:
                return payload
            n -= over
        target += PAD  # no filler fits this size exactly: the next one


def _their_failure(f: DirectFailure) -> ApplicationError:
    """The failure a provider (or the hub) sealed in its reply, as the flow takes it: without
    :data:`TIMED_OUT`, which says that this worker's own attempt ran out of its time and is this
    worker's to say (a provider saying it would end the step ``StepTimedOut`` at its first
    attempt, as if every attempt had been spent waiting for it)."""
    details = [d for d in f.details if d != TIMED_OUT]
    return ApplicationError(f.message, *details, type=f.type, non_retryable=f.non_retryable)


def _rpc_failure(provider: str, err: grpc.aio.AioRpcError) -> ApplicationError:
    """What a failed call to a provider's endpoint means for the attempt: nothing the provider
    said. A status is not sealed: anyone between the executor and the provider can send one, so
    none is taken as the provider's refusal (only a sealed :class:`DirectReply` carries that);
    the attempt is asked again within the step's budget, whatever the status."""
    code = err.code()
    said = " ".join((err.details() or "").split())[:200]  # anyone's words: one line
    return Failure.PROVIDER_ERROR.error(
        f"{provider}'s endpoint: {code.name.lower()}" + (f" ({said})" if said else ""),
        UNREACHED,
        # the call's own deadline, the attempt's time (a status sent by anyone else says the
        # same: no answer in time, and the step's retries go on alike)
        *((TIMED_OUT,) if code == grpc.StatusCode.DEADLINE_EXCEEDED else ()),
        non_retryable=False,
    )


@dataclass
class DirectWiring:
    """What the workers of one process share of the direct channel: the endpoints its executors
    ask (the settings', and this process's own once it listens), the providers its endpoint
    serves, and the asking sides to close."""

    endpoints: dict[str, str]
    served: dict[str, Served] = field(default_factory=dict)
    links: list[DirectLinks] = field(default_factory=list)
    hub: ServedHub | None = None  # the hub, when this process's endpoint serves it too
