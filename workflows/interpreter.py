"""The BPF interpreter: one dynamic workflow, so every BPF id is its own workflow type.

A run starts by asking the hub (an activity on the hub's queue: ``workflows.hub_calls``) for the
registered definition, which pins (id, version, content hash) into the run's history; everything
after that is computed from the history alone. Each query step is first brokered by the hub: it
decides it against the whitelist, records it, and only if it is permitted hands out the
provider's code for the subject. The query then runs as an activity on the provider org's own task queue, where
the provider's whitelist interceptor decides again before the provider's code runs. Payload
fields that name subjects are translated back into the executor's codes by the hub.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterator, Sequence
from datetime import datetime, timedelta
from typing import Any, Literal, TypeVar

from temporalio import workflow
from temporalio.common import (
    RawValue,
    RetryPolicy,
    SearchAttributePair,
    SearchAttributeUpdate,
    TypedSearchAttributes,
)
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    CancelledError,
    ChildWorkflowError,
)
from temporalio.exceptions import TimeoutError as StepTimeout

with workflow.unsafe.imports_passed_through():
    from pydantic import BaseModel, ValidationError

    from activities.hub import HubActivities
    from renkei.bpf.ahead import following
    from renkei.bpf.cel.program import (
        CompiledBpf,
        DeterministicFailure,
        ExpressionError,
        compiled_for,
        embedded,
        shared_definition,
    )
    from renkei.bpf.inputs import InputError, validate_values
    from renkei.bpf.models import (
        ActStep,
        AnyStep,
        BranchStep,
        CallStep,
        FailStep,
        ParallelStep,
        QueryStep,
        SetStep,
        SleepStep,
        WaitStep,
        WhenArm,
        walk,
    )
    from renkei.contracts.failures import UNREACHED, Failure
    from renkei.contracts.messages import (
        NAME_LIMIT,
        NEWEST_PATHS,
        PATHS,
        RESOLVED_DIRECTLY_PATHS,
        RESUMED_TEXT_PATHS,
        SUBJECT_LIMIT,
        Acknowledged,
        AttemptOutcomeReport,
        Brokered,
        BrokerRequest,
        ConsentProof,
        DirectLinkage,
        DirectResolve,
        FirstLinkage,
        FlowResult,
        KitAdvance,
        KitClock,
        LinkageOutcome,
        LinkageRequest,
        ParentFlow,
        ReminderRequest,
        ResolvedRun,
        ResolveRequest,
        Response,
        Resume,
        ResumeProof,
        StartFlow,
        TranslateRequest,
        Waiting,
        carried,
        linkage_asked,
    )
    from renkei.contracts.names import (
        DIRECT_LINKAGE,
        DIRECT_RESOLVE,
        HUB,
        act_activity,
        agency_queue,
        query_activity,
        workflow_id,
    )
    from renkei.contracts.retries import (
        BROKER_GROUP_LIMIT,
        ENDPOINT_DEADLINE,
        ENDPOINT_RETRY,
        HUB_RETRY,
        budget_seconds,
        linkage_retry,
    )
    from renkei.kernel import search_attributes as sa
    from renkei.kernel.attest import answer_digest, is_citizens, is_providers
    from renkei.kernel.channels import channel_parties
    from renkei.kernel.codec import UNENCRYPTED
    from renkei.kernel.permits import AnswerReceipt, SignedPermit
    from whitelist.payloads import SCHEMAS, GenericRecord, subject_fields
    from workflows.outcomes import first_failure, local_failure, step_failure

from workflows.hub_calls import calls_hub_remotely, hub_call

# Linkages carry the hub's permit and the sealed code (runs recorded before replay the old path).
PERMITS = "permits-v1"
# Answers carry the provider's signature (runs recorded before replay without checking it).
SIGNED_ANSWERS = "signed-answers-v1"
# A continuation takes up only a state the hub signed.
SIGNED_RESUME = "signed-resume-v1"
# ... as the exact text the hub signed (a run that continued before carried the state as
# dumped, signed so: its replay asks the hub as it did). Asked only as a run continues.
RESUME_TEXT = "resume-text-v1"
# The hub appends what became of each allowed linkage (runs recorded before leave it unknown);
# a linkage no worker takes ends as "no answer" when its permit does.
ATTEMPT_OUTCOMES = "attempt-outcomes-v1"
# Outcomes go to the hub with the flow's next broker request, or in one call for several, instead
# of one call each; and the start's search attributes are set in one upsert (runs recorded
# before, or resolved by a hub that does not take outcomes so, do neither).
BATCHED_OUTCOMES = "batched-outcomes-v1"
# The hub brokers the run's first linkage as it resolves the run, if nothing the flow computes
# comes before it (runs recorded before, or resolved by a hub that does not, broker it at the step).
FIRST_WITH_START = "first-linkage-with-start-v1"
# Linkages the flow asks for at the same moment (the first steps of a parallel step's lanes) go
# to the hub in one call (runs recorded before, or resolved by a hub that does not take them so,
# ask for each on its own).
GROUP_BROKERING = "group-brokering-v1"
# A conformance-kit run's waits and sleeps end when the kit moves its clock, not on a timer.
KIT_CLOCK = "kit-clock-v1"
# A provided outcome goes to the hub with the provider's receipt (its signature over the permit
# and the digest of its answer): the hub takes "provided" on nothing else. Runs recorded before
# report it without.
PROVIDER_RECEIPTS = "provider-receipts-v1"
# The hub brokers ahead: the run's leading linkages with its start, and with each linkage the
# flow asks for, those that certainly follow it (renkei.bpf.ahead); a permit brokered ahead is
# used at its step if it still covers the step's whole budget, else the step is brokered again;
# one never asked is told as "not_asked" as the flow ends (runs recorded before, or resolved by a
# hub that does not broker so, ask for each linkage at its step, and tell an unasked first
# linkage as "failed").
BROKERED_AHEAD = "brokered-ahead-v1"
# The hub collects "provided" from the provider's own receipt (kept by its gate before the answer
# leaves): the flow tells every other outcome, never a "provided" (runs recorded before, or
# resolved by a hub that does not collect, tell it with the receipt).
COLLECTED_RECEIPTS = "collected-receipts-v1"
# A kit run carries the kit's search attribute; any other run drops it (a start cannot hide a
# real run among the kit's).
KIT_MARK = "kit-mark-v1"
# Every path patched above but the kit's clock, taken at once: a run that records this one marker
# (every run started since) takes all of them without a marker each. The SDK writes each patch's
# marker with an upsert of the TemporalChangeVersion search attribute, so each path a new run took
# cost it a marker and an upsert (each a visibility update in the server: seven of each for a
# 3-query run) where it now has one of each. Runs recorded before take each path as its own marker
# says. A path patched after this one is asked on its own (``workflow.patched``): a run that
# recorded only this marker predates it. The kit's clock keeps its own marker: only a
# conformance-kit run asks for it, so its history shows it was one (a run in operation's never).
LEAN = "lean-paths-v1"
# A direct linkage whose provider's endpoint was never reached (every attempt a gRPC status, or no
# endpoint configured) is told as "no_answer", as a linkage no worker took from the provider's
# queue (runs recorded before told it as "failed").
UNREACHED_NO_ANSWER = "unreached-no-answer-v1"
# Every path of ``LEAN``, and ``UNREACHED_NO_ANSWER``, in one marker; and the run's search
# attributes folded: the pinned definition's content hash is a search attribute set with the
# version and the status, not a memo of its own; and what a flow sets as it goes on ("running"
# at its start, or as a wait or a sleep ends) is set with what it sets next, if that comes before
# anything that takes time (a wait, a sleep, the flow's end), instead of in an upsert of its own.
# Each upsert and each memo is an event in the history and an update of the server's visibility
# store: every run has one of each fewer at its start, and one that starts by waiting or ends as
# its wait ends one more fewer. Runs recorded before ask ``LEAN`` as they did, pin their
# definition in their memo and upsert as they did.
LEAN_FOLDED = "lean-paths-v2"
_LEAN_PATHS = frozenset(
    {
        PERMITS,
        SIGNED_ANSWERS,
        SIGNED_RESUME,
        ATTEMPT_OUTCOMES,
        BATCHED_OUTCOMES,
        FIRST_WITH_START,
        GROUP_BROKERING,
        PROVIDER_RECEIPTS,
        KIT_MARK,
        BROKERED_AHEAD,
        COLLECTED_RECEIPTS,
    }
)
_FOLDED_PATHS = _LEAN_PATHS | {UNREACHED_NO_ANSWER}
# A start the platform wrote from ``PATHS`` 3 on says which paths its run takes
# (``StartFlow.paths``), so the run records no marker for them: the marker of ``LEAN_FOLDED`` and
# the SDK's upsert of TemporalChangeVersion with it (an event and a visibility update each, in
# every run) are gone. Such a run takes every path of ``LEAN_FOLDED``, and sets its first search
# attributes (the pinned version and content hash, "running") past its direct linkages: a
# linkage over the direct channel is a local activity, which ends within the workflow task that
# asked for it, so what is set before it is upserted with what the run sets next (its end, a
# wait, a hub call) instead of in an upsert of its own; if a linkage outlasts its workflow task
# (a slow provider, retries), they are upserted as soon as it ends. A start without ``paths``
# (written before, or by a client from before) asks ``LEAN_FOLDED`` as it did, and a run
# recorded so replays as it ran, as does a start asking for them that a worker from before ran
# (it took LEAN_FOLDED's paths, with the marker). A start asking for paths this worker does not
# know fails its workflow task until a worker that knows them takes it.
_UNMARKED_PATHS = 3
# Steps that take no time before the next step, or that set the run's search attributes
# themselves (waits and sleeps): attributes set lazily wait for what comes after them.
_INSTANT = (SetStep, FailStep, BranchStep, WaitStep, SleepStep)


A = TypeVar("A")
R = TypeVar("R")


class _Rejected(Exception):
    def __init__(self, reason: str) -> None:
        self.reason = reason


# A failure no retry can mend (a value its declared type cannot hold) fails the run with its
# reason, instead of failing the workflow task again and again. (The SDK takes the option on a
# dynamic workflow; only its typing overloads leave it out.)
@workflow.defn(dynamic=True, failure_exception_types=[DeterministicFailure])  # type: ignore[call-overload]
class BpfInterpreter:
    """Runs any registered BPF; the workflow type is the BPF id."""

    def __init__(self) -> None:
        self._outputs: dict[str, Any] = {}
        self._messages: dict[str, Any] = {}
        self._linkages: list[LinkageOutcome] = []
        self._status = "starting"
        self._waiting: dict[str, tuple[WaitStep, Waiting]] = {}
        self._responses: dict[str, dict[str, Any]] = {}
        # The citizen's own answers as the portal attested them: an act passes one to the hub
        # as the citizen's consent.
        self._citizen_answers: dict[str, Response] = {}
        self._ignored_signals = 0
        # What the flow tells the hub of its attempts' outcomes runs beside the flow, and is
        # awaited before the flow ends or continues as new.
        self._reports: list[asyncio.Task[None]] = []
        # Outcomes not yet told to the hub: held only while the flow waits on nothing long (its
        # next broker request carries them); told at once before it does.
        self._untold: list[AttemptOutcomeReport] = []
        self._long = 0  # steps in flight that may take long (a provider's answer, a wait, ...)
        self._telling = False  # a call telling the held-back outcomes is about to go
        self._first: FirstLinkage | None = None  # the first linkage, brokered with the start
        self._lean = False  # whether the run recorded LEAN (asked first thing in ``run``)
        self._folded = False  # whether it recorded LEAN_FOLDED (it folds its upserts)
        self._unmarked = False  # whether its start asked for _UNMARKED_PATHS (no marker)
        # whether it asked the hub's endpoint to resolve it (then maybe the hub's queue)
        self._asked_endpoint = False
        # Search attributes set lazily, not yet upserted (a run that folds them).
        self._unset: dict[str, SearchAttributeUpdate[Any]] = {}
        # Brokering ahead: the hub's answers for linkages not reached yet, by step, and for each
        # query step the ones that certainly follow it (asked for with it).
        self._ahead = False
        self._held: dict[str, Brokered] = {}
        self._following: dict[str, list[QueryStep]] = {}
        # Linkages asked for at this moment, answered together by one call to the hub (with no
        # future: asked ahead, its answer is held for its step).
        self._asking: list[tuple[BrokerRequest, asyncio.Future[Brokered | None] | None]] = []
        self._askers: list[asyncio.Task[None]] = []
        # The conformance kit's clock: only a run the hub resolved as a kit run takes it.
        self._kit_clock = False
        self._kit_now: datetime | None = None
        self._kit_due: dict[str, datetime] = {}

    @workflow.query(name="renkei.status")
    def status(self) -> str:
        return self._status

    @workflow.query(name="renkei.waiting")
    def waiting(self) -> list[Waiting]:
        """What the flow waits for now, until when, and what the respondent is shown."""
        return [w for _, w in self._waiting.values()]

    @workflow.query(name="renkei.kit.clock")
    def kit_clock(self) -> KitClock:
        """A kit run's clock and when its pending waits and sleeps are due."""
        return KitClock(now=self._kit_now, due=sorted(self._kit_due.values()))

    @workflow.update(name="renkei.kit.advance")
    def kit_advance(self, advance: KitAdvance) -> KitClock:
        """The kit moves the run's clock (never back): the waits and sleeps due by then end."""
        if self._kit_now is None or advance.to > self._kit_now:
            self._kit_now = advance.to
        return self.kit_clock()

    @kit_advance.validator
    def _validate_kit_advance(self, advance: KitAdvance) -> None:
        # Refused before it is written to the history: a run the hub did not resolve as a
        # conformance-kit run (every run of a hub in operation) keeps Temporal's timers.
        if not self._kit_clock:
            raise Failure.NOT_A_KIT_RUN.error(
                "this run keeps its own time: only a conformance-kit run takes the kit's clock",
                non_retryable=False,
            )

    # An answer comes as the raw payload, so that the flow sees on which channel it was written
    # (the SDK would convert a typed argument and keep nothing of its channel).
    @workflow.update(name="renkei.respond")
    async def respond(self, raw: RawValue) -> Acknowledged:
        """Answer a waiting step. Refused (and the flow keeps waiting) unless it validates."""
        response = self._response(raw)
        self._responses[response.step] = self._checked(response, raw)
        if response.by == "citizen":
            self._citizen_answers[response.step] = response
        return Acknowledged(step=response.step, at=workflow.now())

    @respond.validator
    def _validate_response(self, raw: RawValue) -> None:
        self._checked(self._response(raw), raw)

    @workflow.signal(name="renkei.respond")
    def respond_signal(self, raw: RawValue) -> None:
        """The fire-and-forget form: an invalid response is dropped, counted, and logged."""
        try:
            response = self._response(raw)
            self._responses[response.step] = self._checked(response, raw)
            if response.by == "citizen":
                self._citizen_answers[response.step] = response
        except ApplicationError as err:
            self._ignored_signals += 1
            workflow.logger.warning("response signal ignored: %s", err.message)

    @staticmethod
    def _response(raw: RawValue) -> Response:
        try:
            return workflow.payload_converter().from_payload(raw.payload, Response)
        except Exception:  # a payload no converter reads, or not a Response
            raise Failure.INVALID_RESPONSE.error(
                "an answer this flow cannot read (written in clear, for another party, or not"
                " an answer)",
                non_retryable=False,
            ) from None

    def _patched(self, patch: str) -> bool:
        """Whether this run takes the path ``patch``: yes for a run that recorded ``LEAN_FOLDED``
        (one of ``_FOLDED_PATHS``) or ``LEAN`` (one of ``_LEAN_PATHS``), else as its own marker
        says."""
        return (
            (self._folded and patch in _FOLDED_PATHS)
            or (self._lean and patch in _LEAN_PATHS)
            or workflow.patched(patch)
        )

    def _upsert(self, updates: list[SearchAttributeUpdate[Any]], *, lazily: bool = False) -> None:
        """Set the run's search attributes: at once, or (``lazily``, in a run that folds them)
        with what it sets next or before its next step that may take time (:meth:`_step`)."""
        if not self._folded:
            workflow.upsert_search_attributes(updates)
            return
        for update in updates:
            self._unset[update.key.name] = update
        if not lazily:
            self._set_now()

    def _set_now(self) -> None:
        """Upsert the search attributes set lazily, in one command."""
        if self._unset:
            updates, self._unset = list(self._unset.values()), {}
            workflow.upsert_search_attributes(updates)

    def _hub(
        self,
        method: Callable[[Any, A], Awaitable[R]],
        arg: A,
        *,
        retry_policy: RetryPolicy | None = HUB_RETRY,
    ) -> Awaitable[R]:
        if self._unmarked:  # a call to the hub takes time: what the run set lazily first
            self._set_now()
        return hub_call(method, arg, remote=self._remote, retry_policy=retry_policy)

    def _checked(self, response: Response, raw: RawValue) -> dict[str, Any]:
        found = self._waiting.get(response.step)
        if found is None:
            raise Failure.NOT_WAITING.error(
                f"the flow is not waiting at step {response.step!r}", non_retryable=False
            )
        writers = channel_parties(raw.payload)
        executor = self._start.executor
        if writers is not None and (executor not in writers or not set(writers) <= {executor, HUB}):
            # Like a start: only the executor (its SDK, its API, its operators) or the platform
            # (the citizen's portal) answers the executor's flow. Another agency holding keys of
            # its own could write a payload the executor reads, on their pair's channel.
            raise Failure.INVALID_RESPONSE.error(
                "an answer written by another party than the executor or the platform",
                non_retryable=False,
            )
        awaited = found[0].wait.by
        if awaited == "citizen" and response.by != "citizen":
            raise Failure.INVALID_RESPONSE.error(
                f"step {response.step} awaits the citizen's own answer", non_retryable=False
            )
        if awaited == "agency" and response.by == "citizen":
            raise Failure.INVALID_RESPONSE.error(
                f"step {response.step} awaits the agency's answer", non_retryable=False
            )
        hub = self._run.hub_signing  # None only in runs resolved before attestations
        info = workflow.info()
        if (
            response.by == "citizen"
            and hub is not None
            and not any(
                # the portal's word for this run's person; or, given before answers named their
                # person, for this run (a run replayed takes what it took)
                is_citizens(
                    hub,
                    response.attestation,
                    info.workflow_id,
                    info.run_id,
                    response.step,
                    response.payload,
                    person,
                )
                for person in (self._start.subject, None)
            )
        ):
            raise Failure.INVALID_RESPONSE.error(
                "an answer as the citizen comes only from the citizen's own portal session",
                non_retryable=False,
            )
        try:
            return validate_values(
                found[0].wait.fields, response.payload, None, "a field of this response"
            )
        except InputError as err:
            raise Failure.INVALID_RESPONSE.error(
                f"invalid response: {err}", non_retryable=False
            ) from None

    @workflow.run
    async def run(self, args: Sequence[RawValue]) -> FlowResult:
        try:
            return await self._flow(args)
        except BaseException:  # failed, cancelled or continued as new: what it set lazily first
            self._set_now()
            raise

    async def _flow(self, args: Sequence[RawValue]) -> FlowResult:
        if not args or args[0].payload.metadata.get("encoding") == UNENCRYPTED:
            raise Failure.MALFORMED_START.error(
                "a start this worker does not read: written in clear, or by another party than"
                " the executor or the platform"
            )
        start = workflow.payload_converter().from_payload(args[0].payload, StartFlow)
        if start.signed_resume is not None:  # a continuation: its state, as the hub signed it
            try:
                start = start.model_copy(update={"resume": start.signed_resume.resume()})
            except ValidationError:
                raise Failure.MALFORMED_START.error(
                    "the state this flow continues from is of a form this worker does not read"
                ) from None
        if start.bpf != workflow.info().workflow_type:
            raise Failure.MALFORMED_START.error("workflow type and BPF id differ")
        writers = channel_parties(args[0].payload)
        if writers is not None and (
            start.executor not in writers or not set(writers) <= {start.executor, HUB}
        ):
            # Only the executor itself (its SDK, its API, its own flows' calls) or the platform
            # (portal, notifications, schedules) writes a start to the executor's flows.
            raise Failure.MALFORMED_START.error(
                "a start written by another party than the executor or the platform"
            )
        self._start = start
        self._remote = calls_hub_remotely(args[0].payload)
        if start.paths is not None and start.paths > NEWEST_PATHS:
            # Not a failure of the run: its workflow task fails until a worker of the release
            # that wrote the start takes it.
            raise RuntimeError(f"a start asking for paths {start.paths}, newer than this worker's")
        # A start asking for the unmarked paths that a worker from before ran (it reads no
        # ``paths``) took LEAN_FOLDED's (or LEAN's), recording its marker: its replay finds that
        # marker. It is asked for only while replaying, so a first execution records none. (A
        # worker from before LEAN recorded a marker per path: not told apart here.)
        self._unmarked = (
            start.paths is not None
            and start.paths >= _UNMARKED_PATHS
            and not (
                workflow.unsafe.is_replaying()
                and (workflow.patched(LEAN_FOLDED) or workflow.patched(LEAN))
            )
        )
        if self._unmarked:  # every path of LEAN_FOLDED, without its marker
            self._folded = self._lean = True
        else:
            # Asked first, once: a run recorded before it says no here, and then asks each path
            # on its own at the same points as it did (an answer asked later would be yes in a run
            # that continues on this worker, and add the marker midway).
            self._folded = workflow.patched(LEAN_FOLDED)
            self._lean = self._folded or workflow.patched(LEAN)
        ahead = self._patched(BROKERED_AHEAD)
        if start.resume is not None:  # a continuation: the definition is already pinned
            self._run = start.resume.run
            if self._patched(SIGNED_RESUME):  # only a state the hub signed is taken up
                try:
                    ticket = await self._hub(
                        HubActivities.check_resume,
                        ResumeProof(
                            resume=start.resume,
                            signature=start.resume_signature,
                            signed=start.signed_resume,
                        ),
                    )
                except ActivityError as err:
                    self._set_status("invalid")
                    raise step_failure(err, "the flow could not continue") from None
                if ticket is not None:  # this run's own (a hub from before answers none)
                    self._run = self._run.model_copy(update={"ticket": ticket})
        else:
            broker_first = self._patched(FIRST_WITH_START)
            try:
                self._run = await self._resolve(
                    start,
                    ResolveRequest(
                        bpf=start.bpf,
                        version=start.version,
                        executor=start.executor,
                        subject=start.subject,
                        inputs=start.inputs,
                        parent=start.parent,
                        trigger=start.trigger,
                        attestation=start.attestation,
                        hold=start.hold,
                        called_by=caller.workflow_id
                        if (caller := workflow.info().parent)
                        else None,
                        caller_ticket=start.caller_ticket,
                        broker_first=broker_first,
                        broker_ahead=ahead,
                        reads_signed_tickets=True,
                    ),
                )
            except ActivityError as err:
                self._set_status("invalid")
                raise step_failure(err, "the flow could not start") from None
        # Decided by the hub alone (a hub in operation never says so), pinned in the history.
        self._kit_clock = self._run.kit_clock and self._patched(KIT_CLOCK)
        marked = workflow.info().typed_search_attributes.get(sa.CONFORMANCE) == sa.KIT
        if marked != self._kit_clock and self._patched(KIT_MARK):
            self._upsert(
                [
                    sa.CONFORMANCE.value_set(sa.KIT)
                    if self._kit_clock
                    else sa.CONFORMANCE.value_unset()
                ]
            )
        pin = self._run.pin
        # One copy of the definition per content in this worker, however many runs it caches.
        self._run = self._run.model_copy(
            update={"definition": shared_definition(pin.content_hash, self._run.definition)}
        )
        self._ahead = (
            ahead and self._run.brokers_ahead and self._run.brokers_groups and self._batched()
        )
        if self._ahead:
            self._following = following(self._run.definition.steps, BROKER_GROUP_LIMIT - 1)
        if start.resume is None:
            self._first = self._run.first
            self._held = {f.step: f.brokered for f in self._run.ahead}
            if self._folded:  # the pin in the same upsert as the rest: no memo of its own
                self._status = "running"
                self._upsert(
                    [
                        sa.BPF_VERSION.value_set(pin.version),
                        sa.CONTENT_HASH.value_set(pin.content_hash),
                        sa.STATUS.value_set("running"),
                    ],
                    lazily=True,
                )
            elif self._batched():
                workflow.upsert_memo({"definition": pin.model_dump()})
                self._status = "running"
                self._upsert(
                    [sa.BPF_VERSION.value_set(pin.version), sa.STATUS.value_set("running")],
                    lazily=True,
                )
            else:
                workflow.upsert_search_attributes([sa.BPF_VERSION.value_set(pin.version)])
                workflow.upsert_memo({"definition": pin.model_dump()})
                self._set_status("running")
        self._program = compiled_for(pin.content_hash, self._run.definition, self._run.info_schemas)
        self._bindings: dict[str, Any] = {
            "inputs": self._program.message(self._program.inputs_type, self._run.inputs),
            "subject": start.subject,
            "executor": start.executor,
            "trigger": start.trigger,
        }
        first = 0
        if start.resume is not None:
            first = start.resume.next_step
            self._linkages = list(start.resume.linkages)
            for step_id, output in start.resume.outputs.items():
                self._bind(step_id, output)
        top = list(self._run.definition.steps)
        try:
            return await self._top_steps(start, pin, first, top)
        finally:
            if self._first is not None and self._first.brokered.allowed:
                self._report(self._first.step, "failed")  # the run ended before it was asked
            await self._flush_reports()

    async def _resolve(self, start: StartFlow, req: ResolveRequest) -> ResolvedRun:
        """The hub's resolution of this run: over the hub's endpoint, from a local activity
        (a run on its executor's queue whose start asked for ``RESOLVED_DIRECTLY_PATHS`` and
        that no other flow called), else ``hub.resolve`` on the hub's queue. An endpoint out of
        reach, too slow, or answering with anything but the hub's final word is asked a few
        times (``ENDPOINT_RETRY``, each try within the run's workflow task, which the SDK keeps
        alive with a few events every few seconds), then on the hub's queue: the same request,
        so the hub answers it with the one ticket it keeps for the run."""
        if (
            self._remote
            and start.paths is not None
            and start.paths >= RESOLVED_DIRECTLY_PATHS
            and req.parent is None
            and req.called_by is None
        ):
            info = workflow.info()
            self._asked_endpoint = True
            try:
                resolved: ResolvedRun = await workflow.execute_local_activity(
                    DIRECT_RESOLVE,
                    DirectResolve(workflow_id=info.workflow_id, run_id=info.run_id, request=req),
                    result_type=ResolvedRun,
                    # each try bounds its own time (ENDPOINT_TIMEOUT): renkei.contracts.retries
                    schedule_to_close_timeout=ENDPOINT_DEADLINE,
                    retry_policy=ENDPOINT_RETRY,
                )
                return resolved
            except (ActivityError, ApplicationError, StepTimeout) as err:
                # (the SDK raises a local activity's cause itself: workflows.outcomes)
                cause = err.cause if isinstance(err, ActivityError) else err
                if (
                    isinstance(cause, ApplicationError)
                    and cause.non_retryable
                    and cause.type != Failure.HUB_UNREACHED.value
                ):
                    # The hub's refusal (or the run's own check): final, as on the hub's queue.
                    self._set_status("invalid")
                    raise local_failure(cause, "the flow could not start") from None
                why = cause.message if isinstance(cause, ApplicationError) else type(cause).__name__
                workflow.logger.warning(
                    "the hub's endpoint did not answer (%s): this run asks on the hub's queue", why
                )
        return await self._hub(HubActivities.resolve, req)

    def _not_asked(self) -> None:
        """The linkages permitted ahead that this run never asked its providers for (an earlier
        step failed or was denied, the flow was rejected, cancelled or continues as new): told
        to the hub as ``not_asked``, with the flow's other outcomes (the run ends or continues
        as new next: nothing is held past it)."""
        held, self._held = self._held, {}
        for step_id, brokered in held.items():
            if brokered.allowed:
                self._report(step_id, "not_asked")

    async def _flush_reports(self) -> None:
        askers, self._askers = [t for t in self._askers if not t.done()], []
        if askers:  # group calls still out (their lanes were stopped)
            await workflow.wait(askers)
        self._not_asked()
        self._tell_untold()
        reports, self._reports = self._reports, []
        if reports:
            await asyncio.gather(*reports)

    def _batched(self) -> bool:
        return self._run.takes_outcomes and self._patched(BATCHED_OUTCOMES)

    def _collected(self) -> bool:
        """Whether the hub collects this run's ``provided`` outcomes itself."""
        return self._run.collects_receipts and self._patched(COLLECTED_RECEIPTS)

    def _report(self, step: str, outcome: str, receipt: AnswerReceipt | None = None) -> None:
        if self._batched():
            self._untold.append(
                AttemptOutcomeReport.model_validate(
                    {"step": step, "outcome": outcome, "receipt": receipt}
                )
            )
            if self._long and not self._telling:  # another lane waits on something long
                self._telling = True
                self._reports.append(asyncio.create_task(self._tell_soon()))
        else:
            self._reports.append(asyncio.create_task(self._outcome(step, outcome, receipt)))

    async def _tell_soon(self) -> None:
        """Tell the hub what is held back once the lanes ending at this same moment have
        reported too (a bare yield, no timer): one call for all of them."""
        await asyncio.sleep(0)
        self._telling = False
        untold, self._untold = self._untold, []
        if untold:
            await self._outcomes(untold)

    def _tell_untold(self) -> None:
        """Tell the hub every outcome held back, in one call beside the flow."""
        if self._untold:
            untold, self._untold = self._untold, []
            self._reports.append(asyncio.create_task(self._outcomes(untold)))

    @contextlib.contextmanager
    def _going_long(self) -> Iterator[None]:
        """Around what may take long: no outcome is held back meanwhile."""
        self._tell_untold()
        self._long += 1
        try:
            yield
        finally:
            self._long -= 1

    async def _top_steps(
        self, start: StartFlow, pin: Any, first: int, top: list[AnyStep]
    ) -> FlowResult:
        try:
            for index in range(first, len(top)):
                if (
                    index > first
                    and self._history_is_long()
                    and not self._consent_pending(top[index:])
                ):
                    self._set_now()
                    await workflow.wait_condition(workflow.all_handlers_finished)
                    resume = Resume(
                        run=self._run,
                        next_step=index,
                        outputs=self._outputs,
                        linkages=self._linkages,
                        generation=(start.resume.generation + 1) if start.resume else 1,
                    )
                    signature = signed = None
                    if self._patched(SIGNED_RESUME):
                        # a hub from before signs only the first form; asked once it says so
                        if self._run.signs_resume_text and workflow.patched(RESUME_TEXT):
                            signed = await self._hub(HubActivities.sign_resume_text, resume)
                        else:
                            signature = await self._hub(HubActivities.sign_resume, resume)
                    await self._flush_reports()
                    carried = (
                        {
                            "resume": None,
                            "resume_signature": None,
                            "signed_resume": signed,
                            # a worker from before refuses it, rather than start afresh
                            "paths": RESUMED_TEXT_PATHS,
                        }
                        if signed is not None
                        else {
                            "resume": resume,
                            "resume_signature": signature,
                            "signed_resume": None,
                        }
                    )
                    workflow.continue_as_new(start.model_copy(update=carried))
                await self._step(top[index])
            result = {name: self._eval(("result", name)) for name in self._run.definition.result}
        except _Rejected as rejected:
            self._set_status("rejected")
            return FlowResult(
                outcome="rejected", reason=rejected.reason, pin=pin, linkages=self._linkages
            )
        except (ApplicationError, DeterministicFailure) as err:
            self._set_status("denied" if Failure.LINKAGE_DENIED.caused(err) else "failed")
            raise
        except ActivityError as err:
            self._set_status("failed")
            raise step_failure(err) from None
        self._set_status("completed")
        return FlowResult(outcome="completed", result=result, pin=pin, linkages=self._linkages)

    def _set_status(self, status: str) -> None:
        self._status = status
        self._upsert([sa.STATUS.value_set(status)])

    def _history_is_long(self) -> bool:
        info = workflow.info()
        return (
            info.is_continue_as_new_suggested()
            or info.get_current_history_length() > self._run.history_limit
        )

    def _consent_pending(self, rest: list[AnyStep]) -> bool:
        """Whether an act still ahead names a consent the citizen gave in this run: the portal
        attested it for this run only, so the flow does not continue as new before the act
        (always false for a definition without acts: its runs continue as before)."""
        return any(
            isinstance(s, ActStep) and s.act.consent in self._citizen_answers for s in walk(rest)
        )

    def _scaled(self, span: timedelta) -> timedelta:
        return span * self._run.time_scale

    def _now(self) -> datetime:
        """The flow's time: in a kit run, the kit's clock once the kit has moved it."""
        now = workflow.now()
        if self._kit_clock and self._kit_now is not None and self._kit_now > now:
            return self._kit_now
        return now

    async def _until(self, done: Callable[[], bool], due: datetime, key: str) -> None:
        """Wait until ``done``; past ``due``, raise ``TimeoutError``. Only in a kit run: the
        time is the kit's, and ``due`` passes when the kit moves its clock there."""
        self._kit_due[key] = due
        try:
            await workflow.wait_condition(
                lambda: done() or (self._kit_now is not None and self._kit_now >= due)
            )
        finally:
            del self._kit_due[key]
        if not done():
            raise TimeoutError

    # -- expressions --

    def _eval(self, key: tuple[str | int, ...]) -> Any:
        data = dict(self._bindings)
        data["now"] = self._now()
        data["steps"] = dict(self._messages)
        data.update(self._messages)
        try:
            return self._program.evaluate(key, data)
        except ExpressionError as err:
            raise Failure.EXPRESSION_FAILED.error(f"expression {err}") from None

    def _text(self, step_id: str, field: str, value: str | None) -> str | None:
        if embedded(value) is None:
            return value
        out = self._eval((step_id, field))
        if not isinstance(out, str):
            raise ApplicationError(f"{step_id}.{field} is not text", non_retryable=True)
        return out

    def _carried(self, step_id: str, field: str, value: str, limit: int = NAME_LIMIT) -> str:
        """``value``, worked out for the step's request: one a request cannot carry (past its
        bound, or with a control character) fails the step, rather than the flow's task again
        and again."""
        if not carried(value, limit):
            raise ApplicationError(
                f"{step_id}.{field} is too long for a request, or holds a control character"
                f" (at most {limit} characters)",
                non_retryable=True,
            )
        return value

    def _bind(self, step_id: str, output: dict[str, Any]) -> None:
        self._outputs[step_id] = output
        self._messages[step_id] = self._program.message(self._program.step_types[step_id], output)

    # -- steps --

    async def _steps(self, steps: Sequence[AnyStep]) -> None:
        for step in steps:
            await self._step(step)

    async def _lane(self, steps: Sequence[AnyStep]) -> None:
        """A parallel step's lane; what it set lazily as it ended (a wait answered as its last
        step) is set as it ends, not left showing while the other lanes go on."""
        await self._steps(steps)
        self._set_now()

    def _past_linkage(self, step: AnyStep) -> bool:
        """Whether what the run set lazily waits past this step: a query over the direct
        channel, in a run on the unmarked paths (its hub call, if any, sets them first)."""
        return self._unmarked and self._run.links_directly and isinstance(step, QueryStep)

    async def _step(self, step: AnyStep) -> None:
        if not isinstance(step, _INSTANT) and not self._past_linkage(step):
            self._set_now()  # it may take time: the run's attributes first
        if isinstance(step, QueryStep):
            await self._query(step)
        elif isinstance(step, SetStep):
            self._bind(step.id, {n: self._eval((step.id, "set", n)) for n in step.set})
        elif isinstance(step, FailStep):
            raise _Rejected(self._text(step.id, "reason", step.fail.reason) or "rejected")
        elif isinstance(step, WaitStep):
            with self._going_long():
                await self._wait(step)
        elif isinstance(step, SleepStep):
            with self._going_long():
                await self._sleep(step)
        elif isinstance(step, CallStep):
            with self._going_long():
                await self._call(step)
        elif isinstance(step, ActStep):
            await self._act(step)
        elif isinstance(step, ParallelStep):
            # All lanes must succeed; the first failure cancels the others and is the step's.
            try:
                async with asyncio.TaskGroup() as group:
                    for lane in step.parallel:
                        group.create_task(self._lane(lane))
            except BaseExceptionGroup as group_error:
                first = first_failure(group_error)
                raise first from first.__cause__  # keep the failure's own cause
        elif isinstance(step, BranchStep):
            for index, arm in enumerate(step.branch):
                if isinstance(arm, WhenArm):
                    if self._eval((step.id, "when", index)) is True:
                        await self._steps(arm.steps)
                        return
                else:
                    await self._steps(arm.otherwise)
                    return

    async def _wait(self, step: WaitStep) -> None:
        w = step.wait
        now = self._now()
        deadline = now + self._scaled(w.timeout)
        remind_at = deadline - self._scaled(w.remind) if w.remind is not None else None
        info = Waiting(
            step=step.id,
            for_=w.for_,
            deadline=deadline,
            remind_at=remind_at,
            fields={k: v.model_dump(mode="json", exclude_none=True) for k, v in w.fields.items()},
            preview={s: self._outputs[s] for s in w.show if s in self._outputs},
        )
        self._waiting[step.id] = (step, info)
        self._upsert(
            [
                sa.STATUS.value_set("waiting"),
                sa.WAITING_FOR.value_set(f"{step.id}:{w.for_}"),
                sa.DEADLINE.value_set(deadline),
            ]
        )
        self._status = "waiting"

        def answered() -> bool:
            return step.id in self._responses

        try:
            if remind_at is not None:
                try:
                    if self._kit_clock:
                        await self._until(answered, remind_at, f"{step.id}:remind")
                    else:
                        await workflow.wait_condition(answered, timeout=remind_at - now)
                except TimeoutError:
                    await self._hub(
                        HubActivities.remind,
                        ReminderRequest(
                            workflow_id=workflow.info().workflow_id,
                            step=step.id,
                            executor=self._start.executor,
                            subject=self._start.subject,
                            deadline=deadline,
                        ),
                    )
            if not answered() and self._kit_clock:
                await self._until(answered, deadline, step.id)
            elif not answered():
                await workflow.wait_condition(answered, timeout=deadline - workflow.now())
            payload = {**self._responses[step.id], "timed_out": False}
        except TimeoutError:
            if w.on_timeout == "fail":
                raise _Rejected(w.reason or f"no {w.for_} by the deadline ({step.id})") from None
            payload = {"timed_out": True}
        finally:
            del self._waiting[step.id]
            self._upsert(
                [
                    sa.STATUS.value_set("running"),
                    sa.WAITING_FOR.value_unset(),
                    sa.DEADLINE.value_unset(),
                ],
                lazily=True,
            )
            self._status = "running"
        self._bind(step.id, payload)

    async def _sleep(self, step: SleepStep) -> None:
        if step.sleep.for_ is not None:
            span = self._scaled(step.sleep.for_)
        else:
            until = self._eval((step.id, "until"))
            target = datetime.fromisoformat(str(until))
            span = self._scaled(max(target - self._now(), timedelta(0)))
        self._upsert(
            [
                sa.STATUS.value_set("sleeping"),
                sa.WAITING_FOR.value_set(f"{step.id}:timer"),
                sa.DEADLINE.value_set(self._now() + span),
            ]
        )
        self._status = "sleeping"
        if self._kit_clock:
            with contextlib.suppress(TimeoutError):
                await self._until(lambda: False, self._now() + span, step.id)
        else:
            await workflow.sleep(span)
        self._upsert(
            [
                sa.STATUS.value_set("running"),
                sa.WAITING_FOR.value_unset(),
                sa.DEADLINE.value_unset(),
            ],
            lazily=True,
        )
        self._status = "running"

    async def _call(self, step: CallStep) -> None:
        c = step.call
        inputs = {name: self._eval((step.id, "inputs", name)) for name in c.inputs}
        parent = workflow.info().workflow_id
        case_ref = f"{parent.rsplit('/', 1)[-1]}.{step.id}"[:64]
        child = StartFlow(
            bpf=c.bpf,
            version=c.version,
            executor=self._start.executor,
            subject=self._start.subject,
            inputs=inputs,
            trigger=self._start.trigger,
            case_ref=case_ref,
            hold=self._start.hold,
            attestation=self._start.attestation,
            paths=PATHS,
            # The child runs for this flow's purpose (for the top-level flow's, if this is itself
            # a child): the hub checks the child's task serves it, and the records name it.
            parent=self._start.parent
            or ParentFlow(
                workflow_id=workflow.info().workflow_id,
                bpf=self._run.pin.bpf,
                task=self._run.definition.task,
            ),
            caller_ticket=self._run.ticket,
        )
        try:
            result: FlowResult = await workflow.execute_child_workflow(
                c.bpf,
                child,
                id=workflow_id(c.bpf, self._start.executor, case_ref),
                task_queue=workflow.info().task_queue,
                result_type=FlowResult,
                search_attributes=TypedSearchAttributes(
                    [
                        SearchAttributePair(sa.BPF, c.bpf),
                        SearchAttributePair(sa.EXECUTOR, self._start.executor),
                        SearchAttributePair(sa.TRIGGER, self._start.trigger),
                        SearchAttributePair(sa.STATUS, "starting"),
                    ]
                    + ([SearchAttributePair(sa.CONFORMANCE, sa.KIT)] if self._kit_clock else [])
                ),
            )
        except ChildWorkflowError as err:
            cause = err.cause
            message = cause.message if isinstance(cause, ApplicationError) else err.message
            raise Failure.CALL_FAILED.error(f"step {step.id}: {c.bpf} failed: {message}") from None
        self._linkages.extend(
            LinkageOutcome(
                step=f"{step.id}/{x.step}", provider=x.provider, info=x.info, outcome=x.outcome
            )
            for x in result.linkages
        )
        if result.outcome == "rejected":
            raise _Rejected(f"{c.bpf}: {result.reason or 'rejected'}")
        self._bind(step.id, result.result)

    async def _translate(self, from_org: str, to_org: str, codes: list[str]) -> list[str]:
        if from_org == to_org or not codes:
            return codes
        try:
            translated: list[str] = await self._hub(
                HubActivities.translate,
                TranslateRequest(from_org=from_org, to_org=to_org, codes=codes),
            )
        except ActivityError as err:
            raise step_failure(err, "code translation failed") from None
        return translated

    async def _broker(self, req: BrokerRequest, ahead: Sequence[BrokerRequest] = ()) -> Brokered:
        """Ask the hub for the linkage: it decides, records, and hands out the provider's code.
        Linkages asked for at the same moment (parallel lanes) go in one call, and so do
        ``ahead``, the linkages that certainly follow it (their answers are held for their
        steps)."""
        if not (self._run.brokers_groups and self._patched(GROUP_BROKERING)):
            return await self._broker_alone(req)
        answer: asyncio.Future[Brokered | None] = asyncio.get_running_loop().create_future()
        idle = not self._asking
        self._asking.append((req, answer))
        self._asking.extend((a, None) for a in ahead)
        if idle:
            self._askers.append(asyncio.create_task(self._ask_together()))
        try:
            brokered = await answer
        except ActivityError as err:
            raise step_failure(err, f"step {req.step}: linkage not brokered") from None
        except asyncio.CancelledError:  # its lane stopped (another failed) once it was granted
            if answer.done() and not answer.cancelled() and answer.exception() is None:
                granted = answer.result()
                if granted is not None and granted.allowed:
                    self._report(req.step, "cancelled")
            raise
        if brokered is None:  # refused with an error in the group: asked alone, it meets it
            return await self._broker_alone(req)
        return brokered

    async def _ask_together(self) -> None:
        """One call to the hub for every linkage asked for at this moment (``hub.broker`` for
        one, ``hub.broker-group`` for several), with the outcomes held back."""
        await asyncio.sleep(0)  # a bare yield (no timer): every lane starting now asks first
        asking = self._asking[:BROKER_GROUP_LIMIT]
        self._asking = self._asking[BROKER_GROUP_LIMIT:]
        if self._asking:  # more lanes than one call takes: the rest in calls of their own
            self._askers.append(asyncio.create_task(self._ask_together()))
        asked = [req for req, _ in asking]
        untold, self._untold = self._untold, []
        if untold:
            asked[0] = asked[0].model_copy(update={"outcomes": untold})
        answers: list[Brokered | None]
        try:
            if len(asked) == 1:
                answers = [await self._hub(HubActivities.broker, asked[0])]
            else:
                answers = await self._hub(HubActivities.broker_group, asked)
        except ActivityError as err:
            self._untold[:0] = untold  # told again later (the hub takes an outcome once)
            for _, answer in asking:
                if answer is not None and not answer.done():
                    answer.set_exception(err)
            return
        for (req, answer), brokered in zip(asking, answers, strict=True):
            if answer is None:  # asked ahead: held for its step (none: asked for there)
                if brokered is not None:
                    self._held[req.step] = brokered
            elif not answer.done():
                answer.set_result(brokered)
            elif brokered is not None and brokered.allowed:  # its lane was stopped meanwhile
                self._report(req.step, "cancelled")

    async def _broker_alone(self, req: BrokerRequest) -> Brokered:
        """Ask the hub for one linkage, with the outcomes held back (the hub appends them
        first)."""
        untold, self._untold = self._untold, []
        if untold:
            req = req.model_copy(update={"outcomes": untold})
        try:
            brokered: Brokered = await self._hub(
                HubActivities.broker,
                req,
            )
        except ActivityError as err:
            self._untold[:0] = untold  # told again later (the hub takes an outcome once)
            raise step_failure(err, f"step {req.step}: linkage not brokered") from None
        return brokered

    async def _outcomes(self, reports: list[AttemptOutcomeReport]) -> None:
        """Tell the hub several outcomes in one call; like :meth:`_outcome`, never fails the
        flow."""
        try:
            await self._hub(HubActivities.outcomes, reports)
        except ActivityError:
            workflow.logger.warning("%d outcomes not recorded", len(reports))

    async def _outcome(self, step: str, outcome: str, receipt: AnswerReceipt | None = None) -> None:
        """Tell the hub what became of this flow's attempt ``step`` (it appends it to its
        outcomes). Never fails the flow: an outcome the hub does not take stays unknown."""
        try:
            await self._hub(
                HubActivities.outcome,
                AttemptOutcomeReport.model_validate(
                    {"step": step, "outcome": outcome, "receipt": receipt}
                ),
            )
        except ActivityError:
            workflow.logger.warning("step %s: outcome not recorded", step)

    async def _query(self, step: QueryStep) -> None:
        q = step.query
        provider = self._carried(
            step.id, "provider", self._text(step.id, "provider", q.provider) or ""
        )
        about = self._text(step.id, "about", q.about)
        if about is not None:
            about = self._carried(step.id, "about", about, SUBJECT_LIMIT)
        asked = self._asked(step, provider, about or self._start.subject)
        first, self._first = self._first, None
        held = self._held.pop(step.id, None)
        if first is not None and first.step == step.id:
            brokered = first.brokered  # asked with the start: the same request, answered then
        elif held is not None and self._covers(held, asked):
            brokered = held  # brokered ahead: the same request, decided earlier
        else:
            try:
                brokered = await self._broker(asked, self._asked_ahead(step))
            except BaseException:
                if held is not None:  # its provider is never asked: told as not asked
                    self._held[step.id] = held
                raise
            if held is not None and held.allowed and not brokered.allowed:
                # Permitted ahead, denied now: the hub's record (written once, as it was first
                # decided) says allowed, and its outcome says what became of it.
                self._report(step.id, "denied")
        if not brokered.allowed:
            self._linkages.append(
                LinkageOutcome(step=step.id, provider=provider, info=q.info, outcome="denied")
            )
            raise Failure.LINKAGE_DENIED.error(
                f"step {step.id}: linkage denied by the whitelist: {brokered.reason}"
            )
        common = asked.model_dump(
            include=set(LinkageRequest.model_fields),
            exclude={"subject", "permit", "sealed_subject"},
        )
        if self._patched(PERMITS):
            # The provider receives the hub's permit and its own code sealed to it: the executor
            # never sees the provider's code, and no one else can use the permit.
            request = LinkageRequest(
                **common,
                subject="",
                permit=brokered.permit,
                sealed_subject=brokered.sealed_subject,
            )
        else:  # a run from before permits, replaying: the hub handed out the code in clear
            request = LinkageRequest(**common, subject=brokered.subject or "")
        report = self._patched(ATTEMPT_OUTCOMES)
        await self._linkage(
            step.id,
            provider,
            q.info,
            query_activity(q.info),
            request,
            attempt_timeout=q.timeout,
            # No answer once the permit has expired (the gate would refuse it then anyway), with
            # one attempt's time to spare so the step's own retries end it first.
            budget=timedelta(seconds=asked.budget_seconds) + q.timeout if report else None,
            retry=linkage_retry(q.retry),
            report=report,
            # Only the provider's own key makes an answer this flow accepts: a worker without it
            # (a rogue on the provider's queue) cannot feed the flow made-up data.
            signed=lambda: (
                request.permit is not None
                and brokered.provider_key is not None
                and self._patched(SIGNED_ANSWERS)
            ),
            provider_key=brokered.provider_key,
            what="answer",
        )

    def _covers(self, held: Brokered, asked: BrokerRequest) -> bool:
        """Whether an answer brokered ahead is used at its step: a denial always (it fails the
        step as one asked for there would); a permit only while it lasts the step's whole
        budget (else the step is brokered again, as if never asked ahead). In a run the hub
        resolved over its endpoint, the hub may have decided within the workflow task the step
        is reached in, whose time is the task's start, before the decision: the step then
        counts from a moment after the permit was issued (it always is, since the permit was
        issued before the flow had it), so a permit cut to the longest a permit lives is not
        taken for one that lasts a step's budget of that length."""
        if not held.allowed:
            return True
        if held.permit is None:
            return False
        permit = held.permit.permit
        budget = timedelta(seconds=asked.budget_seconds)
        if self._asked_endpoint:  # (stricter than needed after a fallback to the queue)
            return permit.expires_at > max(workflow.now(), permit.issued_at) + budget
        return permit.expires_at >= workflow.now() + budget

    def _asked(
        self, step: QueryStep, provider: str, subject: str, after: Sequence[QueryStep] = ()
    ) -> BrokerRequest:
        """What this run asks the hub for its query ``step`` (at the step, or ahead of it, after
        the steps ``after``)."""
        wf = workflow.info()
        return linkage_asked(
            step,
            provider=provider,
            subject=subject,
            requester=self._start.executor,
            task=self._run.definition.task,
            trigger=self._start.trigger,
            pin=self._run.pin,
            workflow_id=wf.workflow_id,
            run_id=wf.run_id,
            hold=self._start.hold,
            parent=self._start.parent,
            ticket=self._run.ticket,
            after=after,
        )

    def _asked_ahead(self, step: QueryStep) -> list[BrokerRequest]:
        """The linkages that certainly follow ``step`` in its sequence and are not held yet:
        asked for in the same call, each with a permit lasting the steps before it."""
        if not self._ahead:
            return []
        chain: list[QueryStep] = [step]
        out: list[BrokerRequest] = []
        for s in self._following.get(step.id, []):
            if s.id not in self._held:
                out.append(self._asked(s, s.query.provider, self._start.subject, after=chain))
            chain = [*chain, s]
        return out

    async def _act(self, step: ActStep) -> None:
        """Ask a partner org to carry out an action and take its signed receipt. Brokered like a
        query (the hub decides, records and permits; the partner's gate checks and records
        again), with the citizen's attested consent where the step names it. The partner gets
        only what ``send`` gives (and, a public partner, its own code for the subject sealed to
        it; a private one none)."""
        a = step.act
        partner = self._carried(step.id, "partner", self._text(step.id, "partner", a.partner) or "")
        send = {name: self._eval((step.id, "send", name)) for name in a.send}
        consent = None
        if a.consent is not None:
            said = self._citizen_answers.get(a.consent)
            if said is not None:
                consent = ConsentProof(
                    step=said.step, payload=said.payload, attestation=said.attestation
                )
        pin = self._run.pin
        wf = workflow.info()
        asked = BrokerRequest(
            trigger=self._start.trigger,
            requester=self._start.executor,
            provider=partner,
            task=self._run.definition.task,
            info=a.action,
            subject=self._start.subject,
            bpf=pin.bpf,
            bpf_version=pin.version,
            content_hash=pin.content_hash,
            step=step.id,
            workflow_id=wf.workflow_id,
            run_id=wf.run_id,
            hold=self._start.hold,
            parent=self._start.parent,
            budget_seconds=budget_seconds(
                a.timeout, a.retry.max_attempts, a.retry.maximum_interval
            ),
            send_fields=sorted(send),
            consent=consent,
            ticket=self._run.ticket,
        )
        brokered = await self._broker(asked)
        if not brokered.allowed or brokered.permit is None:
            self._ended(step.id, partner, a.action, "denied")
            raise Failure.LINKAGE_DENIED.error(
                f"step {step.id}: act denied by the whitelist: {brokered.reason}"
            )
        request = LinkageRequest(
            **asked.model_dump(
                include=set(LinkageRequest.model_fields),
                exclude={"subject", "permit", "sealed_subject", "send"},
            ),
            subject="",
            permit=brokered.permit,
            sealed_subject=brokered.sealed_subject,
            send=send,
        )
        await self._linkage(
            step.id,
            partner,
            a.action,
            act_activity(a.action),
            request,
            attempt_timeout=a.timeout,
            budget=timedelta(seconds=asked.budget_seconds) + a.timeout,
            retry=linkage_retry(a.retry),
            report=True,
            signed=lambda: True,  # only the partner's own key makes a receipt this flow accepts
            provider_key=brokered.provider_key,
            what="receipt",
        )

    async def _linkage(
        self,
        step_id: str,
        provider: str,
        info: str,
        activity_type: str,
        request: LinkageRequest,
        *,
        attempt_timeout: timedelta,
        budget: timedelta | None,
        retry: RetryPolicy,
        report: bool,
        signed: Callable[[], bool],
        provider_key: str | None,
        what: Literal["answer", "receipt"],
    ) -> None:
        """Ask ``provider`` for a permitted linkage (a query's answer, an act's receipt) and take
        what it gives: raw, and read only if the provider (or the executor) wrote it (another
        party's worker on the provider's queue answers on a pair the codec does not open); only
        if signed with the provider's own key for this permit (when ``signed()`` says the run
        checks it); only if it fits the item's schema. Each end is told to the hub (when
        ``report``), but ``provided``: the hub collects that from the provider's own receipt (a
        run from before tells it with the receipt, since the hub takes it on nothing else).
        Binds the step's output."""
        task = workflow.info().get_current_history_length()
        try:
            with self._going_long():
                raw: RawValue = (
                    await workflow.execute_local_activity(
                        DIRECT_LINKAGE,
                        # The attempt is this step of this run: the hub's permit names it, the
                        # provider checks it (activities.direct).
                        DirectLinkage(
                            workflow_id=workflow.info().workflow_id,
                            run_id=workflow.info().run_id,
                            step=step_id,
                            activity_type=activity_type,
                            timeout_seconds=attempt_timeout.total_seconds(),
                            request=request,
                        ),
                        result_type=RawValue,
                        activity_id=step_id,
                        # Each attempt bounds its own time (``timeout_seconds``), not the SDK's
                        # start-to-close timer, which would time out the attempts after it
                        # (renkei.contracts.retries); a run with no budget, from before, as then.
                        start_to_close_timeout=attempt_timeout if budget is None else None,
                        schedule_to_close_timeout=budget,
                        retry_policy=retry,
                    )
                    if self._run.links_directly
                    else await workflow.execute_activity(
                        activity_type,
                        request,
                        result_type=RawValue,
                        task_queue=agency_queue(self._run.task_queue_prefix, provider),
                        activity_id=step_id,
                        start_to_close_timeout=attempt_timeout,
                        schedule_to_close_timeout=budget,
                        retry_policy=retry,
                    )
                )
        except asyncio.CancelledError:
            if report:
                await self._outcome(step_id, "cancelled")
            raise
        except (ActivityError, ApplicationError, StepTimeout, CancelledError) as err:
            # A local activity (the direct channel) fails with its cause itself.
            cause = err.cause if isinstance(err, ActivityError) else err
            denied = Failure.WHITELIST_DENIED.caused(cause) or Failure.LINKAGE_REFUSED.caused(cause)
            unreached = (
                Failure.PROVIDER_ERROR.caused(cause)
                and isinstance(cause, ApplicationError)
                and UNREACHED in cause.details
                and self._patched(UNREACHED_NO_ANSWER)
            )
            if report:
                self._report(
                    step_id,
                    "denied"
                    if denied
                    else "no_answer"
                    if isinstance(cause, StepTimeout) or unreached
                    else "cancelled"
                    if isinstance(cause, CancelledError)
                    else "failed",
                )
            self._ended(step_id, provider, info, "denied" if denied else "failed")
            if denied:
                raise Failure.LINKAGE_DENIED.error(
                    f"step {step_id}: {cause.message if isinstance(cause, ApplicationError) else 'denied'}"
                ) from None
            if isinstance(err, ActivityError):
                raise
            raise local_failure(err, f"step {step_id}") from None
        if self._unmarked and workflow.info().get_current_history_length() != task:
            # The linkage outlasted the workflow task that asked for it: what the run set lazily
            # past it shows now.
            self._set_now()
        try:
            payload: dict[str, Any] = workflow.payload_converter().from_payload(raw.payload, dict)
        except Exception:  # the marker of a payload no converter reads
            if report:
                self._report(step_id, "failed")
            self._ended(step_id, provider, info, "failed")
            raise Failure.FORGED_ANSWER.error(
                f"step {step_id}: the {what} did not come from {provider} (another party's"
                " worker answered on its queue)"
            ) from None
        permit = request.permit
        if signed():
            opened = (
                is_providers(provider_key, payload, permit.signature)
                if provider_key is not None and permit is not None
                else None
            )
            if opened is None or permit is None:
                if report:
                    self._report(step_id, "failed")
                self._ended(step_id, provider, info, "failed")
                raise Failure.FORGED_ANSWER.error(
                    f"step {step_id}: the {what} is not {provider}'s (not signed with its key"
                    " for this permit)"
                )
            # Only an answer the provider signed counts as provided; the hub collects that from
            # the provider's own receipt, or (a run from before) takes it from the flow.
            if report and not self._collected():
                self._report(step_id, "provided", self._receipt(permit, opened, payload))
            payload = opened
        schema = SCHEMAS.get(self._run.info_schemas.get(info, ""), GenericRecord)
        try:
            payload = schema.model_validate(payload).model_dump(mode="json")
        except ValidationError as err:
            # The provider's own (signed) answer breaks its item's contract: no retry of the
            # workflow task can mend it, so the flow fails, naming the fields, never a value.
            self._ended(step_id, provider, info, "failed")
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc'])) or f'({what})'}: {e['msg']}"
                for e in err.errors(include_input=False, include_url=False)[:5]
            )
            raise Failure.INVALID_ANSWER.error(
                f"step {step_id}: {provider}'s {what} does not fit {schema.__name__}: {problems}"
            ) from None
        if what == "answer":
            await self._codes_to_executor(schema, payload, provider)
        self._ended(step_id, provider, info, "provided")
        self._bind(step_id, payload)

    def _ended(self, step_id: str, provider: str, info: str, outcome: str) -> None:
        self._linkages.append(
            LinkageOutcome.model_validate(
                {"step": step_id, "provider": provider, "info": info, "outcome": outcome}
            )
        )

    def _receipt(
        self, permit: SignedPermit, opened: dict[str, Any], signed: dict[str, Any]
    ) -> AnswerReceipt | None:
        """The provider's receipt of its answer, for the hub: the permit, the answer's digest
        and the provider's signature over both (the hub never sees the answer)."""
        if not self._patched(PROVIDER_RECEIPTS):
            return None
        return AnswerReceipt(
            permit=permit, digest=answer_digest(opened), signature=str(signed["signature"])
        )

    async def _codes_to_executor(
        self, schema: type[BaseModel], payload: dict[str, Any], provider: str
    ) -> None:
        """Replace the provider's subject codes in ``payload`` by the executor's codes."""
        slots: list[tuple[Any, str | int]] = []

        def collect(node: Any, path: tuple[str, ...]) -> None:
            if not path:
                return
            head, rest = path[0], path[1:]
            if head == "*":
                for i, item in enumerate(node):
                    if rest:
                        collect(item, rest)
                    else:
                        slots.append((node, i))
            elif isinstance(node, dict) and head in node:
                if rest:
                    collect(node[head], rest)
                else:
                    slots.append((node, head))

        for path in subject_fields(schema):
            collect(payload, path)
        if not slots:
            return
        codes = [container[key] for container, key in slots]
        translated = await self._translate(provider, self._start.executor, codes)
        for (container, key), code in zip(slots, translated, strict=True):
            container[key] = code


__all__ = ["BpfInterpreter", "CompiledBpf"]
