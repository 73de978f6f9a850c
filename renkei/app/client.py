"""The client SDK: start a BPF, await its result, describe a run.

Typical use by an agency::

    client = await RenkeiClient.connect()
    handle = await client.start(StartFlow(bpf="child-allowance-check", executor="city-minato",
                                          subject=code, inputs={...}, case_ref="2026-000123"))
    result = await client.result(handle.id)

The workflow id is ``<bpf>/<executor>/<case_ref>``: starting twice with the same case reference
and the same content (subject, inputs, version) returns the existing run instead of a second
one; the same case reference with other content raises :class:`CaseConflict` (HTTP 409), so a
mistyped case number never hands back another person's flow. The case reference is the
caller's own file number and must not contain personal data.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from typing import Any, Literal, cast

from pydantic import BaseModel, Field
from temporalio.api.common.v1 import Payload
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import (
    Client,
    WorkflowExecution,
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowHandle,
    WorkflowUpdateFailedError,
)
from temporalio.common import (
    RawValue,
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from renkei.bpf.inputs import check_subject_code, validate_inputs
from renkei.bpf.loader import BpfFileError, definition_files, load_file
from renkei.bpf.models import BpfDefinition
from renkei.contracts.failures import Failure
from renkei.contracts.messages import (
    PATHS,
    RESOLVED_DIRECTLY_PATHS,
    Acknowledged,
    FlowResult,
    LinkageOutcome,
    ResolvedRun,
    Response,
    StartFlow,
    Ticket,
    Waiting,
    check_case_ref,
)
from renkei.contracts.names import control_parts, control_queue, hub_queue, workflow_id
from renkei.kernel import search_attributes as sa
from renkei.kernel.settings import Settings, get_settings
from whitelist.catalog import default_catalog
from whitelist.models import Catalog
from workers.plugin import connect


class ResponseRefused(ValueError):
    """The flow refused a response (not waiting there, or the payload does not validate)."""


class FlowNotFound(LookupError):
    """No flow has this workflow id (the message names the id, never personal data)."""


class CaseConflict(Exception):
    """The case reference is already taken by a flow with other content (another subject,
    other inputs or another version): the start is refused, the existing flow untouched."""


# What a filter of :meth:`RenkeiClient.runs` may be: an id, never a piece of a query.
FILTER_VALUE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,99}$")

# The memo key of a run's start fingerprint (the memo is encrypted like every payload).
FINGERPRINT = "renkei.start"


def start_fingerprint(request: StartFlow) -> str:
    """SHA-256 of what makes a start this case's: the subject, the inputs, the version asked.

    Kept in the run's memo; a second start with the same case reference is the same start
    exactly when its fingerprint is the same. It holds no value in clear.
    """
    canonical = json.dumps(
        {"subject": request.subject, "inputs": request.inputs, "version": request.version},
        sort_keys=True,
        ensure_ascii=False,
        separators=(",", ":"),
        default=str,
    )
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


def _not_found(err: RPCError) -> bool:
    return err.status == RPCStatusCode.NOT_FOUND


async def hubs_first_answer(
    events: AsyncIterator[HistoryEvent], hub: str
) -> tuple[str, Sequence[Payload]] | None:
    """The hub's first answer in a run's history that holds the run's ticket: the result of
    the first ``hub.resolve`` or ``hub.check-resume`` to complete of those scheduled on the
    hub's queue ``hub`` (its name, and the payloads as recorded). Not an activity of that name
    the executor's run scheduled on a queue of its own and answered itself: only the hub's
    queue is served by the hub (a rogue worker polling it answers on a pair of its own, or with
    a ticket of another run, which the caller's check of the ticket refuses)."""
    asked: dict[int, str] = {}
    async for event in events:
        if event.HasField("activity_task_scheduled_event_attributes"):
            scheduled = event.activity_task_scheduled_event_attributes
            name = scheduled.activity_type.name
            if name in ("hub.resolve", "hub.check-resume") and scheduled.task_queue.name == hub:
                asked[event.event_id] = name
            continue
        if not event.HasField("activity_task_completed_event_attributes"):
            continue
        done = event.activity_task_completed_event_attributes
        kind = asked.get(done.scheduled_event_id)
        if kind is not None:
            return kind, done.result.payloads
    return None


@contextlib.contextmanager
def _known(wid: str) -> Iterator[None]:
    """Temporal's NOT_FOUND for ``wid`` as :class:`FlowNotFound`."""
    try:
        yield
    except RPCError as err:
        if _not_found(err):
            raise FlowNotFound(f"no flow {wid}") from None
        raise


START_ATTEMPTS = 5
# What the SDK reads of a failure whose message is sealed for another party than this process.
SEALED_FAILURE = "Encoded failure"
# hub.check-resume's answer: the continuing run's ticket (none: a run from before tickets).
_TICKET: Any = Ticket | None
# The longest one call to Temporal may take before it is given up (DEADLINE_EXCEEDED): a server
# out of reach answers an API request with 503 (renkei.app.web) in bounded time, not never.
RPC_TIMEOUT = dt.timedelta(seconds=10)
TRANSIENT = frozenset(
    {
        RPCStatusCode.UNAVAILABLE,
        RPCStatusCode.DEADLINE_EXCEEDED,
        RPCStatusCode.CANCELLED,
        RPCStatusCode.INTERNAL,
        RPCStatusCode.RESOURCE_EXHAUSTED,
    }
)


class RunStatus(BaseModel):
    workflow_id: str
    run_id: str | None
    bpf: str
    version: int | None = None
    executor: str | None = None
    status: str
    renkei_status: str | None
    started: dt.datetime | None
    closed: dt.datetime | None
    link: str
    trigger: str | None = None
    waiting_for: str | None = None
    deadline: dt.datetime | None = None


class FlowEnd(BaseModel):
    """How a closed flow ended: its result, or why it did not reach one."""

    outcome: Literal[
        "completed", "rejected", "denied", "failed", "cancelled", "terminated", "timed_out"
    ] = Field(
        description="completed (result holds it); rejected by the flow's own logic, denied by"
        " the whitelist or failed (reason says why); cancelled, terminated or timed out"
    )
    reason: str | None = Field(default=None, description="why it was rejected, denied or failed")
    failure_type: str | None = Field(
        default=None, description="renkei's failure type (e.g. LinkageDenied, StepTimedOut)"
    )
    result: dict[str, Any] = Field(default_factory=dict)
    linkages: list[LinkageOutcome] = Field(
        default_factory=list, description="each linkage of a completed or rejected flow"
    )
    readable: bool = Field(
        default=True,
        description="false when this process cannot open the result (it is sealed to the"
        " executor: its own API or SDK reads it)",
    )


_CLOSED = {"CANCELED": "cancelled", "TERMINATED": "terminated", "TIMED_OUT": "timed_out"}


class RenkeiClient:
    """Start and follow flows. Inputs are checked locally before anything is sent."""

    def __init__(
        self, client: Client, settings: Settings | None = None, catalog: Catalog | None = None
    ) -> None:
        """``catalog``: what a start is checked against before it is sent (the shipped one by
        default; a live one, :meth:`whitelist.store.LiveWhitelist.bind`, knows registered orgs)."""
        self.client = client
        self.settings = settings or get_settings()
        self._catalog = catalog
        self._definitions: dict[str, BpfDefinition] | None = None
        self._legacy: Client | None = None

    @classmethod
    async def connect(
        cls,
        settings: Settings | None = None,
        address: str | None = None,
        catalog: Catalog | None = None,
    ) -> RenkeiClient:
        s = settings or get_settings()
        return cls(await connect(s, address), s, catalog)

    def _local_definition(self, bpf: str, version: int | None) -> BpfDefinition | None:
        if self._definitions is None:
            self._definitions = {}
            for path in definition_files(self.settings.definitions_dir):
                try:
                    d = load_file(path).definition
                except BpfFileError:
                    continue
                known = self._definitions.get(d.bpf)
                if known is None or d.version > known.version:
                    self._definitions[d.bpf] = d
        found = self._definitions.get(bpf)
        if found is None or (version is not None and found.version != version):
            return None
        return found

    async def start(self, request: StartFlow) -> WorkflowHandle[Any, FlowResult]:
        """Start a flow, or return the run already started for the same case reference with
        the same content; raises :class:`CaseConflict` if that run's content differs."""
        check_subject_code(request.subject)
        if request.trigger in ("counter", "portal"):  # the platform makes the others'
            check_case_ref(request.case_ref)
        catalog = self._catalog or default_catalog()
        if request.executor not in catalog.orgs:
            raise ValueError(f"unknown executor org {request.executor!r}")
        if request.resume is not None or request.signed_resume is not None:
            raise ValueError("resume is set only by a flow itself")
        local = self._local_definition(request.bpf, request.version)
        if local is not None:
            request = request.model_copy(
                update={"inputs": validate_inputs(local, request.inputs, catalog)}
            )
            if request.trigger not in local.trigger_kinds():
                raise ValueError(f"{request.bpf} cannot be started by trigger {request.trigger}")
        # The paths this release's interpreter takes for it (the caller's word is not asked):
        # resolved over the hub's endpoint where the platform asks so.
        paths = RESOLVED_DIRECTLY_PATHS if self.settings.hub_transport == "direct" else PATHS
        request = request.model_copy(update={"paths": paths})
        wid = workflow_id(request.bpf, request.executor, request.case_ref)
        attrs = TypedSearchAttributes(
            [
                SearchAttributePair(sa.BPF, request.bpf),
                SearchAttributePair(sa.EXECUTOR, request.executor),
                SearchAttributePair(sa.TRIGGER, request.trigger),
                SearchAttributePair(sa.STATUS, "starting"),
            ]
            + (
                [SearchAttributePair(sa.CONFORMANCE, sa.KIT)]
                if self.settings.kit_clock and self.settings.mode == "test"
                else []
            )
        )
        fingerprint = start_fingerprint(request)
        # The case reference makes the start idempotent, so a start whose answer was lost (the
        # server busy or restarting) is simply sent again: it returns the run it began, if any.
        for attempt in range(START_ATTEMPTS):
            try:
                return await self.client.start_workflow(
                    request.bpf,
                    request,
                    id=wid,
                    task_queue=control_queue(self.settings.task_queue_prefix, request.executor),
                    result_type=FlowResult,
                    search_attributes=attrs,
                    memo={FINGERPRINT: fingerprint},
                    id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                    id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
                    rpc_timeout=RPC_TIMEOUT,
                )
            except WorkflowAlreadyStartedError:
                found, run_id = await self._fingerprint_of(wid)
                if found != fingerprint:
                    raise CaseConflict(
                        f"case reference {request.case_ref!r} of {request.bpf} at"
                        f" {request.executor} is already taken by a flow with another subject,"
                        " other inputs or another version: check the case reference (a new"
                        " case needs a new one)"
                    ) from None
                # The run already started, as a start that found it running would return it.
                return WorkflowHandle(
                    self.client, wid, result_run_id=run_id, result_type=FlowResult
                )
            except RPCError as err:
                if err.status not in TRANSIENT or attempt == START_ATTEMPTS - 1:
                    raise
                await asyncio.sleep(0.2 * 2**attempt)
        raise AssertionError("unreachable")

    async def _fingerprint_of(self, wid: str) -> tuple[str, str | None]:
        """(start fingerprint, run id) of the run of ``wid``: the fingerprint from its memo, or
        (a run started before fingerprints, or a child flow) from what it was started with."""
        described = await self.client.get_workflow_handle(wid).describe(rpc_timeout=RPC_TIMEOUT)
        found = await described.memo_value(FINGERPRINT, None, type_hint=str)
        if not isinstance(found, str):
            found = start_fingerprint(await self.started_with(wid))
        return found, described.run_id

    async def respond(
        self,
        wid: str,
        step: str,
        payload: dict[str, Any],
        by: Literal["citizen", "agency", "operator"] = "agency",
        attestation: str | None = None,
    ) -> Acknowledged:
        """Answer a flow waiting at ``step``; raises :class:`ResponseRefused` with the reason.

        An answer ``by`` the citizen needs the ``attestation`` of the citizen's own portal
        session (:func:`renkei.app.citizen.answer`); the flow refuses it otherwise.
        """
        try:
            with _known(wid):
                writer = await self._client_for(wid)
                raw: RawValue = await writer.get_workflow_handle(wid).execute_update(
                    "renkei.respond",
                    Response(step=step, payload=payload, by=by, attestation=attestation),
                    result_type=RawValue,
                    rpc_timeout=RPC_TIMEOUT,
                )
        except WorkflowUpdateFailedError as err:
            cause = err.cause
            if isinstance(cause, ApplicationError) and cause.message == SEALED_FAILURE:
                # Its reason is written for the executor alone; its kind is not sealed.
                raise ResponseRefused(f"the flow did not take the answer ({cause.type})") from None
            raise ResponseRefused(
                cause.message if isinstance(cause, ApplicationError) else str(err)
            ) from None
        try:
            [ack] = await writer.data_converter.decode([raw.payload], [Acknowledged])
        except (KeyError, RuntimeError):
            # The flow took the answer, and wrote its acknowledgement for its executor alone
            # (a process holding the platform's keys only, answering for a citizen, cannot
            # open it): the update completing is the acknowledgement.
            return Acknowledged(step=step, at=dt.datetime.now(dt.UTC))
        return cast(Acknowledged, ack)

    async def _client_for(self, wid: str) -> Client:
        """The client that writes to ``wid`` as its worker reads: a run started before
        executor-side control (on the shared control queue) reads the shared ring only."""
        described = await self.client.get_workflow_handle(wid).describe(rpc_timeout=RPC_TIMEOUT)
        if control_parts(described.task_queue)[1] is not None:
            return self.client
        if self._legacy is None:
            from workers.plugin import party_client

            codec = self.client.data_converter.payload_codec
            parties = getattr(codec, "parties", None) or ["hub"]
            self._legacy = party_client(self.client, self.settings, parties, legacy=True)
        return self._legacy

    async def started_with(self, wid: str) -> StartFlow:
        """What the flow was started with (its first event's input, decrypted)."""
        handle = self.client.get_workflow_handle(wid)
        with _known(wid):
            async for event in handle.fetch_history_events(rpc_timeout=RPC_TIMEOUT):
                attrs = event.workflow_execution_started_event_attributes
                [found] = await self.client.data_converter.decode(attrs.input.payloads, [StartFlow])
                if not isinstance(found, StartFlow):
                    raise TypeError(f"{wid} was not started with a StartFlow")
                return found
        raise ValueError(f"{wid} has no history")

    async def resolved_ticket(
        self, wid: str, kept: Callable[[str, str], Awaitable[Ticket | None]] | None = None
    ) -> tuple[str, Ticket | None]:
        """The hub's ticket for the flow's current run: as the hub first answered it in the
        run's history (``hub.resolve``, or ``hub.check-resume`` for a continuation, on the hub's
        queue), on the pair of the executor and the hub: what the hub's own process reads of a
        flow whose start the executor wrote for itself alone; for a run that holds no such
        answer (one resolved at the hub's endpoint), the one the hub kept for it (``kept``,
        given the workflow id and the run's id: the hub's own table, one ticket a run). The
        history comes first: a run the hub resolved before it kept tickets could have a later
        one, about someone else, kept as its first. ``None``: neither holds one (a run from
        before tickets, or one the hub has not resolved yet). With the current run's id: the
        caller verifies the ticket (the hub's signature, for this workflow and that run)."""
        with _known(wid):
            run = (await self.describe(wid)).run_id or ""
            handle = self.client.get_workflow_handle(wid, run_id=run)
            answered = await hubs_first_answer(
                handle.fetch_history_events(rpc_timeout=RPC_TIMEOUT),
                hub_queue(self.settings.task_queue_prefix),
            )
            if answered is None:
                return run, await kept(wid, run) if kept is not None else None
        kind, payloads = answered
        if kind == "hub.resolve":
            [resolved] = await self.client.data_converter.decode(payloads, [ResolvedRun])
            found: Ticket | None = resolved.ticket if isinstance(resolved, ResolvedRun) else None
        else:
            [found] = await self.client.data_converter.decode(payloads, [_TICKET])
        return run, found

    async def waiting(self, wid: str) -> list[Waiting]:
        """What the flow waits for now (empty if nothing)."""
        with _known(wid):
            found: list[Waiting] = await self.client.get_workflow_handle(wid).query(
                "renkei.waiting", result_type=list[Waiting], rpc_timeout=RPC_TIMEOUT
            )
        return found

    async def runs(
        self,
        *,
        bpf: str | None = None,
        executor: str | None = None,
        trigger: str | None = None,
        status: str | None = None,
        waiting: bool = False,
        conformance: bool = False,
        limit: int = 50,
    ) -> list[RunStatus]:
        """Runs by BPF, executor, trigger, status; ``waiting``: those waiting for someone;
        ``conformance``: the conformance kit's runs instead of the real ones.

        Raises ``ValueError`` for a filter that is not an id (it would change the query)."""
        for name, value in (
            ("bpf", bpf),
            ("executor", executor),
            ("trigger", trigger),
            ("status", status),
        ):
            if value is not None and not FILTER_VALUE.match(value):
                raise ValueError(f"{name}: not an id (letters, digits, '.', '_', ':', '-')")
        terms = [
            f"{key.name} = '{value}'"
            for key, value in (
                (sa.BPF, bpf),
                (sa.EXECUTOR, executor),
                (sa.TRIGGER, trigger),
                (sa.STATUS, status),
            )
            if value is not None
        ]
        if waiting:
            terms.append(f"{sa.WAITING_FOR.name} IS NOT NULL")
        if not terms:
            terms.append(f"{sa.BPF.name} IS NOT NULL")
        # The conformance kit's runs are not the executors' (see ``search_attributes``).
        terms.append(f"{sa.CONFORMANCE.name} {'IS NOT NULL' if conformance else 'IS NULL'}")
        out: list[RunStatus] = []
        async for w in self.client.list_workflows(
            " AND ".join(terms), limit=limit, rpc_timeout=RPC_TIMEOUT
        ):
            out.append(self._status(w))
        return out

    def _status(self, w: WorkflowExecution) -> RunStatus:
        attrs = w.typed_search_attributes
        return RunStatus(
            workflow_id=w.id,
            run_id=w.run_id,
            bpf=w.workflow_type,
            version=attrs.get(sa.BPF_VERSION),
            executor=attrs.get(sa.EXECUTOR),
            status=w.status.name if isinstance(w.status, WorkflowExecutionStatus) else "UNKNOWN",
            renkei_status=attrs.get(sa.STATUS),
            started=w.start_time,
            closed=w.close_time,
            link=self.settings.run_link(w.id, w.run_id),
            trigger=attrs.get(sa.TRIGGER),
            waiting_for=attrs.get(sa.WAITING_FOR),
            deadline=attrs.get(sa.DEADLINE),
        )

    async def result(self, wid: str) -> FlowResult:
        """Wait for the flow's result (raises ``WorkflowFailureError`` if it failed)."""
        handle = self.client.get_workflow_handle(wid, result_type=FlowResult)
        with _known(wid):
            result: FlowResult = await handle.result()
        return result

    async def ending(self, wid: str) -> FlowEnd | None:
        """How the flow ended (``None`` while it runs); raises :class:`FlowNotFound`."""
        run = await self.describe(wid)
        if run.status in _CLOSED:
            return FlowEnd.model_validate({"outcome": _CLOSED[run.status]})
        if run.status not in ("COMPLETED", "FAILED"):
            return None
        handle = self.client.get_workflow_handle(wid, result_type=FlowResult)
        try:
            with _known(wid):
                done: FlowResult = await handle.result(follow_runs=False, rpc_timeout=RPC_TIMEOUT)
        except WorkflowFailureError as err:
            cause = err.cause
            kind = cause.type if isinstance(cause, ApplicationError) else None
            return FlowEnd(
                outcome="denied" if kind == Failure.LINKAGE_DENIED.value else "failed",
                reason=cause.message if isinstance(cause, ApplicationError) else str(cause),
                failure_type=kind,
            )
        except (FlowNotFound, RPCError):
            raise
        except Exception:  # sealed to a party whose key this process lacks
            status = run.renkei_status
            return FlowEnd(
                outcome=status
                if status in ("completed", "rejected", "denied", "failed")
                else ("completed" if run.status == "COMPLETED" else "failed"),
                readable=False,
            )
        return FlowEnd(
            outcome=done.outcome, reason=done.reason, result=done.result, linkages=done.linkages
        )

    async def describe(self, wid: str) -> RunStatus:
        """The run's status; raises :class:`FlowNotFound` for an unknown id."""
        with _known(wid):
            return self._status(
                await self.client.get_workflow_handle(wid).describe(rpc_timeout=RPC_TIMEOUT)
            )
