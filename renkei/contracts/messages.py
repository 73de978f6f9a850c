"""The parameters and results of the interpreter workflow and its activities.

One pydantic model per parameter, so fields with defaults can be added without breaking flows
that are already running. None of these ever becomes a workflow id, a search attribute or an
error message: subject codes travel only inside payloads.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from collections.abc import Sequence
from typing import Annotated, Any, Literal

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from renkei.bpf.models import BpfDefinition, QueryStep
from renkei.contracts.retries import MAX_BUDGET_SECONDS, budget_seconds
from renkei.kernel import attest
from renkei.kernel.permits import AnswerReceipt, SignedPermit
from renkei.kernel.sealing import Sealed

CASE_REF = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
_DIGIT_RUNS = re.compile(r"[0-9]+")
_CODE_RUNS = re.compile(r"[A-Z2-7]{20,}")
# three groups of four digits, not part of a longer run of groups
_WRITTEN = re.compile(r"(?<![0-9])(?<![0-9][-._])[0-9]{4}[-._][0-9]{4}[-._][0-9]{4}(?![-._]?[0-9])")


def _joined(written: str) -> str:
    return re.sub(r"[-._]", "", written)


def _number_check_digit(first_eleven: str) -> int:
    """The check digit of an individual number (個人番号) from its first eleven digits."""
    total = sum(
        int(d) * (n + 1 if n <= 6 else n - 5) for n, d in enumerate(reversed(first_eleven), 1)
    )
    return 0 if total % 11 <= 1 else 11 - total % 11


def personal_in_case_ref(case_ref: str) -> str | None:
    """What in a caller's case reference looks like a person's identifier (it goes into the
    workflow id, in clear in Temporal): an individual number (twelve digits whose last is their
    check digit), or a subject code (twenty base32 capitals). None if nothing does."""
    # As written bare, or in its usual written form (four, four, four: 1234-5678-9018)
    for run in [*_DIGIT_RUNS.findall(case_ref), *map(_joined, _WRITTEN.findall(case_ref))]:
        if len(run) == 12 and _number_check_digit(run[:11]) == int(run[11]):
            return "an individual number (個人番号)"
    if _CODE_RUNS.search(case_ref):
        return "a subject code"
    return None


def check_case_ref(case_ref: str) -> str:
    """``case_ref``, or ValueError if it looks like a person's identifier."""
    found = personal_in_case_ref(case_ref)
    if found is not None:
        raise ValueError(
            f"a case reference must name no one, and this one looks like {found}: use the"
            " agency's own case number"
        )
    return case_ref


def _utc_if_naive(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)


# A moment; one written without a time zone is taken as UTC (compared with aware times later).
Moment = Annotated[dt.datetime, AfterValidator(_utc_if_naive)]

# What a party's request may name, and how long each may be. The parties write what a request
# names into their access records (a provider records a refused request as it was claimed), and
# the records' columns are bounded (migration 0071): a request past these bounds is refused as
# it is read, before anyone records it. The platform's own names are far shorter.
# None holds a control character: PostgreSQL's text takes no NUL (a record naming one could not
# be written, and would fail the group of records written with it), and a refusal that names a
# value carries no line of the sender's making: no C0 or C1 control, no line or paragraph
# separator (U+2028, U+2029: lines to str.splitlines and to many a log viewer), and no
# directional formatting (U+200E, U+200F, U+202A-U+202E, U+2066-U+2069), which turns what a
# reader sees of the text around it.
PRINTABLE = r"^[^\x00-\x1f\x7f-\x9f\u200e\u200f\u2028-\u202e\u2066-\u2069]*$"
NAME_LIMIT = 200  # an org, task, item, action, step, flow or trigger
Name = Annotated[str, Field(max_length=NAME_LIMIT, pattern=PRINTABLE)]
WorkflowId = Annotated[str, Field(max_length=600, pattern=PRINTABLE)]
RunId = Annotated[str, Field(max_length=100, pattern=PRINTABLE)]
SUBJECT_LIMIT = 512
SubjectCode = Annotated[str, Field(max_length=SUBJECT_LIMIT, pattern=PRINTABLE)]
_PRINTABLE = re.compile(PRINTABLE)


