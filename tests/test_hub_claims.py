"""The hub believes nothing a request claims about who asks or for what (attacker tests).

An agency holding only its own key file runs a workflow of its own (on its own queue, with a
workflow id naming itself, so what the hub answers is sealed to it) and calls the hub's
activities on the hub's queue with claims of its choosing: another requester, another task, a
hold nobody approved, a translation into another agency's codes, the platform's word on starts,
a reminder in another executor's outbox. Each is refused, or taken from Temporal instead.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from pydantic import BaseModel
from temporalio import workflow
from temporalio.common import RawValue, RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError
from temporalio.worker import Worker

from activities.agencies.synthetic import Person
from renkei.bpf import registry
from renkei.contracts.messages import (
    AttestRequest,
    BrokerRequest,
    CaseRefRequest,
    DisclosureHold,
    ReminderRequest,
    TranslateRequest,
)
from renkei.contracts.names import hub_queue, workflow_id
from renkei.kernel import records
from workers.plugin import party_client

from .helpers import code, pick, workers

ROGUE = "kyokai-kenpo"


class Call(BaseModel):
    activity: str
    arg: dict[str, Any]


class Plan(BaseModel):
    prefix: str
    calls: list[Call]


@workflow.defn(dynamic=True, sandboxed=False)
class HubCalls:
    """Calls each of the hub's activities as planned; returns what each call became. Dynamic:
    the rogue names its workflow type as it pleases (a BPF's id, say)."""

    @workflow.run
    async def run(self, args: Sequence[RawValue]) -> list[str]:
        plan = workflow.payload_converter().from_payload(args[0].payload, Plan)
        out = []
        for call in plan.calls:
            try:
                await workflow.execute_activity(
                    call.activity,
                    call.arg,
                    task_queue=hub_queue(plan.prefix),
                    start_to_close_timeout=timedelta(seconds=20),
                    retry_policy=RetryPolicy(maximum_attempts=1),
                )
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
) -> list[str]:
    """The calls, from a workflow of ``party``'s own on a queue of its own (``rogue``: its
    client, if not one with its own key file only)."""
    rogue = rogue or party_client(client, settings, [party])
    queue = f"{settings.task_queue_prefix}.attacker"
    async with Worker(rogue, task_queue=queue, workflows=[HubCalls]):
        handle = await rogue.start_workflow(
            workflow_type,
            Plan(prefix=settings.task_queue_prefix, calls=calls),
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
    call = _minatos_tax_query(found, code(settings, "city-minato", person), hold=hold)
    async with workers(client, pool, settings, catalog, live_whitelist):
        became = await _attack(client, settings, [call], party="city-minato", workflow_type=d.bpf)
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
        )
    assert became == ["answered", "PermissionError", "answered"], became
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
