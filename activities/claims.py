"""What the hub believes of a request, and what it takes from Temporal or its own registry.

Any process that reaches Temporal can run a workflow of its own and call the hub's activities on
the hub's queue with a request of its making. The hub therefore takes nothing a request claims
about *who* asks, or *for what*, on the request's word:

- who asks is the executor the calling workflow's id names (``<bpf>/<executor>/<case>``, taken
  from Temporal's activity info, not from the request), and the workflow's type is the BPF;
- for what is the registered definition the request pins (bpf, version, content hash): its task,
  its query steps (the step asked must be one of them, asking that item, of that provider when
  the definition names the provider), its triggers;
- how long the permit lasts is the step's budget as the definition gives it (its timeout, attempts
  and pauses; for a linkage the hub may broker ahead, with the steps it may be brokered ahead of,
  :func:`renkei.bpf.ahead.lead`), however long a request asks;
- a disclosure hold counts only if a platform operator approved it for that case;
- the run is one the hub resolved (or whose continuation it took up): a linkage request carries
  the hub's ticket for that very run (:class:`~renkei.contracts.messages.SignedTicket`), and is
  asked under the version, trigger and parent the run was resolved with; a workflow that never
  went through ``hub.resolve`` (the owner check, the version stop, today's conformance, a life
  event's attestation) gets no permit;
- a parent flow it claims must be the same executor's, of a purpose that covers the child's,
  and the flow Temporal says started the calling run, or its caller, and so on up
  (:func:`check_parent`): a run claiming
  another case as its parent would carry that case's hold and trigger;
- a code is translated only into the calling flow's executor's space, and only from a provider
  the hub permitted in this very run;
- the platform's word on starts and case references goes only to the platform's scans.

Each check raises a non-retryable :class:`~renkei.contracts.failures.Failure`; none reads more
than the registry (read once per process: ``registry.pinned``) or, for a hold or a translation, one indexed row.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass

import asyncpg
from cachetools import LRUCache
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import ValidationError
from temporalio import activity
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from activities.approved import ApprovalCheck
from renkei.bpf import registry
from renkei.bpf.ahead import lead
from renkei.bpf.models import ActStep, BpfDefinition, QueryStep, walk
from renkei.contracts.failures import Failure
from renkei.contracts.messages import (
    BrokerRequest,
    ParentFlow,
    Pin,
    RunTicket,
    SignedTicket,
    Ticket,
    ahead_budget,
)
from renkei.contracts.names import SCAN_ID_PREFIX, control_queue, executor_of, workflow_id
from renkei.contracts.retries import BROKER_GROUP_LIMIT, budget_seconds
from renkei.kernel import attest, holds, records
from whitelist.models import Catalog


@dataclass(frozen=True)
class Caller:
    """The calling flow, as Temporal says (never as the request says)."""

    workflow_id: str
    run_id: str
    workflow_type: str
    executor: str


# (workflow id, run id) → the workflow that started it (id, run id), as Temporal said: a run's
# parent never changes. Bounded: the hub meets every child run in turn.
PARENTS_REMEMBERED = 10_000
_PARENTS: LRUCache[tuple[str, str], tuple[str, str] | None] = LRUCache(PARENTS_REMEMBERED)
# How many callers up a claimed caller is looked for (a call's call, and so on).
CALL_DEPTH = 8


async def parent_of(workflow_id: str, run_id: str) -> tuple[str, str] | None:
    """The workflow (id, run id) that started that run, as Temporal says (``None``: no
    workflow did). Asked once per run."""
    key = (workflow_id, run_id)
    if key in _PARENTS:
        return _PARENTS[key]
    handle = activity.client().get_workflow_handle(workflow_id, run_id=run_id or None)
    described = await handle.describe()
    found = (
        (described.parent_id, described.parent_run_id or "")
        if described.parent_id is not None
        else None
    )
    _PARENTS[key] = found
    return found


async def continues(workflow_id: str, run_id: str) -> str:
    """The run this run continues, as Temporal says (its first event): empty for a run that
    continues none (one started afresh, even under the workflow id of a run that ended)."""
    handle = activity.client().get_workflow_handle(workflow_id, run_id=run_id)
    async for event in handle.fetch_history_events(page_size=1):
        return event.workflow_execution_started_event_attributes.continued_execution_run_id
    return ""


async def check_parent(claimed: str, who: Caller) -> None:
    """Refuse a run that claims as the flow it serves one Temporal does not say started it,
    or started its caller, and so on up (a flow a call calls serves the top-level flow)."""
    run: tuple[str, str] | None = (who.workflow_id, who.run_id)
    for _ in range(CALL_DEPTH):
        assert run is not None
        run = await parent_of(*run)
        if run is None:
            break
        if run[0] == claimed:
            return
    raise Failure.MALFORMED_START.error(
        "the flow it claims to serve is not the one that started it, nor one of its callers"
    )


def _ticket_message(ticket: RunTicket) -> bytes:
    """The first form's message: the fields as the model dumps them (a field added to the model
    later changes it, hence the second form)."""
    return attest.fields_message(
        "run-ticket/v1", ticket.model_dump(mode="json", exclude={"signature"})
    )


def _signed_text(text: str) -> bytes:
    return f"renkei/run-ticket/v2|{text}".encode()


def issue_ticket(
    key: Ed25519PrivateKey,
    *,
    workflow_id: str,
    run_id: str,
    pin: Pin,
    trigger: str,
    parent: str | None,
    subject: str = "",
    mode: str = "operation",
    purpose: ParentFlow | None = None,
) -> SignedTicket:
    """The hub's ticket for a run it resolved, or whose continuation it took up: the exact
    text of its fields, signed."""
    text = RunTicket(
        workflow_id=workflow_id,
        run_id=run_id,
        pin=pin,
        trigger=trigger,
        parent=parent,
        subject=subject,
        mode=mode,
        purpose=purpose,
    ).model_dump_json(exclude={"signature"})
    return SignedTicket(text=text, signature=attest.sign(key, _signed_text(text)))


def issue_first_form(key: Ed25519PrivateKey, signed: SignedTicket) -> RunTicket:
    """The same ticket in the first form (its fields, signed as the model dumps them), for a
    worker from before, which reads only that form."""
    fields = RunTicket.model_validate_json(signed.text)
    return fields.model_copy(update={"signature": attest.sign(key, _ticket_message(fields))})


def hubs_ticket(hub: Ed25519PublicKey, ticket: Ticket) -> RunTicket | None:
    """The ticket's fields, if the hub signed them (``None``: it did not): read from the very
    text it signed, or, for a ticket of the first form, as the fields it carries."""
    if isinstance(ticket, RunTicket):
        return ticket if attest.holds(hub, ticket.signature, _ticket_message(ticket)) else None
    if not attest.holds(hub, ticket.signature, _signed_text(ticket.text)):
        return None
    try:
        return RunTicket.model_validate_json(ticket.text)
    except ValidationError:
        return None


def runs_ticket(
    hub: Ed25519PublicKey, ticket: Ticket | None, workflow_id: str, run_id: str, mode: str
) -> RunTicket | None:
    """The ticket's fields, if the hub signed them for exactly this workflow's run, as a hub of
    ``mode`` (``None``: no ticket, not the hub's, another run's, even of the same workflow, or
    one the conformance kit's test-mode hub signed with the same key)."""
    found = hubs_ticket(hub, ticket) if ticket is not None else None
    if found is None or (found.workflow_id, found.run_id, found.mode) != (
        workflow_id,
        run_id,
        mode,
    ):
        return None
    return found


# The one ticket the hub issues for each run it resolves or whose continuation it takes up
# (``hub.run_tickets``, migration 0066): written before the hub answers with it, so a run that
# asks again gets the ticket it got, and the hub issues it no other (about another person, say).
_KEEP = (
    "WITH written AS (INSERT INTO hub.run_tickets (workflow_id, run_id, ticket, signature)"
    " VALUES ($1, $2, $3, $4) ON CONFLICT (workflow_id, run_id) DO NOTHING"
    " RETURNING ticket, signature)"
    " SELECT ticket, signature, true AS written FROM written UNION ALL"
    " SELECT ticket, signature, false FROM hub.run_tickets WHERE workflow_id = $1 AND run_id = $2"
)
_KEPT = "SELECT ticket, signature FROM hub.run_tickets WHERE workflow_id = $1 AND run_id = $2"


async def keep_ticket(
    pool: asyncpg.Pool, workflow_id: str, run_id: str, ticket: SignedTicket
) -> tuple[SignedTicket, bool]:
    """Write ``ticket`` as the run's, unless it has one: the run's ticket, as first written,
    and whether it was written now."""
    row = await pool.fetchrow(_KEEP, workflow_id, run_id, ticket.text, ticket.signature)
    if row is None:  # written by another ask at once, after this statement's snapshot
        row = await pool.fetchrow(_KEPT, workflow_id, run_id)
    if row is None:  # written, then gone: the table refuses that to the hub's role
        raise RuntimeError("a run's ticket was written, then was gone")
    kept = SignedTicket(text=row["ticket"], signature=row["signature"])
    return kept, bool(row.get("written", False))


async def kept_ticket(pool: asyncpg.Pool, workflow_id: str, run_id: str) -> SignedTicket | None:
    """The ticket the hub wrote for that run (``None``: none, such as a run the hub resolved
    before it kept them). Whoever reads it checks the hub's signature (:func:`runs_ticket`): a
    row the database's role wrote is no word of the hub's."""
    row = await pool.fetchrow(_KEPT, workflow_id, run_id)
    return None if row is None else SignedTicket(text=row["ticket"], signature=row["signature"])


# The first run of a workflow (id, run id) → when that first run started, as Temporal said.
_CHAIN_STARTS: LRUCache[tuple[str, str], dt.datetime] = LRUCache(PARENTS_REMEMBERED)


async def chain_started(workflow_id: str, run_id: str) -> dt.datetime:
    """When the first run of this run's chain of continuations started, as Temporal says; a
    chain whose first run was of another workflow type than this run counts as started now."""
    key = (workflow_id, run_id)
    if key in _CHAIN_STARTS:
        return _CHAIN_STARTS[key]
    client = activity.client()
    described = await client.get_workflow_handle(workflow_id, run_id=run_id).describe()
    kind = described.workflow_type
    first = described.raw_description.workflow_execution_info.first_run_id or run_id
    if first != run_id:
        described = await client.get_workflow_handle(workflow_id, run_id=first).describe()
    started = described.start_time if described.workflow_type == kind else dt.datetime.now(dt.UTC)
    _CHAIN_STARTS[key] = started
    return started


@dataclass(frozen=True)
class Claimed:
    """What the hub takes from the registered definition for a linkage request it believes."""

    sub_task: str | None  # the ordinance-level task the definition's step names, if any
    budget_seconds: int  # the longest the attempt may take: the permit lasts no longer
    held: bool = False  # the request's hold covers the person this linkage is about
    sends: tuple[str, ...] | None = None  # an act's: the fields its definition's step sends


@dataclass(frozen=True)
class Calling:
    """The run asking the hub now, as Temporal says: from the activity's info on the hub's
    queue, or, over the hub's endpoint (:mod:`activities.direct`), from Temporal's description of
    the run the sealed request names (:func:`asked_by`)."""

    workflow_id: str
    run_id: str
    workflow_type: str
    asked_at: dt.datetime  # when the activity was scheduled, or the request arrived


_CALLING: ContextVar[Calling | None] = ContextVar("renkei_hub_calling", default=None)


def calling() -> Calling:
    """The run asking the hub now (see :class:`Calling`)."""
    found = _CALLING.get()
    if found is not None:
        return found
    info = activity.info()
    return Calling(
        info.workflow_id or "",
        info.workflow_run_id or "",
        info.workflow_type or "",
        info.scheduled_time,
    )


@contextlib.contextmanager
def asked_by(run: Calling) -> Iterator[None]:
    """Within the block, the hub's methods answer ``run`` (over the hub's endpoint, where
    there is no activity: the endpoint has checked with Temporal that the run is as named)."""
    token = _CALLING.set(run)
    try:
        yield
    finally:
        _CALLING.reset(token)


async def described_run(client: Client, prefix: str, workflow_id: str, run_id: str) -> Calling:
    """The run ``workflow_id``/``run_id`` as Temporal describes it, when it asks the hub over
    the hub's endpoint: refused unless it is running, on the control queue of the executor its
    workflow id names, and started by no other flow (a flow another flow calls asks on the hub's
    queue, where the hub checks its caller). What an activity's info says of the run that
    scheduled it, Temporal's description says of the run a request names."""
    refuse = Failure.MALFORMED_START.error
    executor = executor_of(workflow_id)
    if executor is None or not run_id:
        raise refuse("the hub answers renkei's flows only, each run by its id")
    try:
        described = await client.get_workflow_handle(workflow_id, run_id=run_id).describe()
    except RPCError as err:
        if err.status == RPCStatusCode.INVALID_ARGUMENT:
            raise refuse("no such run") from None
        if err.status == RPCStatusCode.NOT_FOUND:
            # No run asks for another that does not exist: a hub whose Temporal does not know
            # it (yet, or another namespace) is asked again, not the run refused for good.
            raise Failure.MALFORMED_START.error(
                "no such run, as the hub's Temporal says", non_retryable=False
            ) from None
        raise
    if described.status != WorkflowExecutionStatus.RUNNING:
        raise refuse("a run that has ended is resolved no more")
    if described.task_queue != control_queue(prefix, executor):
        raise refuse("a run is resolved on its executor's own control queue only")
    if described.parent_id is not None:
        raise refuse("a flow another flow calls resolves on the hub's queue, with its caller")
    return Calling(workflow_id, run_id, described.workflow_type, dt.datetime.now(dt.UTC))


def caller(info: Calling | None = None) -> Caller:
    """The flow calling the hub now; refused unless its id names an executor."""
    found = info or calling()
    wid = found.workflow_id
    executor = executor_of(wid)
    if executor is None or not found.run_id:
        raise Failure.LINKAGE_REFUSED.error("the hub answers renkei's flows only")
    return Caller(wid, found.run_id, found.workflow_type, executor)


class Claims:
    """The hub's checks of what a calling flow claims (see the module's docstring)."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        catalog: Catalog,
        approvals: ApprovalCheck | None = None,
        *,
        hub: Ed25519PublicKey | None = None,
        unticketed_before: dt.datetime | None = None,
        mode: str = "operation",
    ) -> None:
        """``approvals``: a hub in operation's (none in test mode, where the kit runs drafts).
        ``hub``: the hub's public key, whose signature on a hold's approval and on a run's
        ticket counts (``None``: no hold is taken, and no linkage brokered).
        ``unticketed_before``: upgrading from a hub that issued no tickets, the moment of the
        upgrade; a run whose first run started before it brokers without one."""
        self._hub = hub
        self._unticketed_before = unticketed_before
        self._mode = mode  # a ticket counts only from a hub of this mode (not the kit's)
        # tickets verified: (form, text, signature) → their fields
        self._tickets: LRUCache[tuple[str, str, str], RunTicket] = LRUCache(PARENTS_REMEMBERED)
        self._pool = pool
        self._catalog = catalog
        self._approvals = approvals

    async def definition(
        self, bpf: str, version: int, content_hash: str, executor: str
    ) -> BpfDefinition:
        """The registered definition a run of ``executor``'s pins; refused if nothing is
        registered so, or (in operation) if the conformance body did not approve it or the
        executor did not put it into operation by its own signature."""
        try:
            found = await registry.pinned(self._pool, bpf, version, content_hash)
        except registry.DefinitionAltered as e:
            raise Failure.LINKAGE_REFUSED.error(str(e)) from None
        if found is None:
            raise Failure.LINKAGE_REFUSED.error(
                f"{bpf} v{version} with that content is not a registered definition"
            )
        if self._approvals is not None and (
            unapproved := await self._approvals.why_not(bpf, version, content_hash, executor)
        ):
            raise Failure.LINKAGE_REFUSED.error(unapproved)
        return found

    async def broker(self, req: BrokerRequest, who: Caller) -> Claimed:
        """Refuse a linkage request whose claims the hub does not hold to be true; return the
        ordinance-level task (``sub_task``) the registered definition's step names, if any, and
        the budget its permit gets: the request's, at most the step's (the definition says
        both, never the request)."""
        refuse = Failure.LINKAGE_REFUSED.error
        if req.requester != who.executor:
            raise refuse(
                f"a linkage is asked by the flow's executor ({who.executor}), not {req.requester}"
            )
        if req.bpf != who.workflow_type:
            raise refuse(f"a flow of {who.workflow_type} asks for {req.bpf}'s linkage")
        ticket = await self.resolved(req, who)
        d = await self.definition(req.bpf, req.bpf_version, req.content_hash, who.executor)
        if req.task != d.task:
            raise refuse(f"{d.bpf} v{d.version} serves {d.task}, not {req.task}")
        step = next(
            (s for s in walk(d.steps) if isinstance(s, QueryStep | ActStep) and s.id == req.step),
            None,
        )
        if step is None:
            raise refuse(f"{d.bpf} v{d.version} has no query or act step {req.step!r}")
        sub_task: str | None = None
        sends: tuple[str, ...] | None = None
        if isinstance(step, ActStep):  # a partner's act: the action, of the partner it names
            asked, named = {step.act.action}, step.act.partner
            a = step.act
            # What the act sends, by name, is the definition's: the hub records a refusal
            # naming any field the action does not take, and names no field the flow made up.
            if sorted(req.send_fields) != sorted(a.send):
                other = sorted(set(req.send_fields) ^ set(a.send))[:5]
                raise refuse(
                    f"step {req.step} of {d.bpf} sends {sorted(a.send)}: the request claims"
                    f" otherwise ({', '.join(other) or 'a field named more than once'})"
                )
            sends = tuple(sorted(a.send))
            longest = budget_seconds(a.timeout, a.retry.max_attempts, a.retry.maximum_interval)
        else:
            sub_task = step.query.sub_task
            # brokered ahead, it must outlive the steps before it too; never longer
            longest = ahead_budget(step, lead(d.steps, step.id, BROKER_GROUP_LIMIT))
            asked = {
                step.query.info,
                *([sub] if (sub := getattr(step.query, "sub_info", None)) else []),
            }
            named = step.query.provider
        about = step.query.about if isinstance(step, QueryStep) else None
        if ticket is not None and about is None and req.subject != ticket.subject:
            raise refuse(f"step {req.step} of {d.bpf} is about the run's own person")
        if req.info not in asked:
            raise refuse(
                f"step {req.step} of {d.bpf} asks for {sorted(asked - {None})}, not {req.info}"
            )
        if "${" not in named and not named.startswith("role:") and req.provider != named:
            raise refuse(f"step {req.step} of {d.bpf} asks {named}, not {req.provider}")
        if req.parent is None and req.trigger not in d.trigger_kinds():
            raise refuse(f"{d.bpf} is not started by {req.trigger!r}")
        if req.parent is not None:
            parent = req.parent
            await check_parent(parent.workflow_id, who)
            if (
                executor_of(parent.workflow_id) != who.executor
                or parent.workflow_id.split("/", 1)[0] != parent.bpf
                or not self._catalog.serves_purpose(parent.task, d.task)
            ):
                raise refuse(
                    "the flow it claims to serve is not its executor's, or not of a"
                    " purpose that covers it"
                )
        held = False
        if req.hold is not None:
            try:
                approved = await holds.check(
                    self._pool,
                    who.executor,
                    req.hold.approval,
                    req.hold.reason,
                    req.hold.until,
                    req.parent.workflow_id if req.parent else who.workflow_id,
                    hub=self._hub,
                )
            except holds.HoldNotApproved as err:
                raise Failure.HOLD_NOT_APPROVED.error(str(err)) from None
            # A linkage about someone else in a held case (a spouse's income, say) is recorded
            # without the hold: it keeps only its own person's records from their view.
            held = holds.covers(approved, req.subject)
        return Claimed(
            sub_task=sub_task,
            budget_seconds=min(req.budget_seconds, longest),
            held=held,
            sends=sends,
        )

    async def resolved(self, req: BrokerRequest, who: Caller) -> RunTicket | None:
        """Refuse a linkage request unless the hub resolved the calling run as the request
        says: its ticket is the hub's, for this very run, of the version, trigger and parent
        the request names. Answer the ticket's fields (``None``: a run from before tickets)."""
        refuse = Failure.LINKAGE_REFUSED.error
        if req.ticket is None:
            if self._unticketed_before is not None and (
                await chain_started(who.workflow_id, who.run_id) < self._unticketed_before
            ):
                return None  # a run from before tickets, still in flight
            raise refuse("the hub brokers only for a run it resolved (the request has no ticket)")
        # The whole ticket is the key, its signature with what it signs: a signature is the
        # hub's only over its own text.
        seen = (
            ("v2", req.ticket.text, req.ticket.signature)
            if isinstance(req.ticket, SignedTicket)
            else ("v1", req.ticket.model_dump_json(), req.ticket.signature)
        )
        ticket = self._tickets.get(seen)
        if ticket is None:
            ticket = hubs_ticket(self._hub, req.ticket) if self._hub is not None else None
            if ticket is None:
                raise refuse("the run's ticket is not the hub's")
            self._tickets[seen] = ticket
        if (ticket.workflow_id, ticket.run_id) != (who.workflow_id, who.run_id):
            raise refuse("the request carries another run's ticket")
        if ticket.mode != self._mode:
            raise refuse(f"the run was resolved by a hub in {ticket.mode} mode")
        if ticket.pin != Pin(bpf=req.bpf, version=req.bpf_version, content_hash=req.content_hash):
            raise refuse("the run was resolved to another version than the request names")
        if ticket.trigger != req.trigger:
            raise refuse(f"the run was started by {ticket.trigger!r}, not {req.trigger!r}")
        # A child serves exactly the flow (and its purpose) it was resolved to serve: the
        # records name that purpose, so a request may not name another task of the same flow.
        if req.parent != (ticket.purpose if ticket.parent is not None else None):
            raise refuse("the run was resolved to serve another flow than the request names")
        return ticket

    async def translation(self, from_org: str, to_org: str, who: Caller) -> None:
        """A flow gets codes translated into its own executor's space only, and only from a
        provider the hub permitted in this very run (the codes in that provider's answer)."""
        if to_org != who.executor:
            raise Failure.LINKAGE_REFUSED.error(
                f"codes are translated into the flow's executor's space ({who.executor}) only"
            )
        permitted = await self._pool.fetchval(
            "SELECT EXISTS (SELECT 1 FROM records.access_records WHERE keeper = $1"
            " AND workflow_id = $2 AND run_id = $3 AND provider = $4 AND outcome = 'allowed')",
            records.HUB,
            who.workflow_id,
            who.run_id,
            from_org,
        )
        if not permitted:
            raise Failure.LINKAGE_REFUSED.error(
                f"no linkage with {from_org} was permitted in this run: nothing to translate"
            )

    def scan(self, bpf: str, executor: str, who: Caller) -> None:
        """The platform's word on starts, and case references, go to its scans only: the
        calling workflow is a scan (``scan/<bpf>/<executor>/...``) of that BPF and executor."""
        parts = who.workflow_id.removeprefix(SCAN_ID_PREFIX).split("/")
        if (
            not who.workflow_id.startswith(SCAN_ID_PREFIX)
            or len(parts) < 2
            or parts[0] != bpf
            or who.executor != executor
        ):
            raise Failure.NOT_TRIGGERED.error(
                "only a life-event scan of this flow and executor asks for that"
            )

    def starts(self, bpf: str, executor: str, starts: list[tuple[str, str]]) -> None:
        """The flows a scan starts are that BPF's and executor's."""
        for wid, _ in starts:
            if executor_of(wid) != executor or wid.split("/", 1)[0] != bpf:
                raise Failure.NOT_TRIGGERED.error(f"a scan of {bpf} starts {bpf}'s flows only")
            if workflow_id(bpf, executor, wid.split("/", 2)[2]) != wid:
                raise Failure.NOT_TRIGGERED.error("not a flow's workflow id")