def carried(value: str, limit: int = NAME_LIMIT) -> bool:
    """Whether a request can carry ``value`` (a name, or a subject code with ``limit``
    :data:`SUBJECT_LIMIT`): at most ``limit`` characters, none a control character."""
    return len(value) <= limit and _PRINTABLE.match(value) is not None


class DisclosureHold(BaseModel):
    """Keeps a run's access records from the citizen's view until a date (e.g. an ongoing
    investigation). The hold is itself part of every record it covers."""

    model_config = ConfigDict(frozen=True)

    until: Moment
    reason: str = Field(
        pattern=r"^[a-z][a-z0-9-]{1,63}$",
        description="a reason code from the fixed list (renkei.kernel.holds.REASONS)",
    )
    approval: uuid.UUID | None = Field(
        default=None,
        description="the hold request a platform operator approved; without it the hub refuses"
        " the start",
    )


class ParentFlow(BaseModel):
    """The flow a child runs for: its purpose (task) is the parent's, and its records say so."""

    model_config = ConfigDict(frozen=True)

    workflow_id: WorkflowId
    bpf: Name
    task: Name


# The interpreter's paths a start written by this release asks for (``StartFlow.paths``): every
# path of ``lean-paths-v2`` taken without a patch marker, and the run's first search attributes
# set past its direct linkages (``workflows.interpreter``). Every start the platform writes
# carries it; a start without it (written before) takes the paths its history's markers say.
PATHS = 3
# The paths of a continuation that carries its state as the exact text the hub signed
# (``StartFlow.signed_resume``): a worker from before, which reads no such field, would take
# the continuation for a fresh start and run the flow again from its first step; asked for
# paths newer than its own, it fails the continuation's workflow task instead, until a worker of
# this release takes it.
RESUMED_TEXT_PATHS = 4
# The paths of a start whose run asks the hub to resolve it over the hub's endpoint
# (``RENKEI_HUB_TRANSPORT=direct``): from a local activity of its own (``DIRECT_RESOLVE``,
# ``activities.direct``) instead of an activity on the hub's queue, one workflow task and no
# activity task fewer. A worker from before would ask on the hub's queue, and a worker of this
# release replaying that history would not: asked for paths newer than its own, it fails the
# start's workflow task instead, until a worker of this release takes it.
RESOLVED_DIRECTLY_PATHS = 5
# The newest paths this release's worker takes.
NEWEST_PATHS = RESOLVED_DIRECTLY_PATHS


class StartFlow(BaseModel):
    """What a trigger supplies to start one flow."""

    bpf: str
    version: int | None = None
    executor: str
    subject: str = Field(description="the subject's code at the executor")
    inputs: dict[str, Any] = Field(default_factory=dict)
    trigger: Literal["counter", "portal", "life-event", "notification"] = "counter"
    case_ref: str = Field(
        pattern=CASE_REF, description="the caller's case reference; no personal data"
    )
    hold: DisclosureHold | None = None
    resume: Resume | None = Field(
        default=None, description="set only by a flow continuing as new: where it left off"
    )
    parent: ParentFlow | None = Field(
        default=None, description="set only by a flow calling this one as its child"
    )
    caller_ticket: Ticket | None = Field(
        default=None,
        description="set only by a flow calling this one as its child: the hub's ticket of the"
        " calling run",
    )
    attestation: str | None = Field(
        default=None,
        description="set only by the platform's scan and notification paths: their signature"
        " on a life-event or notification start (a child inherits its caller's)",
    )
    resume_signature: str | None = Field(
        default=None,
        description="set only by a flow continuing as new: the hub's signature on ``resume``",
    )
    signed_resume: SignedResume | None = Field(
        default=None,
        description="set only by a flow continuing as new: where it left off, as the exact text"
        " the hub signed (in place of ``resume`` and ``resume_signature``)",
    )
    paths: int | None = Field(
        default=None,
        description="the interpreter's paths the run takes (``PATHS``), set by the platform as it"
        " writes the start; none in a start written before, which takes its markers' paths",
    )


