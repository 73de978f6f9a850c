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

import asyncpg
from temporalio import activity

from activities.attempts import attempt_key, attempt_record
from activities.permits import PermitIssuer, UnknownParty
from renkei.bpf import registry
from renkei.bpf.admission import StartRefused, admit, why_not
from renkei.bpf.models import ActStep, QueryStep, WaitStep, walk
from renkei.contracts.failures import Failure
from renkei.contracts.messages import (
    AttemptOutcomeReport,
    AttestRequest,
    Brokered,
    BrokerRequest,
    CaseRefRequest,
    Pin,
    ReminderRequest,
    ResolvedRun,
    ResolveRequest,
    Resume,
    ResumeProof,
    ScanRequest,
    ScanTarget,
    TranslateRequest,
)
from renkei.contracts.names import COHORT_ITEM, COHORT_STEP
from renkei.contracts.retries import SCAN_TIMEOUT
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
from whitelist.decide import Decision, decide_linkage
from whitelist.models import Catalog, Org
from whitelist.payloads import SCHEMAS
from whitelist.store import LiveWhitelist

_NO_ORG = Org(id="none", ja="", en="", roles=())


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
    ) -> None:
        self._pool = pool
        self._catalog = catalog
        self._pseudonyms = pseudonyms
        self._whitelist = whitelist
        self._issuer = issuer
        self._hub_public = issuer.key.public_key()
        self._prefix = task_queue_prefix
        self._mode = mode
        self._time_scale = time_scale if mode == "test" else 1.0
        self._history_limit = history_limit

    @activity.defn(name="hub.resolve")
    async def resolve(self, req: ResolveRequest) -> ResolvedRun:
        """The registered definition to run, after checking who runs it and with what inputs."""
        if req.parent is not None and req.called_by is None:
            # A child's purpose and trigger are its caller's; only a real child (one Temporal
            # says another flow started) may claim a caller.
            raise Failure.MALFORMED_START.error("a flow that no other flow started claims a caller")
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
            )
        except StartRefused as refused:
            raise Failure(refused.kind).error(refused.reason) from None
        d = found.definition
        if req.trigger in ("life-event", "notification"):
            # Only the platform's scan and notification paths start such flows; a child carries
            # its caller's word, bound to the flow the platform started.
            started = req.parent.workflow_id if req.parent else activity.info().workflow_id
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
                    req.parent.workflow_id if req.parent else activity.info().workflow_id or "",
                )
            except holds.HoldNotApproved as err:
                raise Failure.HOLD_NOT_APPROVED.error(str(err)) from None
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
        return ResolvedRun(
            pin=Pin(bpf=d.bpf, version=d.version, content_hash=found.content_hash),
            definition=d,
            info_schemas=schemas,
            inputs=inputs,
            task_queue_prefix=self._prefix,
            executor_roles=sorted(roles),
            time_scale=self._time_scale,
            history_limit=self._history_limit,
            hub_signing=self._issuer.public_b64,
        )

    @activity.defn(name="hub.broker")
    async def broker(self, req: BrokerRequest) -> Brokered:
        """Decide one linkage, record it for the requester and the hub, and if it is permitted
        issue the permit with the provider's code sealed to the provider."""
        # The attempt is the calling workflow's own, as Temporal says, whatever the request says.
        info = activity.info()
        req = req.model_copy(
            update={"workflow_id": info.workflow_id, "run_id": info.workflow_run_id}
        )
        try:
            subject = await self._pseudonyms.subject_of(req.requester, req.subject)
        except UnknownSubject as err:
            raise Failure.UNKNOWN_SUBJECT.error(str(err)) from None
        now = dt.datetime.now(dt.UTC)
        # A partner's act (an action, not an info item): what it sends and the consent it rests on.
        refusal = self._act_refusal(req)
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
                )
            ),
        )
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
                hold=req.hold,
                parent=req.parent,
            )

        with telemetry.tracer().start_as_current_span(
            "renkei.hub.decide",
            attributes=telemetry.linkage_attributes(req, "hub", decision.outcome),
        ):
            await records.write(
                self._pool,
                record(req.requester, req.subject),
                record(records.HUB, str(subject)),
                signer=self._issuer.recorder,
            )
        if not decision.allowed or decision.row is None:
            return Brokered(
                allowed=False, reason=decision.reason, legal_reference=decision.legal_reference
            )
        try:
            permit, sealed = await self._issuer.issue(
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
                else await self._pseudonyms.code_at(req.provider, subject),
                budget=dt.timedelta(seconds=req.budget_seconds),
                now=now,
            )
        except UnknownParty as err:
            raise Failure.LINKAGE_DENIED.error(str(err)) from None
        return Brokered(
            allowed=True,
            reason=decision.reason,
            legal_reference=decision.legal_reference,
            permit=permit,
            sealed_subject=sealed,
            provider_key=await self._issuer.signing_key_of(req.provider),
        )

    def _act_refusal(self, req: BrokerRequest) -> Decision | None:
        """Why an act (or a private org's part in a linkage) is refused before the whitelist is
        asked; ``None`` when nothing is wrong with it."""
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
        if req.info not in self._catalog.orgs.get(req.provider, _NO_ORG).acts:
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
        found = await registry.fetch(self._pool, req.bpf, req.bpf_version, self._mode)
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
        return proof.payload.get("agree") is True and is_citizens(
            self._hub_public,
            proof.attestation,
            req.workflow_id,
            req.run_id,
            proof.step,
            proof.payload,
        )

    @activity.defn(name="hub.outcome")
    async def outcome(self, report: AttemptOutcomeReport) -> None:
        """Append what became of one of the calling flow's attempts to the hub's outcomes.

        The attempt is the calling workflow's own (Temporal says which); ``provided`` is taken
        only for an attempt the provider's gate recorded as admitted."""
        info = activity.info()
        if info.workflow_id is None or info.workflow_run_id is None:
            raise Failure.LINKAGE_REFUSED.error("an outcome comes from the attempt's own flow")
        key = attempt_key(info.workflow_id, info.workflow_run_id, report.step)
        try:
            await records.record_outcome(self._pool, key, report.outcome, self._issuer.recorder)
        except PermissionError as err:
            raise Failure.LINKAGE_REFUSED.error(str(err)) from None

    @activity.defn(name="hub.scan-target")
    async def scan_target(self, req: ScanRequest) -> ScanTarget:
        """The version a life-event scan starts, after checking it is triggered by that event."""
        found = await registry.fetch(self._pool, req.bpf, req.version, self._mode)
        if found is None:
            raise Failure.UNKNOWN_BPF.error(
                await why_not(self._pool, req.bpf, req.version, self._mode)
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
        # The scan's one linkage: the executor asking its own register who reaches the event.
        info = activity.info()
        now = dt.datetime.now(dt.UTC)
        decision = decide_linkage(
            self._catalog,
            self._whitelist.index,
            req.executor,
            req.executor,
            d.task,
            COHORT_ITEM,
            now,
        )
        permit = None
        if decision.allowed and decision.row is not None:
            permit, _ = await self._issuer.issue(
                workflow_id=info.workflow_id or "",
                run_id=info.workflow_run_id or "",
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
            permit=permit,
            provider_key=await self._issuer.signing_key_of(req.executor) if permit else None,
        )

    @activity.defn(name="hub.case-refs")
    async def case_refs(self, req: CaseRefRequest) -> list[str]:
        """Stable case references for the people a scan found (no personal data in them)."""
        return [self._pseudonyms.case_ref(req.executor, req.bpf, req.key, c) for c in req.codes]

    @activity.defn(name="hub.sign-resume")
    async def sign_resume(self, resume: Resume) -> str:
        """Sign the state a flow carries into its next run (continue-as-new)."""
        return resume_state(
            self._issuer.key, activity.info().workflow_id or "", resume.model_dump_json()
        )

    @activity.defn(name="hub.check-resume")
    async def check_resume(self, proof: ResumeProof) -> None:
        """Refuse a continuation whose state the hub did not sign for this workflow: a forged
        ``resume`` would skip the hub's checks, the steps already passed and their answers."""
        if not is_hubs_resume(
            self._hub_public,
            proof.signature,
            activity.info().workflow_id or "",
            proof.resume.model_dump_json(),
        ):
            raise Failure.MALFORMED_START.error(
                "the state this flow continues from is not the hub's (a forged resume)"
            )

    @activity.defn(name="hub.attest-starts")
    async def attest_starts(self, req: AttestRequest) -> list[str]:
        """The platform's word for each flow a life-event scan starts (see hub.resolve)."""
        return [
            trigger_start(self._issuer.key, wid, req.trigger, req.bpf, req.executor, subject)
            for wid, subject in req.starts
        ]

    @activity.defn(name="hub.remind")
    async def remind(self, req: ReminderRequest) -> None:
        """Queue a reminder for the executor to send (once per wait step)."""
        await self._pool.execute(
            "INSERT INTO hub.reminders (workflow_id, step, executor, subject_code, deadline)"
            " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (workflow_id, step) DO NOTHING",
            req.workflow_id,
            req.step,
            req.executor,
            req.subject,
            req.deadline,
        )

    @activity.defn(name="hub.translate")
    async def translate(self, req: TranslateRequest) -> list[str]:
        """Translate codes from one org's code space into another's."""
        if self._catalog.is_private(req.from_org) or self._catalog.is_private(req.to_org):
            raise Failure.LINKAGE_DENIED.error("a private org holds no one's code")
        try:
            return await self._pseudonyms.translate(req.from_org, req.codes, req.to_org)
        except UnknownSubject as err:
            raise Failure.UNKNOWN_SUBJECT.error(str(err)) from None
