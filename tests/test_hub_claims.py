"""The hub believes nothing a request claims about who asks or for what (attacker tests).

An agency holding only its own key file runs a workflow of its own (on its own queue, with a
workflow id naming itself, so what the hub answers is sealed to it) and calls the hub's
activities on the hub's queue with claims of its choosing: another requester, another task, a
hold nobody approved, a translation into another agency's codes, the platform's word on starts,
a reminder in another executor's outbox. Each is refused, or taken from Temporal instead.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel
from temporalio import workflow
from temporalio.common import RawValue
from temporalio.exceptions import ActivityError, ApplicationError
from temporalio.worker import Worker

from activities.agencies.synthetic import Person
from renkei.bpf import registry
from renkei.contracts.messages import (
    AttestRequest,
    BrokerRequest,
    CaseRefRequest,
    DisclosureHold,
    ParentFlow,
    ReminderRequest,
    ResolveRequest,
    TranslateRequest,
)
from renkei.contracts.names import hub_queue, workflow_id
from renkei.kernel import records
from workers.plugin import party_client

from .helpers import ask_hub, code, pick, workers

ROGUE = "kyokai-kenpo"


class Call(BaseModel):
    activity: str
    arg: dict[str, Any]


class Plan(BaseModel):
    prefix: str
    calls: list[Call]
    # A ResolveRequest's fields: the run first resolves itself with the hub, as a flow does,
    # and its linkage requests carry the ticket it got (unless they carry one of their own).
    resolve: dict[str, Any] | None = None


@workflow.defn(dynamic=True, sandboxed=False)
class HubCalls:
    """Calls each of the hub's activities as planned; returns what each call became. Dynamic:
    the rogue names its workflow type as it pleases (a BPF's id, say)."""

    @workflow.run
    async def run(self, args: Sequence[RawValue]) -> list[str]:
        plan = workflow.payload_converter().from_payload(args[0].payload, Plan)
        out = []
        ticket = None
        if plan.resolve is not None:
            try:
                resolved = await ask_hub(hub_queue(plan.prefix), "hub.resolve", plan.resolve, dict)
            except ActivityError as err:
                cause = err.cause
                return [f"resolve: {cause.type if isinstance(cause, ApplicationError) else cause}"]
            ticket = resolved.get("ticket")
        for call in plan.calls:
            arg = call.arg
            if ticket is not None and call.activity == "hub.broker":
                own = arg.get("ticket")
                if not own:
                    arg = {**arg, "ticket": ticket}
                elif "rewrite" in own and "text" in ticket:  # the run's genuine ticket,
                    # with fields of the text it signs rewritten
                    text = json.dumps({**json.loads(ticket["text"]), **own["rewrite"]})
                    arg = {**arg, "ticket": {**ticket, "text": text}}
                elif "rewrite" in own:  # the first form's: its fields rewritten
                    arg = {**arg, "ticket": {**ticket, **own["rewrite"]}}
            try:
                await ask_hub(hub_queue(plan.prefix), call.activity, arg)
                out.append("answered")
            except ActivityError as err:
                cause = err.cause
                out.append(cause.type or "" if isinstance(cause, ApplicationError) else str(cause))
        return out


async def _attack(
    client,
    settings,
    calls: list[Call],
    wid: str | None = None,
    *,
    party: str = ROGUE,
    workflow_type: str = "attack",
    rogue: Any = None,
    resolve: dict[str, Any] | None = None,
) -> list[str]:
    """The calls, from a workflow of ``party``'s own on a queue of its own (``rogue``: its
    client, if not one with its own key file only; ``resolve``: a ResolveRequest's fields, the
    workflow first resolving itself with the hub as a flow does)."""
    rogue = rogue or party_client(client, settings, [party])
    queue = f"{settings.task_queue_prefix}.attacker"
    async with Worker(rogue, task_queue=queue, workflows=[HubCalls]):
        handle = await rogue.start_workflow(
            workflow_type,
            Plan(prefix=settings.task_queue_prefix, calls=calls, resolve=resolve),
            id=wid or workflow_id(workflow_type, party, f"a-{uuid.uuid4().hex[:8]}"),
            task_queue=queue,
            result_type=list[str],
        )
        return await handle.result()


async def test_an_agency_cannot_ask_in_another_agencys_name_nor_translate_into_its_codes(
    client, pool, settings, catalog, live_whitelist
) -> None:
    """kyokai-kenpo (no row lets it read anyone's local tax) claims to be pref-tokyo running
    the child-rearing allowance check, and asks the hub for codes of pref-tokyo and of
    city-shibuya: every call is refused, and no record names pref-tokyo."""
    person = pick(settings, lambda h: h.municipality == "city-shibuya").members[0]
    found = await registry.fetch(pool, "child-rearing-allowance-income-check")
    assert found is not None
    d = found.definition
    own = code(settings, ROGUE, person)
    claim = {
        "requester": "pref-tokyo",
        "provider": "city-shibuya",
        "task": d.task,
        "info": "local-tax",
        "bpf": d.bpf,
        "bpf_version": d.version,
        "content_hash": found.content_hash,
        "step": "tax",
        "subject": own,
        "workflow_id": "",
        "run_id": "",
    }
    calls = [
        Call(
            activity="hub.translate",
            arg=TranslateRequest(from_org=ROGUE, to_org=other, codes=[own]).model_dump(),
        )
        for other in ("pref-tokyo", "city-shibuya")
    ] + [
        Call(activity="hub.broker", arg=BrokerRequest(**claim).model_dump()),
        # As itself, but for a flow it does not run.
        Call(
            activity="hub.broker",
            arg=BrokerRequest(**{**claim, "requester": ROGUE}).model_dump(),
        ),
    ]
    async with workers(client, pool, settings, catalog, live_whitelist):
        became = await _attack(client, settings, calls)
    assert became == ["LinkageRefused"] * 4, became
    assert not [
        r for r in await records.query(pool, provider="city-shibuya") if r.requester == ROGUE
    ]


async def test_a_hold_nobody_approved_is_not_taken_by_the_broker(
    client, pool, settings, catalog, live_whitelist
) -> None:
    """city-minato brokers its own lawful query, from a workflow of its own named like the
    BPF, with a disclosure hold no operator approved (the hold is checked when a run starts; a
    request straight to the broker skipped that): refused."""
    found = await registry.fetch(pool, "child-allowance-check")
    assert found is not None
    d = found.definition
    person = pick(settings, lambda h: h.municipality == "city-shibuya").members[0]
    hold = DisclosureHold(reason="investigation", until=dt.datetime(9999, 12, 31, tzinfo=dt.UTC))
    subject = code(settings, "city-minato", person)
    call = _minatos_tax_query(found, subject, hold=hold)
    async with workers(client, pool, settings, catalog, live_whitelist):
        became = await _attack(
            client,
            settings,
            [call],
            party="city-minato",
            workflow_type=d.bpf,
            resolve=_minatos_start(found, subject),
        )
    assert became == ["HoldNotApproved"], became


async def test_an_attempt_asked_again_about_someone_else_gets_no_permit(
    client, pool, settings, catalog, live_whitelist
) -> None:
    """city-minato brokers its own lawful query from a workflow of its own named like the BPF,
    about one person, then asks for the very same attempt (same run, same step) about another:
    the hub keeps one record per attempt, the first, so a permit for the second person would
    leave their look-up recorded as the first person's (where they never see it). Refused; the
    same request asked again (a retry) is answered."""
    found = await registry.fetch(pool, "child-allowance-check")
    assert found is not None
    d = found.definition
    family = pick(settings, lambda h: h.municipality == "city-shibuya" and h.kind == "family")
    first, second = family.members[0], family.members[1]

    def asked(person: Person) -> Call:
        return _minatos_tax_query(found, code(settings, "city-minato", person), budget_seconds=60)

    wid = workflow_id(d.bpf, "city-minato", f"a-{uuid.uuid4().hex[:8]}")
    async with workers(client, pool, settings, catalog, live_whitelist):
        became = await _attack(
            client,
            settings,
            [asked(first), asked(second), asked(first)],
            wid,
            party="city-minato",
            workflow_type=d.bpf,
            resolve=_minatos_start(found, code(settings, "city-minato", first)),
        )
    # Refused first as about another person than the run's (its ticket names the person; the
    # hub's one record per attempt refuses it too, for a step about someone else).
    assert became == ["answered", "LinkageRefused", "answered"], became
    kept = await records.query(pool, workflow_id=wid, keeper=records.HUB)
    assert [r.subject_code for r in kept] == [str(first.subject_id)]


def _minatos_tax_query(found: registry.RegisteredBpf, subject: str, **kw: Any) -> Call:
    """city-minato's request to the broker for the local-tax step of ``found`` (the child
    allowance check), asking city-shibuya about ``subject`` (its code at city-minato)."""
    d = found.definition
    step = next(s for s in registry_steps(d) if s[1] == "local-tax")
    return Call(
        activity="hub.broker",
        arg=BrokerRequest(
            requester="city-minato",
            provider="city-shibuya",
            task=d.task,
            info="local-tax",
            bpf=d.bpf,
            bpf_version=d.version,
            content_hash=found.content_hash,
            step=step[0],
            subject=subject,
            workflow_id="",
            run_id="",
            **kw,
        ).model_dump(mode="json"),
    )


def _minatos_start(found: registry.RegisteredBpf, subject: str, **kw: Any) -> dict[str, Any]:
    """city-minato's lawful counter start of ``found`` (the child allowance check), asking
    city-shibuya as the previous municipality, as its flow would resolve it with the hub."""
    d = found.definition
    return ResolveRequest(
        bpf=d.bpf,
        version=d.version,
        executor="city-minato",
        subject=subject,
        inputs={"previous_municipality": "city-shibuya"},
        **{"reads_signed_tickets": True, **kw},
    ).model_dump(mode="json")


def registry_steps(d) -> list[tuple[str, str]]:
    from renkei.bpf.models import QueryStep, walk

    return [(s.id, s.query.info) for s in walk(d.steps) if isinstance(s, QueryStep)]


async def test_the_platforms_word_and_another_executors_outbox_are_out_of_reach(
    client, pool, settings, catalog, live_whitelist
) -> None:
    """Outside a scan of its own, an executor gets neither the platform's word on starts nor
    case references; a reminder goes into the calling flow's own executor's outbox, whatever
    the request says."""
    target = workflow_id("coming-of-age-pension-notice", "city-minato", "le20270101-x")
    calls = [
        Call(
            activity="hub.attest-starts",
            arg=AttestRequest(
                bpf="coming-of-age-pension-notice",
                executor="city-minato",
                starts=[(target, "CODE")],
            ).model_dump(),
        ),
        Call(
            activity="hub.case-refs",
            arg=CaseRefRequest(
                executor="city-minato", bpf="coming-of-age-pension-notice", key="k", codes=["C"]
            ).model_dump(),
        ),
        Call(
            activity="hub.remind",
            arg=ReminderRequest(
                workflow_id=target,
                step="consent",
                executor="city-minato",
                subject="CODE",
                deadline=dt.datetime.now(dt.UTC),
            ).model_dump(mode="json"),
        ),
    ]
    async with workers(client, pool, settings, catalog, live_whitelist):
        wid = workflow_id("attack", ROGUE, f"a-{uuid.uuid4().hex[:8]}")
        became = await _attack(client, settings, calls, wid)
    assert became == ["NotTriggered", "NotTriggered", "answered"], became
    kept = await pool.fetch(
        "SELECT workflow_id, executor FROM hub.reminders WHERE workflow_id = ANY($1::text[])",
        [target, wid],
    )
    assert [(r["workflow_id"], r["executor"]) for r in kept] == [(wid, ROGUE)]


async def test_a_holder_of_the_old_shared_ring_cannot_ask_the_hub_as_anyone(
    client, pool, settings, catalog, live_whitelist
) -> None:
    """Every org's key file still carries the shared ring of the runs from before channels, and
    a payload under it names no writer. kyokai-kenpo runs a workflow of its own named as
    city-minato's run of the child allowance check, and asks the hub, under the ring, for
    city-minato's lawful local-tax query about a person: had the hub read it, Temporal would
    say city-minato asks, the hub would record the look-up in city-minato's name and answer
    the permit under the ring, which kyokai-kenpo reads (and takes to the provider). The hub's
    queue reads no payload under the ring: nothing is answered, nothing recorded."""
    from temporalio.client import Client

    from renkei.kernel import keys
    from renkei.kernel.codec import data_converter

    found = await registry.fetch(pool, "child-allowance-check")
    assert found is not None
    d = found.definition
    person = pick(settings, lambda h: h.municipality == "city-shibuya").members[0]
    ring = keys.load_org(settings, ROGUE).codec
    assert ring is not None, "the key file carries the old ring: the attack's premise"
    rogue = Client(
        client.service_client, namespace=client.namespace, data_converter=data_converter(ring)
    )
    wid = workflow_id(d.bpf, "city-minato", f"a-{uuid.uuid4().hex[:8]}")
    call = _minatos_tax_query(found, code(settings, "city-minato", person), budget_seconds=60)
    async with workers(client, pool, settings, catalog, live_whitelist):
        became = await _attack(client, settings, [call], wid, workflow_type=d.bpf, rogue=rogue)
    assert became != ["answered"], became
    assert await records.query(pool, workflow_id=wid) == []


async def test_a_run_the_hub_never_resolved_gets_no_permit(
    client, pool, settings, catalog, live_whitelist
) -> None:
    """Only the platform's life-event scan starts the coming-of-age notice, with its signed
    word, and only for an executor among the definition's owners, of a version in operation
    that conforms today: ``hub.resolve`` checks all that. city-minato runs a workflow of its
    own, named and typed as that notice's run, and asks the broker straight away for its
    first linkage (its own resident record of a person) as a life-event start: the hub
    brokers only for a run it resolved, so nothing is permitted and nothing recorded."""
    found = await registry.fetch(pool, "coming-of-age-pension-notice")
    assert found is not None
    d = found.definition
    person = pick(settings, lambda h: h.municipality == "city-minato").members[0]
    call = Call(
        activity="hub.broker",
        arg=BrokerRequest(
            trigger="life-event",
            requester="city-minato",
            provider="city-minato",
            task=d.task,
            info="resident-record",
            subject=code(settings, "city-minato", person),
            bpf=d.bpf,
            bpf_version=d.version,
            content_hash=found.content_hash,
            step="household",
            workflow_id="",
            run_id="",
            budget_seconds=60,
        ).model_dump(mode="json"),
    )
    wid = workflow_id(d.bpf, "city-minato", f"le-{uuid.uuid4().hex[:8]}")
    async with workers(client, pool, settings, catalog, live_whitelist):
        became = await _attack(
            client, settings, [call], wid, party="city-minato", workflow_type=d.bpf
        )
    assert became == ["LinkageRefused"], became
    assert await records.query(pool, workflow_id=wid) == []


async def test_a_run_brokers_only_as_the_hub_resolved_it(
    client, pool, settings, catalog, live_whitelist
) -> None:
    """city-minato's own workflow resolves a counter start of the child allowance check with
    the hub (lawfully: it gets its ticket), then asks the broker for its local-tax linkage as
    something else: as a portal start; with its own ticket's trigger rewritten; with the hub's
    genuine ticket of another run of the same case; and of another version's content. Each
    is refused; asked as resolved, it is answered."""
    from activities.claims import issue_ticket
    from renkei.contracts.messages import Pin
    from renkei.kernel import keys

    found = await registry.fetch(pool, "child-allowance-check")
    assert found is not None
    d = found.definition
    person = pick(settings, lambda h: h.municipality == "city-shibuya").members[0]
    subject = code(settings, "city-minato", person)
    wid = workflow_id(d.bpf, "city-minato", f"a-{uuid.uuid4().hex[:8]}")
    pin = Pin(bpf=d.bpf, version=d.version, content_hash=found.content_hash)
    elsewhere = issue_ticket(
        keys.load(settings).signer(),
        workflow_id=wid,
        run_id=str(uuid.uuid4()),
        pin=pin,
        trigger="portal",
        parent=None,
        mode=settings.mode,
    )

    def asked(**kw: Any) -> Call:
        call = _minatos_tax_query(found, subject, budget_seconds=60)
        return Call(activity=call.activity, arg={**call.arg, **kw})

    calls = [
        asked(trigger="portal"),
        asked(trigger="portal", ticket={"rewrite": {"trigger": "portal"}}),
        asked(trigger="portal", ticket=elsewhere.model_dump(mode="json")),
        asked(content_hash="0" * 64),
        asked(),
    ]
    became = []
    async with workers(client, pool, settings, catalog, live_whitelist):
        # a worker of this release (the ticket as signed text), then one from before, which
        # reads only the first form: the hub issues it that form, and holds it to it alike
        for current in (True, False):
            became.append(
                await _attack(
                    client,
                    settings,
                    calls,
                    wid if current else wid + "-before",
                    party="city-minato",
                    workflow_type=d.bpf,
                    resolve=_minatos_start(found, subject, reads_signed_tickets=current),
                )
            )
    assert became == [["LinkageRefused"] * 4 + ["answered"]] * 2, became


async def test_a_run_from_before_tickets_brokers_without_one_only_if_it_started_before(
    client, pool, settings, catalog, live_whitelist
) -> None:
    """Upgrading from a hub that issued no tickets, the hub brokers without one for the runs
    whose chain started before the moment the operator gives (``unticketed_runs_before``),
    as Temporal says when it started, and for no run started later."""
    found = await registry.fetch(pool, "child-allowance-check")
    assert found is not None
    d = found.definition
    person = pick(settings, lambda h: h.municipality == "city-shibuya").members[0]
    call = _minatos_tax_query(found, code(settings, "city-minato", person), budget_seconds=60)
    now = dt.datetime.now(dt.UTC)
    became = []
    for upgraded in (now + dt.timedelta(hours=1), now - dt.timedelta(hours=1)):
        upgrading = settings.model_copy(update={"unticketed_runs_before": upgraded})
        async with workers(client, pool, upgrading, catalog, live_whitelist):
            became += await _attack(
                client, upgrading, [call], party="city-minato", workflow_type=d.bpf
            )
    assert became == ["answered", "LinkageRefused"], became


async def test_the_hub_signs_no_continuation_of_a_run_it_never_resolved(
    client, pool, settings, catalog, live_whitelist
) -> None:
    """A continuation takes up the state the hub signed, and its ticket with it: so the hub
    signs a state only for the run its ticket names. city-minato's own workflow, named and
    typed as a run of the child allowance check that never resolved, hands the hub the state
    such a run would carry (the registered definition, the hub's own settings): without a
    ticket, and with the hub's genuine ticket of another run of the case. Neither is signed."""
    import base64

    from activities.claims import issue_ticket
    from renkei.contracts.messages import Pin, ResolvedRun, Resume
    from renkei.kernel import keys

    found = await registry.fetch(pool, "child-allowance-check")
    assert found is not None
    d = found.definition
    hub = keys.load(settings).signer()
    wid = workflow_id(d.bpf, "city-minato", f"a-{uuid.uuid4().hex[:8]}")
    pin = Pin(bpf=d.bpf, version=d.version, content_hash=found.content_hash)
    run = ResolvedRun(
        pin=pin,
        definition=d,
        info_schemas={},
        inputs={"previous_municipality": "city-shibuya"},
        task_queue_prefix=settings.task_queue_prefix,
        executor_roles=sorted(catalog.org_roles("city-minato")),
        time_scale=settings.test_time_scale if settings.mode == "test" else 1.0,
        history_limit=settings.history_limit,
        hub_signing=base64.b64encode(keys.public_raw(hub.public_key())).decode(),
    )
    elsewhere = issue_ticket(
        hub,
        workflow_id=wid,
        run_id=str(uuid.uuid4()),
        pin=pin,
        trigger="counter",
        parent=None,
        mode=settings.mode,
    )

    def resume(ticket: Any, signing: str = "hub.sign-resume") -> Call:
        state = Resume(
            run=run.model_copy(update={"ticket": ticket}), next_step=1, outputs={}, linkages=[]
        )
        return Call(activity=signing, arg=state.model_dump(mode="json"))

    async with workers(client, pool, settings, catalog, live_whitelist):
        became = await _attack(
            client,
            settings,
            [
                resume(None),
                resume(elsewhere),
                resume(None, "hub.sign-resume-text"),
                resume(elsewhere, "hub.sign-resume-text"),
            ],
            wid,
            party="city-minato",
            workflow_type=d.bpf,
        )
    assert became == ["MalformedStart"] * 4, became


@workflow.defn(name="child-allowance-check", sandboxed=False)
class CallsAChild:
    """An executor's own workflow, typed and named as a run of the child allowance check but
    never resolved, that starts a child of the type and id it chooses (a HubCalls plan: the
    child resolves itself, as a called flow does)."""

    @workflow.run
    async def run(self, child_type: str, child_id: str, plan: Plan) -> list[str]:
        return await workflow.execute_child_workflow(
            child_type,
            plan,
            id=child_id,
            task_queue=workflow.info().task_queue,
            result_type=list[str],
        )


async def test_a_flow_the_hub_never_resolved_cannot_call_a_child_into_a_permit(
    client, pool, settings, catalog, live_whitelist
) -> None:
    """city-minato's own workflow, never resolved, starts a child typed and named as a run of
    the coming-of-age notice (which only the platform's life-event scan starts), and the child
    resolves itself as called by it, as a counter start serving the notice's own purpose: a
    child's purpose, trigger and person are its caller's, so only a caller the hub resolved
    (its ticket, of the run Temporal says started the child) vouches for them. Refused without
    a ticket, and with the hub's genuine ticket of another run; nothing brokered."""
    from activities.claims import issue_ticket
    from renkei.contracts.messages import ParentFlow, Pin
    from renkei.kernel import keys

    found = await registry.fetch(pool, "coming-of-age-pension-notice")
    assert found is not None
    d = found.definition
    person = pick(settings, lambda h: h.municipality == "city-minato").members[0]
    subject = code(settings, "city-minato", person)
    rogue = party_client(client, settings, ["city-minato"])
    queue = f"{settings.task_queue_prefix}.caller"
    became = []
    async with (
        workers(client, pool, settings, catalog, live_whitelist),
        Worker(rogue, task_queue=queue, workflows=[CallsAChild, HubCalls]),
    ):
        for given in ("none", "another run's"):
            parent = workflow_id(
                "child-allowance-check", "city-minato", f"p-{uuid.uuid4().hex[:8]}"
            )
            purpose = ParentFlow(workflow_id=parent, bpf="child-allowance-check", task=d.task)
            ticket = issue_ticket(
                keys.load(settings).signer(),
                workflow_id=parent,
                run_id=str(uuid.uuid4()),
                pin=Pin(bpf=d.bpf, version=d.version, content_hash=found.content_hash),
                trigger="counter",
                parent=None,
                subject=subject,
                mode=settings.mode,
                purpose=purpose,
            )
            resolve = ResolveRequest(
                bpf=d.bpf,
                version=d.version,
                executor="city-minato",
                subject=subject,
                inputs={},
                parent=purpose,
                called_by=parent,
                caller_ticket=ticket if given != "none" else None,
            ).model_dump(mode="json")
            child = workflow_id(d.bpf, "city-minato", f"c-{uuid.uuid4().hex[:8]}")
            handle = await rogue.start_workflow(
                CallsAChild.run,
                args=[
                    d.bpf,
                    child,
                    Plan(prefix=settings.task_queue_prefix, calls=[], resolve=resolve),
                ],
                id=parent,
                task_queue=queue,
                result_type=list[str],
            )
            became += await handle.result()
            assert await records.query(pool, workflow_id=child) == []
    assert became == ["resolve: MalformedStart"] * 2, became


async def _resolve_then_call(resolve: dict[str, Any], child_id: str, plan: Plan) -> list[str]:
    """In a workflow: have the hub resolve it lawfully, then start its child (a HubCalls plan)
    with its ticket."""
    resolved = await ask_hub(hub_queue(plan.prefix), "hub.resolve", resolve, dict)
    assert plan.resolve is not None
    child = plan.model_copy(
        update={"resolve": {**plan.resolve, "caller_ticket": resolved["ticket"]}}
    )
    return await workflow.execute_child_workflow(
        plan.resolve["bpf"],
        child,
        id=child_id,
        task_queue=workflow.info().task_queue,
        result_type=list[str],
    )


@workflow.defn(name="one-stop-probe", sandboxed=False)
class ResolvesThenCalls:
    """An executor's own workflow, typed and named as a run of the one-stop probe, that the
    hub lawfully resolves and that then starts its child (a HubCalls plan) with its ticket."""

    @workflow.run
    async def run(self, resolve: dict[str, Any], child_id: str, plan: Plan) -> list[str]:
        return await _resolve_then_call(resolve, child_id, plan)


@workflow.defn(name="pinned-call-probe", sandboxed=False)
class ResolvesThenCallsPinned:
    """The same, typed and named as a run of the pinned call probe."""

    @workflow.run
    async def run(self, resolve: dict[str, Any], child_id: str, plan: Plan) -> list[str]:
        return await _resolve_then_call(resolve, child_id, plan)


async def test_a_child_brokers_only_for_the_purpose_its_caller_serves(
    client, pool, settings, catalog, live_whitelist
) -> None:
    """Where the catalog records a task as encompassing another, a child of that other task
    could serve a parent of either. city-minato's one-stop probe, lawfully resolved, calls the
    child allowance check as its definition says, and the child, lawfully resolved with its
    caller's ticket, asks the broker for its local-tax linkage claiming to serve its caller
    under the encompassing task (so the records would name a purpose its caller never had):
    refused. Asked for the purpose it serves, it is answered."""
    from .helpers import register_fixture

    await register_fixture(pool, "one-stop-probe.yaml")
    parent_bpf = await registry.fetch(pool, "one-stop-probe")
    found = await registry.fetch(pool, "child-allowance-check")
    assert parent_bpf is not None and found is not None
    task = found.definition.task
    assert parent_bpf.definition.task == task
    wider = "school-entry-notice"  # recorded here, for this hub only, to encompass the task
    widened = catalog.model_copy(
        update={
            "tasks": {
                **catalog.tasks,
                wider: catalog.tasks[wider].model_copy(update={"includes": [task]}),
            }
        }
    )
    assert widened.serves_purpose(wider, task) and not catalog.serves_purpose(wider, task)
    person = pick(settings, lambda h: h.municipality == "city-shibuya").members[0]
    subject = code(settings, "city-minato", person)
    rogue = party_client(client, settings, ["city-minato"])
    queue = f"{settings.task_queue_prefix}.caller"
    parent = workflow_id("one-stop-probe", "city-minato", f"p-{uuid.uuid4().hex[:8]}")
    served = ParentFlow(workflow_id=parent, bpf="one-stop-probe", task=task)
    claimed = served.model_copy(update={"task": wider})
    resolve_parent = ResolveRequest(
        bpf="one-stop-probe",
        version=parent_bpf.definition.version,
        executor="city-minato",
        subject=subject,
        inputs={},
        reads_signed_tickets=True,
    ).model_dump(mode="json")
    resolve_child = _minatos_start(found, subject, parent=served, called_by=parent)
    calls = [
        _minatos_tax_query(found, subject, budget_seconds=60, parent=claimed),
        _minatos_tax_query(found, subject, budget_seconds=60, parent=served),
    ]
    child = workflow_id(found.definition.bpf, "city-minato", f"c-{uuid.uuid4().hex[:8]}")
    async with (
        workers(client, pool, settings, widened, live_whitelist),
        Worker(rogue, task_queue=queue, workflows=[ResolvesThenCalls, HubCalls]),
    ):
        handle = await rogue.start_workflow(
            ResolvesThenCalls.run,
            args=[
                resolve_parent,
                child,
                Plan(prefix=settings.task_queue_prefix, calls=calls, resolve=resolve_child),
            ],
            id=parent,
            task_queue=queue,
            result_type=list[str],
        )
        became = await handle.result()
    assert became == ["LinkageRefused", "answered"], became
    seen = await records.query(pool, workflow_id=child)
    assert seen and all(r.purpose_task == task for r in seen), seen


@workflow.defn(name="child-allowance-check", sandboxed=False)
class Continues:
    """An executor's own workflow, typed and named as a run of the child allowance check:
    ``capture``: it resolves itself lawfully and has the hub sign its state, as a flow about to
    continue does, and returns the signed state; ``continue``: the same, then continues as new
    into ``take`` with it; ``take``: it hands the hub a signed state to take up."""

    @workflow.run
    async def run(self, mode: str, prefix: str, given: dict[str, Any]) -> Any:
        from renkei.contracts.messages import ResolvedRun, Resume, ResumeProof, SignedResume

        def hub(name: str, arg: Any, result_type: Any) -> Any:
            return ask_hub(hub_queue(prefix), name, arg, result_type)

        if mode == "take":
            try:
                await hub("hub.check-resume", given, dict | None)
            except ActivityError as err:
                cause = err.cause
                return cause.type if isinstance(cause, ApplicationError) else str(cause)
            return "taken up"
        resolved = ResolvedRun.model_validate(await hub("hub.resolve", given, dict))
        state = Resume(run=resolved, next_step=1, outputs={}, linkages=[])
        if mode.endswith("-text"):  # the state as the exact text the hub signs
            signed = SignedResume.model_validate(await hub("hub.sign-resume-text", state, dict))
            proof = ResumeProof(resume=state, signed=signed).model_dump(mode="json")
        else:
            signature = await hub("hub.sign-resume", state, str)
            proof = ResumeProof(resume=state, signature=signature).model_dump(mode="json")
        if mode.startswith("continue"):
            workflow.continue_as_new(args=["take", prefix, proof])
        return proof


async def test_a_signed_state_is_taken_up_only_by_the_run_continued_from_it(
    client, pool, settings, catalog, live_whitelist
) -> None:
    """The hub signs a run's state as it continues, and the continuation gets its ticket from
    it. city-minato's own run, lawfully resolved, has its state signed and ends; city-minato
    then starts a new run under the same workflow id and hands the hub that state, as if it
    continued from it (so it would run as the hub resolved the first then, skipping a version
    stop since). Refused; the same state taken up by the run Temporal continued from it is
    taken up."""
    found = await registry.fetch(pool, "child-allowance-check")
    assert found is not None
    person = pick(settings, lambda h: h.municipality == "city-shibuya").members[0]
    resolve = _minatos_start(found, code(settings, "city-minato", person))
    rogue = party_client(client, settings, ["city-minato"])
    queue = f"{settings.task_queue_prefix}.continues"
    prefix = settings.task_queue_prefix
    became = []
    async with (
        workers(client, pool, settings, catalog, live_whitelist),
        Worker(rogue, task_queue=queue, workflows=[Continues]),
    ):
        for form in ("", "-text"):  # the state as dumped, and as the exact text signed
            wid = workflow_id(found.definition.bpf, "city-minato", f"a-{uuid.uuid4().hex[:8]}")
            captured = await rogue.execute_workflow(
                Continues.run, args=[f"capture{form}", prefix, resolve], id=wid, task_queue=queue
            )
            became.append(
                await rogue.execute_workflow(
                    Continues.run, args=["take", prefix, captured], id=wid, task_queue=queue
                )
            )
            wid = workflow_id(found.definition.bpf, "city-minato", f"b-{uuid.uuid4().hex[:8]}")
            became.append(
                await rogue.execute_workflow(
                    Continues.run,
                    args=[f"continue{form}", prefix, resolve],
                    id=wid,
                    task_queue=queue,
                )
            )
    assert became == ["MalformedStart", "taken up"] * 2, became


async def test_a_child_resolves_only_as_the_version_its_callers_step_calls(
    client, pool, settings, catalog, live_whitelist
) -> None:
    """A call step that names a version calls that version: city-minato's pinned call probe,
    lawfully resolved, starts its child as another version of the child allowance check than
    its step names. Refused by the call check (before any version is looked up); the version
    named resolves."""
    from .helpers import register_fixture

    await register_fixture(pool, "pinned-call-probe.yaml")
    caller = await registry.fetch(pool, "pinned-call-probe")
    found = await registry.fetch(pool, "child-allowance-check", 1)
    assert caller is not None and found is not None
    person = pick(settings, lambda h: h.municipality == "city-shibuya").members[0]
    subject = code(settings, "city-minato", person)
    rogue = party_client(client, settings, ["city-minato"])
    queue = f"{settings.task_queue_prefix}.caller"
    became = []
    async with (
        workers(client, pool, settings, catalog, live_whitelist),
        Worker(rogue, task_queue=queue, workflows=[ResolvesThenCallsPinned, HubCalls]),
    ):
        for version in (7, 1):
            parent = workflow_id("pinned-call-probe", "city-minato", f"p-{uuid.uuid4().hex[:8]}")
            served = ParentFlow(
                workflow_id=parent, bpf="pinned-call-probe", task=caller.definition.task
            )
            child_start = _minatos_start(found, subject, parent=served, called_by=parent)
            child = workflow_id("child-allowance-check", "city-minato", f"c-{uuid.uuid4().hex[:8]}")
            handle = await rogue.start_workflow(
                ResolvesThenCallsPinned.run,
                args=[
                    ResolveRequest(
                        bpf="pinned-call-probe",
                        version=caller.definition.version,
                        executor="city-minato",
                        subject=subject,
                        inputs={},
                        reads_signed_tickets=True,
                    ).model_dump(mode="json"),
                    child,
                    Plan(
                        prefix=settings.task_queue_prefix,
                        calls=[],
                        resolve={**child_start, "version": version},
                    ),
                ],
                id=parent,
                task_queue=queue,
                result_type=list[str],
            )
            became += await handle.result()
    assert became == ["resolve: MalformedStart"], became


async def test_a_run_is_resolved_once(client, pool, settings, catalog, live_whitelist) -> None:
    """city-minato's own run resolves a lawful counter start about one person, then asks the
    hub to resolve it again: as it was (a retry: the same ticket), about another person, as a
    portal start. A run holding the hub's word about two people
    would be shown by the portal to one while its linkages are about the other: each other
    start is refused, the hub keeps the one ticket it issued, which the portal reads, and no
    one changes or removes it. The run then brokers as it was resolved."""
    import asyncpg

    from activities.claims import kept_ticket, runs_ticket
    from renkei.kernel import keys

    from .helpers import sdk

    found = await registry.fetch(pool, "child-allowance-check")
    assert found is not None
    d = found.definition
    person, other = pick(settings, lambda h: h.municipality == "city-shibuya").members[:2]
    subject = code(settings, "city-minato", person)
    start = _minatos_start(found, subject)
    again = [
        start,
        _minatos_start(found, code(settings, "city-minato", other)),
        {**start, "trigger": "portal"},
    ]
    wid = workflow_id(d.bpf, "city-minato", f"a-{uuid.uuid4().hex[:8]}")
    async with workers(client, pool, settings, catalog, live_whitelist):
        became = await _attack(
            client,
            settings,
            [Call(activity="hub.resolve", arg=a) for a in again]
            + [_minatos_tax_query(found, subject, budget_seconds=60)],
            wid,
            party="city-minato",
            workflow_type=d.bpf,
            resolve=start,
        )
        run = (await client.get_workflow_handle(wid).describe()).run_id or ""
        portal_reads = await sdk(client, settings).resolved_ticket(
            wid, lambda w, r: kept_ticket(pool, w, r)
        )
    assert became == ["answered", "MalformedStart", "MalformedStart", "answered"], became
    hub = keys.load(settings).signer().public_key()
    kept = runs_ticket(hub, await kept_ticket(pool, wid, run), wid, run, settings.mode)
    assert kept is not None and kept.subject == subject and kept.trigger == "counter"
    assert portal_reads[0] == run
    assert runs_ticket(hub, portal_reads[1], wid, run, settings.mode) == kept
    for statement in (
        "UPDATE hub.run_tickets SET ticket = ticket WHERE workflow_id = $1",
        "DELETE FROM hub.run_tickets WHERE workflow_id = $1",
    ):
        try:
            await pool.execute(statement, wid)
        except asyncpg.InsufficientPrivilegeError:
            continue
        raise AssertionError(f"the database took {statement.split()[0]}")