class Pin(BaseModel):
    """The exact definition a run executes: recorded in its history and memo."""

    model_config = ConfigDict(frozen=True)

    bpf: str
    version: int
    content_hash: str


class RunTicket(BaseModel):
    """The hub's word that it resolved this very run (``hub.resolve``), or took up its
    continuation (``hub.check-resume``): the run, and what it was resolved as. The hub brokers
    a run's linkages only under its own ticket for that run, so a workflow of an executor's own
    that never went through the hub's checks of a start (who operates the version, its
    conformance today, a life event's attestation) gets no permit, and a run brokers as the
    trigger and parent it was resolved with, whatever its requests say."""

    workflow_id: str
    run_id: str
    pin: Pin
    trigger: str
    parent: str | None = Field(default=None, description="the flow it serves: its workflow id")
    subject: str = Field(default="", description="the run's person: their code at the executor")
    mode: str = Field(default="operation", description="the mode of the hub that resolved it")
    purpose: ParentFlow | None = Field(
        default=None,
        description="the top-level flow the run serves (itself, for a top-level run): its"
        " purpose is a child's",
    )
    signature: str = Field(default="", description="the hub's (renkei.kernel.attest)")


class SignedTicket(BaseModel):
    """A :class:`RunTicket` as the hub issues it now: the exact text it signed (the ticket's
    fields, as JSON) beside its signature. Opaque to the flow, which only carries it; the hub
    verifies the text as it was signed and reads the fields from it. A release that adds a
    field to the ticket changes no byte of it, so a run waiting for months across upgrades
    keeps its ticket. (The first tickets were signed over the fields as the model dumps them,
    which a field added later changes: a ``RunTicket`` carried as such is still read, for the
    runs that hold one, and still issued to a worker from before, which reads only that form:
    ``ResolveRequest.reads_signed_tickets``.)"""

    form: Literal["run-ticket/v2"] = "run-ticket/v2"
    text: str = Field(description="the ticket's fields (a RunTicket's, without signature), JSON")
    signature: str = Field(description="the hub's, over the text (renkei.kernel.attest)")


# A run's ticket as it travels: the signed text (issued now), or the first form's fields.
Ticket = SignedTicket | RunTicket


class ResolveRequest(BaseModel):
    bpf: str
    version: int | None
    executor: str
    subject: str
    inputs: dict[str, Any]
    parent: ParentFlow | None = None
    trigger: str = "counter"
    attestation: str | None = None
    hold: DisclosureHold | None = None
    called_by: str | None = Field(
        default=None, description="the workflow that started this one, as Temporal reports it"
    )
    caller_ticket: Ticket | None = Field(
        default=None, description="a child's: the hub's ticket of the run that called it"
    )
    broker_first: bool = Field(
        default=False,
        description="broker the run's first step with its start, if it is a linkage nothing"
        " the flow computes comes before (one call to the hub instead of two)",
    )
    broker_ahead: bool = Field(
        default=False,
        description="broker the run's leading linkages with its start: the query steps it"
        " starts with whose provider and subject the definition fixes (``renkei.bpf.ahead``),"
        " each with a lookahead budget (supersedes ``broker_first``)",
    )
    reads_signed_tickets: bool = Field(
        default=False,
        description="the flow's worker reads a ticket as the hub's signed text (SignedTicket);"
        " a worker from before reads only the first form, which the hub then issues",
    )


