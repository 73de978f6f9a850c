"""Hub activities, run by the control worker: resolve a run's definition, broker linkages,
issue permits, translate codes.

They run as local activities of the interpreter workflow: they are short, and their results
land in the run's history as markers, so a replay sees exactly what the run saw.

Brokering is where the hub earns its keep: it decides the linkage against the whitelist and
only then issues a signed permit with the provider's code for the subject sealed to the provider
(:mod:`activities.permits`), so a linkage the law does not permit never reaches the provider at
all, and one it permits carries a code only the provider can read. It keeps two access records of every attempt, in one
transaction: the requester's (under the requester's code) and its own (under its subject id,
which is what the citizen's view reads).
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg
from pydantic import ValidationError
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.approved import ApprovalCheck
from activities.attempts import attempt_key, attempt_record
from activities.claims import (
    Calling,
    Claimed,
    Claims,
    caller,
    calling,
    chain_started,
    check_parent,
    continues,
    hubs_ticket,
    issue_first_form,
    issue_ticket,
    keep_ticket,
    parent_of,
    runs_ticket,
)
from activities.permits import PermitIssuer, UnknownParty
from renkei.bpf import registry
from renkei.bpf.admission import StartRefused, admit, why_not
from renkei.bpf.ahead import leading, leading_lanes
from renkei.bpf.loader import LoadedBpf
from renkei.bpf.models import ActStep, CallStep, QueryStep, WaitStep, walk
from renkei.bpf.review import suspension
from renkei.bpf.validation import validate
from renkei.contracts.failures import Failure
from renkei.contracts.messages import (
    AttemptOutcomeReport,
    AttestRequest,
    Brokered,
    BrokerRequest,
    CaseRefRequest,
    FirstLinkage,
    ParentFlow,
    Pin,
    ReminderRequest,
    ResolvedRun,
    ResolveRequest,
    Resume,
    ResumeProof,
    RunTicket,
    ScanRequest,
    ScanTarget,
    SignedResume,
    SignedTicket,
    Ticket,
    TranslateRequest,
    linkage_asked,
    personal_in_case_ref,
)
from renkei.contracts.names import COHORT_ITEM, COHORT_STEP, executor_of
from renkei.contracts.retries import BROKER_GROUP_LIMIT, SCAN_TIMEOUT
from renkei.kernel import holds, records, telemetry
from renkei.kernel.attest import (
    is_citizens,
    is_hubs_resume,
    is_platform_scan,
    is_platform_start,
    resume_state,
    trigger_start,
)
from renkei.kernel.pseudonyms import Pseudonyms, UnknownSubject
from whitelist.controls import screen
from whitelist.decide import JST, Decision, WhitelistIndex, decide_linkage
from whitelist.models import Catalog, Org
from whitelist.orgs import standing_refusal
from whitelist.payloads import SCHEMAS
from whitelist.store import LiveWhitelist

_NO_ORG = Org(id="none", ja="", en="", roles=())


@dataclass(frozen=True)
class _Decided:
    """One linkage of a call, decided, its records not yet written (:meth:`HubActivities._record`)
    and no permit issued."""

    req: BrokerRequest  # the attempt as Temporal says it is the calling flow's
    claimed: Claimed
    subject: uuid.UUID  # the hub's subject id
    decision: Decision
    now: dt.datetime
    sides: tuple[records.AccessRecord, records.AccessRecord]  # the requester's, the hub's


_ASKED = (
    "subject_code",
    "requester",
    "provider",
    "task",
    "info",
    "bpf",
    "bpf_version",
    "content_hash",
    "workflow_id",
    "run_id",
    "step",
    "hold_until",
    "hold_reason",
)
# Fields records came to carry later: compared where the stored record has them.
_ASKED_LATER = ("trigger", "parent_workflow_id", "parent_bpf", "purpose_task")


def _same_request(found: records.AccessRecord, meant: records.AccessRecord) -> bool:
    """Whether a stored record says the same was asked as a new one would (not what was
    decided: an attempt asked again later may be decided otherwise, and keeps the record of its
    first decision)."""
    return all(getattr(found, f) == getattr(meant, f) for f in _ASKED) and all(
        getattr(found, f) is None or getattr(found, f) == getattr(meant, f) for f in _ASKED_LATER
    )


class HubActivities:
    """The hub's activities; one instance per control worker."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        catalog: Catalog,
        pseudonyms: Pseudonyms,
        whitelist: LiveWhitelist,
        issuer: PermitIssuer,
        task_queue_prefix: str,
        mode: registry.Mode = "operation",
        time_scale: float = 1.0,
        history_limit: int = 10_000,
        kit_clock: bool = False,
        *,
        runs_before: dt.datetime | None = None,
        unticketed_before: dt.datetime | None = None,
        deferred_records: bool = False,
        links_directly: bool = False,
        approvals: ApprovalCheck | None = None,
    ) -> None:
        """``approvals``: in operation, required: a run starts, and a linkage is brokered, only
        for a version whose registered content the conformance body's signature approves (a
        test-mode hub, the kit's own, runs drafts)."""
        if mode == "operation" and approvals is None:
            raise ValueError("a hub in operation checks the conformance body's approvals")
        self._approvals = approvals if mode == "operation" else None
        self._pool = pool
        # Deferred chaining: concurrent linkages' records go together in one commit.
        self._group = records.GroupWriter(pool) if deferred_records else None
        self._catalog = catalog
        self._pseudonyms = pseudonyms
        self._whitelist = whitelist
        self._issuer = issuer
        self._hub_public = issuer.key.public_key()
        self._prefix = task_queue_prefix
        self._mode = mode
        self._time_scale = time_scale if mode == "test" else 1.0
        self._history_limit = history_limit
        self._claims = Claims(
            pool,
            catalog,
            self._approvals,
            hub=self._hub_public,
            unticketed_before=unticketed_before,
            mode=mode,
        )
        # Upgrading from a hub that issued no tickets: a continuation of a run from before it
        # gets its state signed without one.
        self._unticketed_before = unticketed_before
        # The legacy control worker's: it resolves only the runs started before this moment.
        self._runs_before = runs_before
        # Only a test-mode hub (the conformance kit's own) resolves runs on the kit's clock.
        self._kit_clock = kit_clock and mode == "test"
        self._links_directly = links_directly
        # (content hash, day) → (the whitelist index it was checked against, the problems)
        self._conformance: dict[tuple[str, dt.date], tuple[WhitelistIndex, list[str]]] = {}

    def _unconformant(self, found: registry.RegisteredBpf, day: dt.date) -> list[str]:
        """What keeps ``found`` from conforming to the whitelist in force on ``day``, as the
        hub's own sealed whitelist and org registry say (empty: it conforms).

        The reviews after a change of the law (``registry.reviews``) stop such a version
        first, with their reason; they are rows the application's role can append to, so the
        hub does not take a start on their word alone. Kept per content and day while the
        whitelist stays the same: a start costs a dictionary look-up."""
        index = self._whitelist.index
        key = (found.content_hash, day)
        kept = self._conformance.get(key)
        if kept is not None and kept[0] is index:
            return kept[1]
        d = found.definition
        loaded = LoadedBpf(
            definition=d,
            source_name=f"{d.bpf} v{d.version}",
            source_text="",
            content_hash=found.content_hash,
        )
        problems = [
            str(i) for i in validate(loaded, self._catalog, index, at=day) if i.severity == "error"
        ]
        if len(self._conformance) >= 4096:  # versions × days: a few at a time
            self._conformance.clear()
        self._conformance[key] = (index, problems)
        return problems

    @activity.defn(name="hub.resolve")
    async def resolve(self, req: ResolveRequest) -> ResolvedRun:
        """The registered definition to run, after checking who runs it and with what inputs."""
        if executor_of(calling().workflow_id) != req.executor:
            # Who runs it is the executor the flow's id names (Temporal's word, not the
            # request's): a flow does not resolve a version another executor operates.
            raise Failure.MALFORMED_START.error(
                "a flow resolves only for the executor its workflow id names"
            )
        if calling().workflow_type != req.bpf:
            raise Failure.MALFORMED_START.error("a flow resolves only the BPF its type names")
        if self._runs_before is not None and req.parent is None:
            # A run on the shared queue of runs from before executor-side control: any holder
            # of the old ring could start one, as any executor. Only those that were in flight
            # when the upgrade was deployed resolve (a continuation or a child does not come
            # here, or comes with its caller).
            if calling().asked_at >= self._runs_before:
                raise Failure.MALFORMED_START.error(
                    "a run started on the shared control queue after executor-side control"
                    " (runs start on their executor's queue)"
                )
        if req.parent is None and req.trigger in ("counter", "portal"):
            # The caller chose the case reference; the workflow id shows it in clear.
            personal = personal_in_case_ref(calling().workflow_id.rsplit("/", 1)[-1])
            if personal is not None:
                raise Failure.MALFORMED_START.error(
                    f"the case reference in the workflow id looks like {personal}"
                )
        if req.parent is not None:
            # A child's purpose, trigger and hold are its caller's: only the flow Temporal says
            # started this run may be claimed as its caller (the request's word is the
            # executor's worker's).
            if req.called_by is None:
                raise Failure.MALFORMED_START.error(
                    "a flow that no other flow started claims a caller"
                )
            await check_parent(req.parent.workflow_id, caller())
            await self._called_by_ticket(req)
        try:
            found, inputs = await admit(
                self._pool,
                self._catalog,
                self._mode,
                bpf=req.bpf,
                version=req.version,
                executor=req.executor,
                subject=req.subject,
                inputs=req.inputs,
                # A top-level start is checked against the definition's triggers; a child runs on
                # its caller's.
                trigger=req.trigger if req.parent is None else None,
                parent_task=req.parent.task if req.parent else None,
                hub=self._hub_public,
            )
        except StartRefused as refused:
            raise Failure(refused.kind).error(refused.reason) from None
        d = found.definition
        if self._approvals is not None and (
            unapproved := await self._approvals.why_not(
                d.bpf, d.version, found.content_hash, req.executor
            )
        ):
            raise Failure.UNKNOWN_BPF.error(unapproved)
        if self._mode == "operation" and (
            problems := self._unconformant(found, dt.datetime.now(JST).date())
        ):
            raise Failure.VERSION_STOPPED.error(
                f"{d.bpf} v{d.version} does not conform to the whitelist in force today (the"
                f" hub's own sealed whitelist): it admits no new run ({problems[0]})"
            )
        if req.trigger in ("life-event", "notification"):
            # Only the platform's scan and notification paths start such flows; a child carries
            # its caller's word, bound to the flow the platform started.
            started = req.parent.workflow_id if req.parent else calling().workflow_id
            if not is_platform_start(
                self._hub_public,
                req.attestation,
                started or "",
                req.trigger,
                req.parent.bpf if req.parent else d.bpf,
                req.executor,
                req.subject,
            ):
                raise Failure.WRONG_TRIGGER.error(
                    f"a {req.trigger} start comes only from the platform's"
                    f" {'scan' if req.trigger == 'life-event' else 'notification path'}"
                )
        if req.hold is not None:  # a child carries its caller's hold, approval included
            try:
                await holds.check(
                    self._pool,
                    req.executor,
                    req.hold.approval,
                    req.hold.reason,
                    req.hold.until,
                    req.parent.workflow_id if req.parent else calling().workflow_id,
                    hub=self._hub_public,
                    # the case's start, or a call's, is about the person the hold names
                    subject=req.subject,
                )
            except holds.HoldNotApproved as err:
                raise Failure.HOLD_NOT_APPROVED.error(str(err)) from None
        await self._note_kit_run()
        roles = self._catalog.org_roles(req.executor)
        schemas = {
            s.query.info: self._catalog.info_items[s.query.info].schema_name
            for s in walk(d.steps)
            if isinstance(s, QueryStep)
        }
        schemas |= {  # an act's output: the partner's receipt
            s.act.action: self._catalog.actions[s.act.action].result
            for s in walk(d.steps)
            if isinstance(s, ActStep) and s.act.action in self._catalog.actions
        }
        run = ResolvedRun(
            pin=Pin(bpf=d.bpf, version=d.version, content_hash=found.content_hash),
            definition=d,
            info_schemas=schemas,
            inputs=inputs,
            task_queue_prefix=self._prefix,
            executor_roles=sorted(roles),
            time_scale=self._time_scale,
            history_limit=self._history_limit,
            hub_signing=self._issuer.public_b64,
            takes_outcomes=True,
            brokers_groups=True,
            brokers_ahead=True,
            collects_receipts=True,
            kit_clock=self._kit_clock,
            links_directly=self._links_directly,
            signs_resume_text=True,
        )
        info = calling()
        wid = info.workflow_id
        ticket = issue_ticket(
            self._issuer.key,
            workflow_id=wid,
            run_id=info.run_id,
            pin=run.pin,
            trigger=req.trigger,
            parent=req.parent.workflow_id if req.parent else None,
            subject=req.subject,
            mode=self._mode,
            # a child serves what its caller serves (checked against the caller's ticket)
            purpose=req.parent or ParentFlow(workflow_id=wid, bpf=d.bpf, task=d.task),
        )
        before = await self._issued_once(wid, info.run_id, ticket, pinned=req.version is not None)
        if before is not None:  # resolved before as the version then in operation: as then
            return await self.resolve(req.model_copy(update={"version": before.pin.version}))
        # A worker from before reads the first form only (its run would fail on the other).
        run.ticket = (
            ticket if req.reads_signed_tickets else issue_first_form(self._issuer.key, ticket)
        )
        if req.broker_ahead:
            lanes = leading_lanes(run.definition.steps, BROKER_GROUP_LIMIT)
            run.ahead = await self._broker_leading(req, run, lanes)
        elif req.broker_first:  # a run from before brokering ahead: its first linkage alone
            first = leading(run.definition.steps, 1)
            run.first = next(
                iter(await self._broker_leading(req, run, [first] if first else [])), None
            )
        return run

    async def _called_by_ticket(self, req: ResolveRequest) -> None:
        """Refuse a child whose caller is not a run the hub resolved, as the child claims it:
        the caller's ticket is the hub's, of the run Temporal says started this one, in this
        hub's mode; the child serves the flow that caller serves, under its trigger, about its
        person; and the caller's registered definition calls this BPF. (A run from before
        tickets, while the upgrade's window is open, calls without one.)"""
        assert req.parent is not None
        info = calling()
        started_by = await parent_of(info.workflow_id, info.run_id)
        refuse = Failure.MALFORMED_START.error
        if req.caller_ticket is None:
            if (
                self._unticketed_before is not None
                and started_by is not None
                and await chain_started(*started_by) < self._unticketed_before
            ):
                return
            raise refuse("a flow that calls another is one the hub resolved (no caller ticket)")
        t = hubs_ticket(self._hub_public, req.caller_ticket)
        if t is None or t.mode != self._mode or started_by != (t.workflow_id, t.run_id):
            raise refuse("the caller's ticket is not the hub's for the run that started this one")
        if req.parent != t.purpose or req.trigger != t.trigger or req.subject != t.subject:
            raise refuse("a child serves its caller's flow, under its trigger, about its person")
        caller_def = await self._claims.definition(
            t.pin.bpf, t.pin.version, t.pin.content_hash, req.executor
        )
        if not any(
            isinstance(s, CallStep)
            and s.call.bpf == req.bpf
            and (s.call.version is None or s.call.version == req.version)
            for s in walk(caller_def.steps)
        ):
            asked = req.bpf if req.version is None else f"{req.bpf} v{req.version}"
            raise refuse(f"{caller_def.bpf} v{caller_def.version} calls no {asked}")

    async def _broker_leading(
        self, req: ResolveRequest, run: ResolvedRun, lanes: Sequence[Sequence[QueryStep]]
    ) -> list[FirstLinkage]:
        """The run's leading linkages brokered now (brokering ahead): the query steps it starts
        with whose provider and subject the definition fixes, by the sequence each is in (the
        top level's, or each lane's of a parallel step the run starts with:
        :func:`renkei.bpf.ahead.leading_lanes`), each decided and permitted as :meth:`broker`
        does at its step, its permit lasting the steps before it in its sequence too
        (:func:`~renkei.contracts.messages.ahead_budget`), and the records of all of them
        written in one transaction before any permit (:meth:`_broker_many`). In each sequence,
        stops at the first one denied or refused: the flow fails at that step, or asks for it
        there and meets the same refusal, and never reaches those after it in that sequence
        (another lane's are decided on their own, as the lanes ask at once)."""
        info = calling()
        asked: list[BrokerRequest] = []
        chains: list[int] = []
        steps: list[QueryStep] = []
        for lane, seq in enumerate(lanes):
            for i, step in enumerate(seq):
                asked.append(
                    linkage_asked(
                        step,
                        provider=step.query.provider,
                        subject=req.subject,
                        requester=req.executor,
                        task=run.definition.task,
                        trigger=req.trigger,
                        pin=run.pin,
                        workflow_id=info.workflow_id,
                        run_id=info.run_id,
                        hold=req.hold,
                        parent=req.parent,
                        ticket=run.ticket,
                        after=seq[:i],
                    )
                )
                chains.append(lane)
                steps.append(step)
        out: list[FirstLinkage] = []
        stopped: set[int] = set()
        answers = await self._broker_many(asked, chains=chains)
        for step, lane, brokered in zip(steps, chains, answers, strict=True):
            if lane in stopped:
                continue
            if brokered is None:
                stopped.add(lane)
                continue
            out.append(FirstLinkage(step=step.id, brokered=brokered))
            if not brokered.allowed:
                stopped.add(lane)
        return out

    @activity.defn(name="hub.broker")
    async def broker(self, req: BrokerRequest) -> Brokered:
        """Decide one linkage, record it for the requester and the hub, and if it is permitted
        issue the permit with the provider's code sealed to the provider."""
        decided = await self._decide(req, calling())
        [refused] = await self._record([decided])
        if refused is not None:
            raise refused
        return await self._permit(decided)

    async def _broker_many(
        self, reqs: Sequence[BrokerRequest], *, chains: Sequence[int] | None = None
    ) -> list[Brokered | None]:
        """Broker several linkages of one call: each decided on its own (a refusal, ``None``,
        refuses that one alone), the records of all of them written in one transaction, then
        each permit issued (a record is durable before its permit exists). ``chains``: the
        linkages are a flow's next steps brokered ahead, each in the sequence this names (the
        run's top level, or a lane of the parallel step it starts with), in order within it:
        the first one of a sequence refused, denied or not permittable is the last one of that
        sequence decided and recorded (the flow stops at that step); the others are ``None``."""
        info = calling()
        stopped: set[int] = set()
        decided: list[_Decided | None] = []
        for i, req in enumerate(reqs):
            chain = chains[i] if chains is not None else None
            if chain in stopped:
                decided.append(None)
                continue
            try:
                d = await self._decide(req, info)
            except ApplicationError:
                decided.append(None)
                if chain is not None:
                    stopped.add(chain)
                continue
            decided.append(d)
            if chain is not None and not await self._permittable(d):
                stopped.add(chain)
        written = [(i, d) for i, d in enumerate(decided) if d is not None]
        refusals = iter(
            await self._record(
                [d for _, d in written],
                chains=[chains[i] for i, _ in written] if chains is not None else None,
            )
        )
        out: list[Brokered | None] = []
        for one in decided:  # the records of all are durable: now their permits
            if one is None or next(refusals) is not None:
                out.append(None)
                continue
            try:
                out.append(await self._permit(one))
            except ApplicationError:
                out.append(None)
        return out

    async def _decide(self, req: BrokerRequest, info: Calling) -> _Decided:
        """Check one linkage's claims and decide it against the whitelist and the controls
        (nothing written but the flow's earlier outcomes it carries); raise its refusal."""
        # The attempt is the calling workflow's own, as Temporal says, whatever the request says.
        req = req.model_copy(update={"workflow_id": info.workflow_id, "run_id": info.run_id})
        if req.outcomes:  # the flow's earlier attempts, first: what fails below leaves them told
            await self._append_outcomes(info, req.outcomes)
        # Who asks, for what, under which hold: checked against Temporal and the registry.
        claimed = await self._claims.broker(req, caller(info))
        sub_task = claimed.sub_task
        try:
            subject = await self._pseudonyms.subject_of(req.requester, req.subject)
        except UnknownSubject as err:
            raise Failure.UNKNOWN_SUBJECT.error(str(err)) from None
        now = dt.datetime.now(dt.UTC)
        # Only an active org asks or answers (whitelist.orgs); the refusal is recorded as a denial.
        # A partner's act (an action, not an info item): what it sends and the consent it rests on.
        refusal = standing_refusal(self._catalog, req.requester, req.provider, now) or (
            self._act_refusal(req, now.astimezone(JST).date())
        )
        consented = refusal is None and await self._consented(req)
        decision = telemetry.decided(
            "hub",
            req.provider,
            req,
            lambda: (
                refusal
                or decide_linkage(
                    self._catalog,
                    self._whitelist.index,
                    req.requester,
                    req.provider,
                    req.task,
                    req.info,
                    now,
                    consented=consented,
                    sub_task=sub_task,
                )
            ),
        )
        # The PIA gate and the emergency stop (whitelist.controls): in memory, like the rows.
        decision = screen(
            decision,
            self._whitelist.controls.index,
            requester=req.requester,
            provider=req.provider,
            task=req.task,
            bpf=req.bpf,
            bpf_version=req.bpf_version,
            at=now,
        )
        if sub_task is not None and decision.sub_task != sub_task:  # both levels, recorded
            decision = decision.model_copy(update={"sub_task": sub_task})
        key = attempt_key(req.workflow_id, req.run_id, req.step)

        def record(keeper: str, code: str) -> records.AccessRecord:
            return attempt_record(
                keeper=keeper,
                subject_code=code,
                req=req,
                decision=decision,
                decided_at=now,
                workflow_id=req.workflow_id,
                run_id=req.run_id,
                key=key,
                hold=req.hold if claimed.held else None,  # only its own person's records
                parent=req.parent,
            )

        sides = (record(req.requester, req.subject), record(records.HUB, str(subject)))
        return _Decided(req, claimed, subject, decision, now, sides)

    async def _permittable(self, d: _Decided) -> bool:
        """Whether :meth:`_permit` can give ``d`` a permit: allowed, and its provider has keys."""
        if not d.decision.allowed or d.decision.row is None:
            return False
        try:
            await self._issuer.signing_key_of(d.req.provider)
        except UnknownParty:
            return False
        return True

    async def _record(
        self, decided: Sequence[_Decided], *, chains: Sequence[int] | None = None
    ) -> list[PermissionError | None]:
        """Write the requester's and the hub's records of every linkage decided, in one
        transaction (one durable commit; with deferred chaining, one call of the group writer).
        A linkage whose record is refused (a requester's record another hand wrote first) is
        refused alone: the others are then written each on its own (``chains``, linkages
        brokered ahead in the sequences it names: only those before it in its sequence).
        Returns each linkage's refusal, ``None`` when its records are written."""
        if not decided:
            return []
        tracer = telemetry.tracer()
        spans = [
            tracer.start_span(
                "renkei.hub.decide",
                attributes=telemetry.linkage_attributes(d.req, "hub", d.decision.outcome),
            )
            for d in decided
        ]
        try:
            try:
                await self._write([s for d in decided for s in d.sides])
                return [None] * len(decided)
            except PermissionError as err:
                if len(decided) == 1:
                    return [err]
            out: list[PermissionError | None] = []
            refused: dict[int, PermissionError] = {}  # the first refusal of each sequence
            for k, d in enumerate(decided):
                chain = chains[k] if chains is not None else None
                if chain is not None and chain in refused:
                    out.append(refused[chain])
                    continue
                try:
                    await self._write(d.sides)
                    out.append(None)
                except PermissionError as err:
                    out.append(err)
                    if chain is not None:
                        refused[chain] = err
            return out
        finally:
            for span in spans:
                span.end()

    async def _write(self, sides: Sequence[records.AccessRecord]) -> None:
        """Write ``sides``; refused if the hub already recorded one of these attempts as another
        request (about another person, of another provider or item, under another hold): a flow
        asking for an attempt again gets a permit only for what its records say."""
        if self._group is not None:
            stored = await self._group.write(*sides, signer=self._issuer.recorder)
        else:
            stored = await records.write(self._pool, *sides, signer=self._issuer.recorder)
        for meant, found in zip(sides, stored, strict=True):
            if found.keeper == records.HUB and not _same_request(found, meant):
                raise PermissionError(
                    "this attempt is recorded as another request (another person, provider,"
                    " item or hold): asked again otherwise, it is refused"
                )

    async def _permit(self, d: _Decided) -> Brokered:
        """The answer to a linkage decided and recorded: a denial, or its permit."""
        req, decision = d.req, d.decision
        if not decision.allowed or decision.row is None:
            return Brokered(
                allowed=False, reason=decision.reason, legal_reference=decision.legal_reference
            )
        try:
            issued = await self._issuer.issue(
                workflow_id=req.workflow_id,
                run_id=req.run_id,
                step=req.step,
                requester=req.requester,
                provider=req.provider,
                task=req.task,
                info=req.info,
                row=decision.row,
                bpf=req.bpf,
                bpf_version=req.bpf_version,
                content_hash=req.content_hash,
                # A private partner never receives anyone's code: only what the act sends.
                provider_code=None
                if self._catalog.is_private(req.provider)
                else await self._pseudonyms.code_at(req.provider, d.subject),
                budget=dt.timedelta(seconds=d.claimed.budget_seconds),
                now=d.now,
                sub_task=decision.sub_task,
                fields=d.claimed.sends,
            )
        except UnknownParty as err:
            raise Failure.LINKAGE_DENIED.error(str(err)) from None
        return Brokered(
            allowed=True,
            reason=decision.reason,
            legal_reference=decision.legal_reference,
            permit=issued.permit,
            sealed_subject=issued.sealed,
            # from the same read of the registry as the key the code is sealed to
            provider_key=issued.provider_key,
        )

    @activity.defn(name="hub.broker-group")
    async def broker_group(self, reqs: list[BrokerRequest]) -> list[Brokered | None]:
        """Broker the linkages a flow asks for at the same moment (its parallel lanes' first
        steps) in one call, their records in one transaction (:meth:`_broker_many`). ``None``
        for one it refused: the flow asks for that one alone, and meets the refusal there."""
        if len(reqs) > BROKER_GROUP_LIMIT:
            raise Failure.MALFORMED_LINKAGE.error(
                f"{len(reqs)} linkages in one call to the hub (at most {BROKER_GROUP_LIMIT})"
            )
        return await self._broker_many(reqs)

    @activity.defn(name="hub.outcomes")
    async def outcomes(self, reports: list[AttemptOutcomeReport]) -> None:
        """Append what became of several of the calling flow's attempts, in one transaction,
        each as :meth:`outcome` would (a refused one is logged and leaves the others)."""
        await self._append_outcomes(calling(), reports)

    async def _append_outcomes(self, info: Calling, reports: list[AttemptOutcomeReport]) -> None:
        if not info.workflow_id or not info.run_id:
            raise Failure.LINKAGE_REFUSED.error("an outcome comes from the attempt's own flow")
        found = await records.record_outcomes(
            self._pool,
            [
                (attempt_key(info.workflow_id, info.run_id, r.step), r.outcome, r.receipt)
                for r in reports
            ],
            self._issuer.recorder,
        )
        for report, result in zip(reports, found, strict=True):
            if isinstance(result, PermissionError):
                activity.logger.warning("step %s: outcome not taken: %s", report.step, result)
            else:
                self._note_unreceipted(report, result)
                self._note_disagreement(report, result)

    @staticmethod
    def _note_disagreement(
        report: AttemptOutcomeReport, result: records.AttemptOutcome | None
    ) -> None:
        """Log an outcome the flow tells of an attempt the hub already holds as provided on the
        provider's receipt (it collects that itself): the provider says it answered, the
        executor says otherwise. The outcome stays provided."""
        if result is not None and result.outcome == "provided" and report.outcome != "provided":
            activity.logger.warning(
                "step %s: reported as %s; the provider's receipt says provided",
                report.step,
                report.outcome,
            )

    def _note_unreceipted(
        self, report: AttemptOutcomeReport, result: records.AttemptOutcome | None
    ) -> bool:
        """Log (and count) a ``provided`` the hub did not take: no provider receipt held."""
        if report.outcome != "provided" or result is None or result.outcome != "unreceipted":
            return False
        telemetry.refused(records.HUB, "provided without the provider's receipt")
        activity.logger.warning(
            "step %s: reported as provided without a provider receipt that holds:"
            " recorded as unreceipted",
            report.step,
        )
        return True

    def _act_refusal(self, req: BrokerRequest, day: dt.date) -> Decision | None:
        """Why an act (or a private org's part in a linkage) is refused before the whitelist is
        asked; ``None`` when nothing is wrong with it. The partner must carry out the action on
        ``day`` (the org registry's ``org_acts``, Japan time)."""
        action = self._catalog.actions.get(req.info)
        if self._catalog.is_private(req.requester):
            return Decision(
                allowed=False, reason=f"{req.requester} is a private org: it asks no one"
            )
        if action is None:
            if self._catalog.is_private(req.provider):
                return Decision(
                    allowed=False,
                    reason=f"{req.provider} is a private org: it answers no query",
                )
            return None
        if req.info not in self._catalog.orgs.get(req.provider, _NO_ORG).acts_at(day):
            return Decision(
                allowed=False, reason=f"{req.provider} does not carry out action {req.info!r}"
            )
        takes = SCHEMAS[action.request].model_fields
        extra = sorted(set(req.send_fields) - set(takes))
        if extra:
            return Decision(
                allowed=False,
                reason=f"the act sends fields {req.info} does not take: {', '.join(extra)}",
            )
        return None

    async def _consented(self, req: BrokerRequest) -> bool:
        """Whether the act carries the citizen's own consent: the answer to the consent step its
        definition names for it (a wait `by: citizen`), attested by the portal for this very run,
        saying yes."""
        proof = req.consent
        if proof is None or req.info not in self._catalog.actions:
            return False
        try:
            found = await registry.fetch(self._pool, req.bpf, req.bpf_version, self._mode)
        except registry.DefinitionAltered:
            return False
        if found is None or found.content_hash != req.content_hash:
            return False
        steps = {s.id: s for s in walk(found.definition.steps)}
        act = steps.get(req.step)
        wait = steps.get(proof.step)
        if (
            not isinstance(act, ActStep)
            or act.act.consent != proof.step
            or act.act.action != req.info
        ):
            return False
        if not isinstance(wait, WaitStep) or wait.wait.by != "citizen":
            return False
        # The portal's word for this run's person (the broker holds the request's person to
        # the run's ticket): a run resolved about someone else, or again about another person,
        # cannot use a consent its person never gave. The first form, bound to the run only, is
        # taken while the upgrade's window is open, for answers given before it.
        persons: tuple[str | None, ...] = (req.subject,)
        if self._unticketed_before is not None:
            persons += (None,)
        return proof.payload.get("agree") is True and any(
            is_citizens(
                self._hub_public,
                proof.attestation,
                req.workflow_id,
                req.run_id,
                proof.step,
                proof.payload,
                person,
            )
            for person in persons
        )

    @activity.defn(name="hub.outcome")
    async def outcome(self, report: AttemptOutcomeReport) -> None:
        """Append what became of one of the calling flow's attempts to the hub's outcomes.

        The attempt is the calling workflow's own (Temporal says which); ``provided`` is taken
        only on the provider's receipt for this very attempt, verified under the provider's
        registered, unrevoked key (the hub sees the answer's digest, never the answer). A
        ``provided`` without one is written as ``unreceipted`` and refused."""
        info = calling()
        if not info.workflow_id or not info.run_id:
            raise Failure.LINKAGE_REFUSED.error("an outcome comes from the attempt's own flow")
        key = attempt_key(info.workflow_id, info.run_id, report.step)
        try:
            found = await records.record_outcome(
                self._pool, key, report.outcome, self._issuer.recorder, report.receipt
            )
        except PermissionError as err:
            raise Failure.LINKAGE_REFUSED.error(str(err)) from None
        self._note_disagreement(report, found)
        if self._note_unreceipted(report, found):
            raise Failure.LINKAGE_REFUSED.error(
                f"step {report.step}: not recorded as provided: no receipt of the provider's"
                " for this attempt holds"
            )

    @activity.defn(name="hub.scan-target")
    async def scan_target(self, req: ScanRequest) -> ScanTarget:
        """The version a life-event scan starts, after checking it is triggered by that event."""
        self._claims.scan(req.bpf, req.executor, caller())
        try:
            found = await registry.fetch(self._pool, req.bpf, req.version, self._mode, req.executor)
        except registry.DefinitionAltered as e:
            raise Failure.UNKNOWN_BPF.error(str(e)) from None
        if found is None:
            raise Failure.UNKNOWN_BPF.error(
                await why_not(self._pool, req.bpf, req.version, self._mode, req.executor)
            )
        d = found.definition
        if not is_platform_scan(
            self._hub_public, req.attestation, req.bpf, req.version, req.executor, req.age, req.on
        ):
            raise Failure.NOT_TRIGGERED.error(
                "a life-event scan comes only from the platform's schedules (unattested)"
            )
        if not any(r.age == req.age and r.on == req.on for r in d.life_events()):
            raise Failure.NOT_TRIGGERED.error(
                f"{d.bpf} v{d.version} is not triggered by age {req.age} ({req.on})"
            )
        now = dt.datetime.now(dt.UTC)
        # A version a change of the law left non-conformant starts no one (renkei.bpf.review).
        if self._mode == "operation" and (
            stopped := await suspension(self._pool, d.bpf, d.version, now.astimezone(JST).date())
        ):
            # Its own type (a recorded scan refused before it had one carries UnknownBpf: the
            # activity's failure is in the history, so an old run replays as it ran).
            raise Failure.VERSION_STOPPED.error(stopped.reason(d.bpf, d.version))
        if self._approvals is not None and (  # no cohort for content unapproved
            unapproved := await self._approvals.why_not(
                d.bpf, d.version, found.content_hash, req.executor
            )
        ):
            raise Failure.UNKNOWN_BPF.error(unapproved)
        # The scan's one linkage: the executor asking its own register who reaches the event.
        info = calling()
        decision = decide_linkage(
            self._catalog,
            self._whitelist.index,
            req.executor,
            req.executor,
            d.task,
            COHORT_ITEM,
            now,
        )
        decision = screen(
            decision,
            self._whitelist.controls.index,
            requester=req.executor,
            provider=req.executor,
            task=d.task,
            bpf=d.bpf,
            bpf_version=d.version,
            at=now,
        )
        issued = None
        if decision.allowed and decision.row is not None:
            issued = await self._issuer.issue(
                workflow_id=info.workflow_id,
                run_id=info.run_id,
                step=COHORT_STEP,
                requester=req.executor,
                provider=req.executor,
                task=d.task,
                info=COHORT_ITEM,
                row=decision.row,
                bpf=d.bpf,
                bpf_version=d.version,
                content_hash=found.content_hash,
                provider_code=None,
                budget=SCAN_TIMEOUT,
                now=now,
            )
        return ScanTarget(
            task=d.task,
            version=d.version,
            content_hash=found.content_hash,
            task_queue_prefix=self._prefix,
            permit=issued.permit if issued else None,
            provider_key=issued.provider_key if issued else None,
        )

    @activity.defn(name="hub.case-refs")
    async def case_refs(self, req: CaseRefRequest) -> list[str]:
        """Stable case references for the people a scan found (no personal data in them)."""
        self._claims.scan(req.bpf, req.executor, caller())
        return [self._pseudonyms.case_ref(req.executor, req.bpf, req.key, c) for c in req.codes]

    @activity.defn(name="hub.sign-resume")
    async def sign_resume(self, resume: Resume) -> str:
        """Sign the state a flow carries into its next run (continue-as-new), as dumped (the
        first form, for a run that asked it so before: :meth:`sign_resume_text` signs its exact
        text)."""
        await self._resumable(resume)
        return resume_state(self._issuer.key, calling().workflow_id, resume.model_dump_json())

    @activity.defn(name="hub.sign-resume-text")
    async def sign_resume_text(self, resume: Resume) -> SignedResume:
        """Sign the state a flow carries into its next run (continue-as-new), as the exact text
        the continuation carries: it holds whatever a later release of the hub adds to the
        model, so a continuation taken up after the hub's upgrade is not refused."""
        await self._resumable(resume)
        text = resume.model_dump_json(by_alias=True)  # as the definition's YAML names fields
        wid = calling().workflow_id
        return SignedResume(
            text=text, signature=resume_state(self._issuer.key, wid, text, text=True)
        )

    async def _resumable(self, resume: Resume) -> None:
        """Refuse to sign a state unless it is of a run as the hub resolved it for this flow's
        executor (its registered definition, its roles, the hub's own settings, the run's own
        ticket), so a continuation cannot swap the definition it runs."""
        who = caller()
        run = resume.run
        registered = await self._claims.definition(
            run.pin.bpf, run.pin.version, run.pin.content_hash, who.executor
        )
        if (
            run.pin.bpf != who.workflow_type
            or registered.model_dump(mode="json") != run.definition.model_dump(mode="json")
            or run.task_queue_prefix != self._prefix
            or sorted(run.executor_roles) != sorted(self._catalog.org_roles(who.executor))
            or run.hub_signing != self._issuer.public_b64
            or run.time_scale != self._time_scale
            or run.history_limit != self._history_limit
        ):
            raise Failure.MALFORMED_START.error(
                "the state to carry on is not the run the hub resolved for this flow"
            )
        if run.ticket is None:
            # Only a run of a chain the hub resolved before it issued tickets goes on without.
            if self._unticketed_before is None or (
                await chain_started(who.workflow_id, who.run_id) >= self._unticketed_before
            ):
                raise Failure.MALFORMED_START.error(
                    "the state to carry on is not of a run the hub resolved (no ticket)"
                )
        elif (
            ticket := runs_ticket(
                self._hub_public, run.ticket, who.workflow_id, who.run_id, self._mode
            )
        ) is None or ticket.pin != run.pin:
            raise Failure.MALFORMED_START.error(
                "the state to carry on is not of the run the hub resolved (another ticket)"
            )

    @activity.defn(name="hub.check-resume")
    async def check_resume(self, proof: ResumeProof) -> Ticket | None:
        """Refuse a continuation whose state the hub did not sign for this workflow: a forged
        ``resume`` would skip the hub's checks, the steps already passed and their answers.
        Answer the continuing run's ticket: the run it continues was resolved so (none: a run
        from before tickets)."""
        info = calling()
        wid = info.workflow_id
        if proof.signed is not None:  # the exact text the hub signed: the state read from it
            if not is_hubs_resume(
                self._hub_public, proof.signed.signature, wid, proof.signed.text, text=True
            ):
                raise Failure.MALFORMED_START.error(
                    "the state this flow continues from is not the hub's (a forged resume)"
                )
            try:
                proof = ResumeProof(resume=proof.signed.resume(), signed=proof.signed)
            except ValidationError:  # signed by the hub, so of a release it no longer reads
                raise Failure.MALFORMED_START.error(
                    "the state this flow continues from is of a form this hub does not read"
                ) from None
        elif not is_hubs_resume(
            self._hub_public, proof.signature, wid, proof.resume.model_dump_json()
        ):
            raise Failure.MALFORMED_START.error(
                "the state this flow continues from is not the hub's (a forged resume)"
            )
        await self._note_kit_run()
        if proof.resume.run.ticket is None:
            return None
        before = hubs_ticket(self._hub_public, proof.resume.run.ticket)
        if before is None:  # signed in the state, so the hub's: unless the hub's key changed
            raise Failure.MALFORMED_START.error(
                "the ticket in the state this flow continues from is not the hub's"
            )
        # The state is the one run's the hub signed it for, and is taken up once, by the run
        # Temporal continued from it: not by a run started afresh with a state captured before
        # (under the workflow id of a run that ended, say), which would run as the hub
        # resolved that run then, skipping a version stop since.
        if await continues(info.workflow_id, info.run_id) != before.run_id:
            raise Failure.MALFORMED_START.error(
                "the state this flow continues from is another run's, not the run Temporal"
                " continued it from"
            )
        ticket = issue_ticket(  # the hub signed the state with it: its own, of this workflow
            self._issuer.key,
            workflow_id=info.workflow_id,
            run_id=info.run_id,
            pin=before.pin,
            trigger=before.trigger,
            parent=before.parent,
            subject=before.subject,
            mode=before.mode,
            purpose=before.purpose,
        )
        await self._issued_once(info.workflow_id, info.run_id, ticket)
        # in the form the run read before: a worker from before reads the first form only
        if isinstance(proof.resume.run.ticket, SignedTicket):
            return ticket
        return issue_first_form(self._issuer.key, ticket)

    async def _issued_once(
        self, workflow_id: str, run_id: str, ticket: SignedTicket, *, pinned: bool = True
    ) -> RunTicket | None:
        """Keep ``ticket`` as the one the hub issues this run (``hub.run_tickets``), before the
        hub answers with it; refuse the run a different one. A run asking again (a retry, or
        its own code) gets the ticket it got; asked about another person, as another trigger,
        caller or purpose, it would hold the hub's word for two runs in one: the portal would
        show it to one person while its linkages are about another. A run that named no
        version (``pinned`` false) and was resolved before as another one (a version put in
        operation between its tries) is answered ``None`` no more: the ticket it got, whose
        version it is then resolved as again."""
        kept, written = await keep_ticket(self._pool, workflow_id, run_id, ticket)
        if written:
            return None
        activity.logger.info(
            "run %s asked to be resolved again: answered with its ticket", workflow_id
        )
        if kept.text == ticket.text:
            return None
        first = hubs_ticket(self._hub_public, kept)
        if first is None or (first.workflow_id, first.run_id) != (workflow_id, run_id):
            # Not the hub's: the database's role wrote it (the hub writes only what it signed).
            activity.logger.warning("run %s: the ticket kept for it is not the hub's", workflow_id)
            raise Failure.MALFORMED_START.error(
                "the ticket the hub's database keeps for this run is not the hub's"
            )
        now = RunTicket.model_validate_json(ticket.text)
        if first == now:
            return None
        if not pinned and first.model_copy(update={"pin": now.pin}) == now:
            return first
        raise Failure.MALFORMED_START.error(
            "the hub resolved this run before, as another start: a run is resolved once"
            " (its version, trigger, caller, purpose and person stay as first resolved)"
        )

    async def _note_kit_run(self) -> None:
        """The kit's hub notes each run it resolves or continues: billing leaves them out."""
        if self._kit_clock:
            info = calling()
            await self._pool.execute(
                "INSERT INTO records.conformance_runs (workflow_id, run_id) VALUES ($1, $2)"
                " ON CONFLICT DO NOTHING",
                info.workflow_id,
                info.run_id,
            )

    @activity.defn(name="hub.attest-starts")
    async def attest_starts(self, req: AttestRequest) -> list[str]:
        """The platform's word for each flow a life-event scan starts (see hub.resolve): to the
        platform's scans of that flow and executor only."""
        self._claims.scan(req.bpf, req.executor, caller())
        self._claims.starts(req.bpf, req.executor, req.starts)
        return [
            trigger_start(self._issuer.key, wid, req.trigger, req.bpf, req.executor, subject)
            for wid, subject in req.starts
        ]

    @activity.defn(name="hub.remind")
    async def remind(self, req: ReminderRequest) -> None:
        """Queue a reminder for the executor to send (once per wait step): the calling flow's,
        into its own executor's outbox (whatever the request says); a conformance-kit run's
        reminder is not the executor's to send."""
        if self._kit_clock:
            return
        who = caller()
        await self._pool.execute(
            "INSERT INTO hub.reminders (workflow_id, step, executor, subject_code, deadline)"
            " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (workflow_id, step) DO NOTHING",
            who.workflow_id,
            req.step,
            who.executor,
            req.subject,
            req.deadline,
        )

    @activity.defn(name="hub.translate")
    async def translate(self, req: TranslateRequest) -> list[str]:
        """Translate codes from a provider's code space into the calling flow's executor's:
        only from a provider the hub permitted in this very run; a private org holds no one's
        code."""
        if self._catalog.is_private(req.from_org) or self._catalog.is_private(req.to_org):
            raise Failure.LINKAGE_DENIED.error("a private org holds no one's code")
        await self._claims.translation(req.from_org, req.to_org, caller())
        try:
            return await self._pseudonyms.translate(req.from_org, req.codes, req.to_org)
        except UnknownSubject as err:
            raise Failure.UNKNOWN_SUBJECT.error(str(err)) from None