class ResolvedRun(BaseModel):
    """What the hub tells the interpreter before the first step."""

    pin: Pin
    definition: BpfDefinition
    info_schemas: dict[str, str]
    inputs: dict[str, Any]
    task_queue_prefix: str
    executor_roles: list[str]
    time_scale: float = Field(
        default=1.0, description="test mode only: waits and sleeps last this fraction"
    )
    history_limit: int = Field(
        default=10_000, description="continue as new past this many history events"
    )
    hub_signing: str | None = Field(
        default=None,
        description="the hub's public key (base64), pinned in the run: a citizen's answer must"
        " carry the portal's signature under it",
    )
    first: FirstLinkage | None = Field(
        default=None,
        description="the run's first linkage, brokered with its start (see ``broker_first``)",
    )
    ahead: list[FirstLinkage] = Field(
        default_factory=list,
        description="the run's leading linkages, brokered ahead with its start (see"
        " ``broker_ahead``), in step order",
    )
    brokers_ahead: bool = Field(
        default=False,
        description="the hub brokers ahead: the leading linkages with the start, and the flow"
        " may ask for the linkages that certainly follow one in the same call; a hub from"
        " before says nothing, and the flow asks for each at its step",
    )
    brokers_groups: bool = Field(
        default=False,
        description="the hub brokers linkages asked for at the same moment in one call"
        " (``hub.broker-group``); a hub from before says nothing, and gets one call each",
    )
    takes_outcomes: bool = Field(
        default=False,
        description="the hub takes the flow's outcome reports with its next broker request and in"
        " batches (``hub.outcomes``); a hub from before says nothing, and gets one call each",
    )
    collects_receipts: bool = Field(
        default=False,
        description="the hub collects ``provided`` from the provider's own receipt: the flow"
        " tells every other outcome, never a ``provided``; a hub from before says nothing, and"
        " is told ``provided`` with the receipt",
    )
    kit_clock: bool = Field(
        default=False,
        description="a conformance-kit run (only a test-mode hub says so): its waits and sleeps"
        " end when the kit advances the run's clock, never on a timer",
    )
    links_directly: bool = Field(
        default=False,
        description="the providers answer over the direct channel: the flow's own worker asks"
        " each provider's endpoint (a local activity, ``activities.direct``) instead of"
        " scheduling the linkage on the provider's queue; a hub from before says nothing",
    )
    signs_resume_text: bool = Field(
        default=False,
        description="the hub signs a continuing run's state as the exact text it carries"
        " (``hub.sign-resume-text``); a hub from before says nothing, and signs it as dumped",
    )
    ticket: Ticket | None = Field(
        default=None,
        description="the hub's ticket for this run: every broker request carries it (a hub"
        " from before issues none)",
    )


class TranslateRequest(BaseModel):
    from_org: str
    to_org: str
    codes: list[str]


class CohortParams(BaseModel):
    """Who reaches a life event in a period: the birth dates that qualify (no personal data)."""

    age: int
    on: str
    period_start: dt.date
    period_end: dt.date
    born_from: dt.date
    born_to: dt.date = Field(description="exclusive")


class LinkageRequest(BaseModel):
    """One linkage, as the provider's worker receives it.

    ``permit`` is the hub's signed permit for this attempt and ``sealed_subject`` the provider's
    code for the subject, sealed to the provider: no other party (the executor, another agency,
    an operator) can read it. The gate verifies the permit and opens the code, and hands the
    provider the request with ``subject`` set to it. (Runs from before permits sent the code in
    ``subject`` itself.)
    """

    trigger: Name = "counter"
    params: dict[Name, Any] = Field(
        default_factory=dict,
        max_length=200,
        description="query parameters that name no one: a cohort's, in an org's scan of its own"
        " register (a provider's gate refuses them in any query to another party)",
    )
    requester: Name
    provider: Name
    task: Name
    info: Name
    subject: SubjectCode
    bpf: Name
    bpf_version: int
    content_hash: Name
    step: Name
    permit: SignedPermit | None = None
    sealed_subject: Sealed | None = None
    send: dict[Name, Any] = Field(
        default_factory=dict,
        max_length=200,
        description="an act step's request to a partner: exactly the fields its permit names,"
        " which the action's request takes, nothing else (empty for a query)",
    )


class DirectLinkage(BaseModel):
    """One linkage attempt as the executor's worker sends it over the direct channel, sealed
    between the executor and the provider: the attempt (flow, run, step) the hub's permit must
    name, the activity type the provider's queue would have run, and the request itself."""

    workflow_id: str = Field(max_length=600)
    run_id: str = Field(max_length=100)
    step: str = Field(max_length=200)
    activity_type: str = Field(max_length=200)
    timeout_seconds: float = Field(
        gt=0, le=86_400, description="how long the provider may take over this one attempt"
    )
    request: LinkageRequest
    trace: dict[str, str] = Field(
        default_factory=dict,
        max_length=4,
        description="the flow's trace context (W3C traceparent, tracestate), sealed as a"
        " Temporal header is: the provider's spans join the flow's one trace",
    )


class DirectFailure(BaseModel):
    """A provider's failure over the direct channel: what an activity's would carry."""

    type: str = Field(max_length=100)
    message: str = Field(max_length=2000)
    non_retryable: bool
    details: list[Any] = Field(default_factory=list, max_length=10)


class DirectReply(BaseModel):
    """The provider's reply over the direct channel, sealed back to the executor: its signed
    answer, or its failure, for the attempt it names (a reply to another attempt, replayed by
    anyone on the network, is not taken)."""

    workflow_id: str
    run_id: str
    step: str
    answer: dict[str, Any] | None = None
    failure: DirectFailure | None = None


class DirectResolve(BaseModel):
    """A run's ``hub.resolve`` as the executor's worker sends it over the hub's endpoint,
    sealed between the executor and the hub: the run it is for (which the hub checks with
    Temporal: running, on the executor's own control queue, of the BPF's type, started by no
    other flow) and the request the run would have sent as an activity."""

    workflow_id: str = Field(max_length=600)
    run_id: str = Field(max_length=100)
    request: ResolveRequest
    trace: dict[str, str] = Field(
        default_factory=dict,
        max_length=4,
        description="the flow's trace context (W3C traceparent, tracestate), sealed",
    )


class DirectResolved(BaseModel):
    """The hub's reply over its endpoint, sealed back to the executor: the resolved run, or the
    hub's refusal, for the run it names (a reply for another run is not taken)."""

    workflow_id: str
    run_id: str
    run: ResolvedRun | None = None
    failure: DirectFailure | None = None


class ConsentProof(BaseModel):
    """The citizen's own answer to a flow's consent step, as the portal attested it: what the
    hub checks before it permits an act whose legal basis is consent."""

    step: str
    payload: dict[str, Any] = Field(default_factory=dict)
    attestation: str | None = None


class AttemptOutcomeReport(BaseModel):
    """What became of one of the flow's linkage attempts, as the flow learnt it (the attempt is
    the calling workflow's own step; the hub takes the workflow and run from Temporal)."""

    step: Name
    outcome: Literal["provided", "denied", "no_answer", "failed", "cancelled", "not_asked"]
    receipt: AnswerReceipt | None = Field(
        default=None,
        description="the provider's receipt for the attempt (its signature over the permit and"
        " the digest of its answer): the hub takes ``provided`` only on one that verifies",
    )


class BrokerRequest(LinkageRequest):
    """The executor asks the hub for one linkage; ``subject`` is the executor's code."""

    workflow_id: WorkflowId
    run_id: RunId
    hold: DisclosureHold | None = None
    parent: ParentFlow | None = None
    budget_seconds: int = Field(
        default=3600,
        ge=1,
        le=86_400,
        description="how long the attempt may take with its retries: the permit's lifetime",
    )
    outcomes: list[AttemptOutcomeReport] = Field(
        default_factory=list,
        description="what became of the flow's earlier attempts, not yet told to the hub: the"
        " hub appends them before it decides this one (one call instead of one per attempt)",
    )
    send_fields: list[Name] = Field(
        default_factory=list,
        max_length=NAME_LIMIT,
        description="an act: the names of the fields it sends (the hub never sees their values)",
    )
    consent: ConsentProof | None = Field(
        default=None, description="an act: the citizen's attested consent to it"
    )
    ticket: Ticket | None = Field(
        default=None, description="the hub's ticket for the calling run (``ResolvedRun.ticket``)"
    )


class Brokered(BaseModel):
    """The hub's answer: if the whitelist permits the linkage, a signed permit and the
    provider's code for the subject, sealed to the provider. (``subject``, the code in clear,
    is only in the histories of runs from before permits.)"""

    allowed: bool
    subject: str | None = None
    reason: str
    legal_reference: str
    permit: SignedPermit | None = None
    sealed_subject: Sealed | None = None
    provider_key: str | None = Field(
        default=None,
        description="the provider's registered public signing key (base64): its answer must be"
        " signed with it",
    )


class FirstLinkage(BaseModel):
    """A run's first linkage, brokered by the hub as it resolved the run."""

    step: str
    brokered: Brokered


def linkage_asked(
    step: QueryStep,
    *,
    provider: str,
    subject: str,
    requester: str,
    task: str,
    trigger: str,
    pin: Pin,
    workflow_id: str,
    run_id: str,
    hold: DisclosureHold | None,
    parent: ParentFlow | None,
    ticket: Ticket | None,
    after: Sequence[QueryStep] = (),
) -> BrokerRequest:
    """What a flow asks the hub for its query ``step`` (the flow at the step, or the hub for
    a run's first linkage as it resolves the run: both ask the same).

    ``after``: asked ahead, the steps the flow runs before it reaches ``step``; its permit
    must then outlive them too (the lookahead budget): each may take its own budget and one
    attempt's time more (see :func:`ahead_budget`)."""
    q = step.query
    return BrokerRequest(
        trigger=trigger,
        requester=requester,
        provider=provider,
        task=task,
        info=q.info,
        subject=subject,
        bpf=pin.bpf,
        bpf_version=pin.version,
        content_hash=pin.content_hash,
        step=step.id,
        workflow_id=workflow_id,
        run_id=run_id,
        hold=hold,
        parent=parent,
        budget_seconds=ahead_budget(step, after),
        ticket=ticket,
    )


def ahead_budget(step: QueryStep, after: Sequence[QueryStep] = ()) -> int:
    """The seconds a permit for ``step`` must last if it is brokered before the steps
    ``after`` run: the step's own budget (its timeout times its attempts, with the pauses
    between) plus, for each step before it, that step's budget and one attempt's time to spare
    (the longest the flow may spend there). At most a day, as any budget."""
    total = sum(
        budget_seconds(s.query.timeout, s.query.retry.max_attempts, s.query.retry.maximum_interval)
        + int(s.query.timeout.total_seconds())
        for s in after
    )
    q = step.query
    own = budget_seconds(q.timeout, q.retry.max_attempts, q.retry.maximum_interval)
    return min(own + total, MAX_BUDGET_SECONDS)


class LinkageOutcome(BaseModel):
    step: str
    provider: str
    info: str
    outcome: Literal["provided", "denied", "failed"]


class Resume(BaseModel):
    """A flow's state when it continues as new, at a boundary between top-level steps."""

    run: ResolvedRun
    next_step: int
    outputs: dict[str, dict[str, Any]]
    linkages: list[LinkageOutcome]
    generation: int = 1


class Response(BaseModel):
    """What answers a ``wait`` step (by update or signal): the step and its typed payload."""

    step: str
    payload: dict[str, Any] = Field(default_factory=dict)
    by: Literal["citizen", "agency", "operator"] = "agency"
    attestation: str | None = Field(
        default=None,
        description="for an answer by the citizen: the signature of the citizen's own portal"
        " session (renkei.kernel.attest); an answer claiming the citizen without it is refused",
    )


class Acknowledged(BaseModel):
    step: str
    at: dt.datetime


class Waiting(BaseModel):
    """What a flow waits for, until when, and what the respondent is shown."""

    step: str
    for_: str
    deadline: dt.datetime
    remind_at: dt.datetime | None = None
    fields: dict[str, dict[str, Any]] = Field(default_factory=dict)
    preview: dict[str, dict[str, Any]] = Field(default_factory=dict)


class KitAdvance(BaseModel):
    """The conformance kit's clock moved to ``to`` (taken only by a kit run)."""

    to: dt.datetime


class KitClock(BaseModel):
    """A kit run's clock: where the kit has moved it, and when each of its pending waits and
    sleeps is due (empty for any other run)."""

    now: dt.datetime | None = None
    due: list[dt.datetime] = Field(default_factory=list)


class ReminderRequest(BaseModel):
    workflow_id: str
    step: str
    executor: str
    subject: str
    deadline: dt.datetime


class ScanRequest(BaseModel):
    """One life-event scan: whom the executor's register shows reaching the event, and when."""

    bpf: str
    version: int | None = None
    executor: str
    age: int
    on: Literal["birthday", "fiscal-year-start", "school-year-start"]
    day: dt.date | None = Field(
        default=None, description="the scan's day; default: the schedule's time (or today)"
    )
    attestation: str | None = Field(
        default=None,
        description="the platform's signature on the scan (renkei.kernel.attest): only its"
        " schedules (or its operator) start scans",
    )

    def attested(self, key: Ed25519PrivateKey) -> ScanRequest:
        """This request, signed by the platform."""
        return self.model_copy(
            update={
                "attestation": attest.scan_request(
                    key, self.bpf, self.version, self.executor, self.age, self.on
                )
            }
        )


class ScanTarget(BaseModel):
    """The hub's answer to a scan: the version it starts, where the register is asked, and the
    hub's permit for that one query."""

    task: str
    version: int
    content_hash: str
    task_queue_prefix: str
    permit: SignedPermit | None = None
    provider_key: str | None = Field(
        default=None, description="the register's registered public signing key (base64)"
    )


class ScanResult(BaseModel):
    bpf: str
    executor: str
    period_start: dt.date
    period_end: dt.date
    found: int
    started: int
    already: int


class AttestRequest(BaseModel):
    """The platform's word for each flow a scan starts: (workflow id, subject code) pairs."""

    trigger: Literal["life-event"] = "life-event"
    bpf: str
    executor: str
    starts: list[tuple[str, str]]


class SignedResume(BaseModel):
    """The state a flow carries into its next run as the exact JSON text of a :class:`Resume`
    the hub signed: its signature holds over that text whatever a later release adds to the
    model (a continuation straddling the hub's upgrade is still taken up)."""

    form: Literal["resume/v2"] = "resume/v2"
    text: str
    signature: str

    def resume(self) -> Resume:
        """The state, read from the very text the hub signed."""
        return Resume.model_validate_json(self.text)


class ResumeProof(BaseModel):
    """The state a flow carries into its next run, and the hub's signature on it: on the state
    as dumped (``signature``, the first form), or on its exact text (``signed``)."""

    resume: Resume
    signature: str | None = None
    signed: SignedResume | None = Field(
        default=None, description="the state as the exact text the hub signed (it prevails)"
    )


class CaseRefRequest(BaseModel):
    executor: str
    bpf: str
    key: str = Field(description="what makes the case unique: the period or the event id")
    codes: list[str]


class FlowResult(BaseModel):
    """The end of a flow that ran to completion (accepted or rejected by its own logic)."""

    outcome: Literal["completed", "rejected"]
    reason: str | None = None
    result: dict[str, Any] = Field(default_factory=dict)
    pin: Pin
    linkages: list[LinkageOutcome] = Field(default_factory=list)


StartFlow.model_rebuild()


ResolvedRun.model_rebuild()  # its first linkage is a message defined below it
