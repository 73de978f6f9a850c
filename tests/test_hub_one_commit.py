"""The hub writes the records of all the linkages of one call in one transaction.

A flow's start brokers its leading linkages ahead (``hub.resolve``), its parallel lanes ask for
theirs together (``hub.broker-group``): the requester's and the hub's records of every linkage
of that call go in one transaction, one durable commit, before any permit of them is issued. A
linkage refused in the group is refused alone: the others are brokered and recorded as before.

The transaction that inserted a row is its ``xmin``: records chained as they are written
(inline chaining, which these tests take) are never updated, so rows with one ``xmin`` were
written in one transaction.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import uuid

import asyncpg
import pytest
from temporalio.client import Client, WorkflowFailureError
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.attempts import attempt_key
from activities.claims import issue_ticket
from activities.hub import HubActivities
from activities.permits import PermitIssuer
from renkei.bpf import registry
from renkei.bpf.loader import parse_text
from renkei.bpf.models import QueryStep
from renkei.bpf.validation import validate
from renkei.contracts.failures import Failure
from renkei.contracts.messages import Pin, linkage_asked
from renkei.contracts.names import workflow_id
from renkei.kernel import keys, records
from renkei.kernel.pseudonyms import Pseudonyms
from renkei.kernel.settings import Settings
from whitelist import store

from .helpers import access_record, code, hub_calls, pick, register_fixture, sdk, start, workers

# a well-formed code no one is enrolled under
_UNKNOWN = "A" * 20


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """Inline chaining (not the default): a chainer's update of a row would change its xmin."""
    return settings.model_copy(update={"records_chaining": "inline"})


async def _transactions(pool: asyncpg.Pool, wid: str) -> dict[tuple[str, str], int]:
    """(keeper, step) of each record of the flow, and the transaction that inserted it."""
    rows = await pool.fetch(
        "SELECT keeper, step, xmin::text::bigint AS tx FROM records.access_records"
        " WHERE workflow_id = $1",
        wid,
    )
    return {(r["keeper"], r["step"]): r["tx"] for r in rows}


async def test_the_records_of_linkages_brokered_ahead_are_written_in_one_transaction(
    client: Client, pool: asyncpg.Pool, settings: Settings, catalog, live_whitelist
) -> None:
    """Three linkages brokered with the start: their six records (the requester's, the hub's)
    in one transaction; the provider writes its own, each in another."""
    assert settings.records_chaining == "inline"  # deferred: the chainer's update sets xmin
    await register_fixture(pool, "sequence-probe.yaml")
    h = pick(settings, lambda h: h.municipality == "city-shibuya")
    async with workers(client, pool, settings, catalog, live_whitelist):
        handle = await sdk(client, settings).start(
            start("sequence-probe", "city-minato", code(settings, "city-minato", h.members[0]))
        )
        await asyncio.wait_for(handle.result(), 60)
    assert await hub_calls(handle) == ["hub.resolve"]
    tx = await _transactions(pool, handle.id)
    steps = ("q1", "q2", "q3")
    assert set(tx) == {(k, s) for k in ("city-minato", "hub", "city-shibuya") for s in steps}
    hubs = {tx[(k, s)] for k in ("city-minato", "hub") for s in steps}
    assert len(hubs) == 1, tx  # one transaction for the three linkages' records
    # the gate's records: written as each request arrives, not with the hub's
    assert {tx[("city-shibuya", s)] for s in steps}.isdisjoint(hubs)


async def test_a_linkage_refused_in_a_group_leaves_the_others_brokered_in_one_transaction(
    client: Client, pool: asyncpg.Pool, settings: Settings, catalog, live_whitelist
) -> None:
    """Three lanes ask together; the hub cannot know one lane's subject (a code no one is
    enrolled under): that one is refused alone, the other two are decided, recorded in one
    transaction and permitted. The refused lane asks again alone and fails the flow there."""
    bpf = "group-refusal-probe"
    text = "\n".join(
        [
            f"bpf: {bpf}",
            "version: 1",
            f"title: {{ja: 並行照会の一部拒否, en: {bpf}}}",
            "task: child-allowance",
            "owners: {definer: mhlw, executors: [role:municipal-mayor]}",
            "triggers: [counter]",
            "inputs:",
            "  spouse: {type: subject}",
            "steps:",
            "  - id: all",
            "    parallel:",
            "      - [{id: tax, query: {info: local-tax, provider: city-shibuya}}]",
            "      - [{id: spouse_tax, query: {info: local-tax, provider: city-shibuya,"
            ' about: "${ inputs.spouse }"}}]',
            "      - [{id: pension, query: {info: pension-benefit, provider: jps}}]",
            "result: {income: tax.taxable_income}",
        ]
    )
    loaded = parse_text(text, f"{bpf}.yaml")
    errors = [
        i for i in validate(loaded, catalog, await store.load_index(pool)) if i.severity == "error"
    ]
    assert not errors, errors
    await registry.register(pool, loaded)
    h = pick(settings, lambda h: h.municipality == "city-shibuya" and h.kind == "family")
    async with workers(client, pool, settings, catalog, live_whitelist):
        handle = await sdk(client, settings).start(
            start(
                bpf,
                "city-minato",
                code(settings, "city-minato", h.members[0]),
                inputs={"spouse": _UNKNOWN},
            )
        )
        with pytest.raises(WorkflowFailureError) as failure:
            await asyncio.wait_for(handle.result(), 60)
    cause = failure.value.cause
    assert isinstance(cause, ApplicationError), cause
    assert cause.type == Failure.UNKNOWN_SUBJECT.value, cause
    calls = await hub_calls(handle)
    # the group once; the refused lane alone after it
    assert calls.count("hub.broker-group") == 1 and calls.count("hub.broker") == 1, calls
    tx = await _transactions(pool, handle.id)
    assert not any(step == "spouse_tax" for _, step in tx), tx  # refused before any record
    brokered = {tx[(k, s)] for k in ("city-minato", "hub") for s in ("tax", "pension")}
    assert len(brokered) == 1, tx  # the two others: one transaction


async def test_a_requester_record_another_hand_wrote_first_refuses_its_linkage_alone(
    pool: asyncpg.Pool, settings: Settings, catalog, live_whitelist
) -> None:
    """city-minato sets down its own record of q2 before the hub brokers q1, q2 and q3 in one
    call (its flow's id and run, as Temporal would say them): the hub refuses q2 alone (the
    requester's record of an attempt is the hub's to write) and writes nothing of it; q1 and q3
    are recorded (the call's one transaction refused, each on its own) and permitted."""
    await register_fixture(pool, "sequence-probe.yaml")
    found = await registry.fetch(pool, "sequence-probe")
    assert found is not None
    d = found.definition
    wid = workflow_id(d.bpf, "city-minato", f"case-{uuid.uuid4().hex[:10]}")
    run_id = str(uuid.uuid4())
    h = pick(settings, lambda h: h.municipality == "city-shibuya")
    subject = code(settings, "city-minato", h.members[0])
    pin = Pin(bpf=d.bpf, version=d.version, content_hash=found.content_hash)
    asked = [
        linkage_asked(
            s,
            provider=s.query.provider,
            subject=subject,
            requester="city-minato",
            task=d.task,
            trigger="counter",
            pin=pin,
            workflow_id=wid,
            run_id=run_id,
            hold=None,
            parent=None,
            # the hub resolved this run (the ticket is the hub's, for this very run)
            ticket=issue_ticket(
                keys.load(settings).signer(),
                workflow_id=wid,
                run_id=run_id,
                pin=pin,
                trigger="counter",
                parent=None,
                subject=subject,
                mode=settings.mode,
            ),
        )
        for s in d.steps
        if isinstance(s, QueryStep)
    ]
    own = records.RecordSigner("city-minato", keys.load_org(settings, "city-minato").signer())
    q2 = attempt_key(wid, run_id, "q2")
    await records.write(
        pool,
        access_record(
            "city-minato",
            0,
            attempt_key=q2,
            requester="city-minato",
            provider="city-shibuya",
            workflow_id=wid,
            run_id=run_id,
            step="q2",
        ),
        signer=own,
    )
    hub_keys = keys.load(settings)
    hub = HubActivities(
        pool,
        catalog,
        Pseudonyms(pool, hub_keys.hub_key),
        live_whitelist,
        PermitIssuer(pool, hub_keys),
        settings.task_queue_prefix,
        settings.mode,
    )
    flow = ActivityEnvironment()
    flow.info = dataclasses.replace(
        flow.info, workflow_id=wid, workflow_run_id=run_id, workflow_type=d.bpf
    )
    out = await flow.run(hub.broker_group, asked)
    assert out[1] is None
    for brokered in (out[0], out[2]):
        assert brokered is not None and brokered.allowed and brokered.permit is not None
    tx = await _transactions(pool, wid)
    assert ("hub", "q2") not in tx  # refused: not even the hub's side
    # the transaction of all three refused, each written on its own: both sides together
    assert tx[("city-minato", "q1")] == tx[("hub", "q1")] != tx[("city-minato", "q3")], tx
    assert tx[("city-minato", "q3")] == tx[("hub", "q3")], tx
    kept = {(r.keeper, r.step): r for r in await records.query(pool, workflow_id=wid)}
    assert kept[("city-minato", "q2")].signer == "city-minato"  # the forged one stays as it was
    assert kept[("hub", "q1")].outcome == kept[("hub", "q3")].outcome == "allowed"


async def test_with_deferred_chaining_the_linkages_brokered_ahead_are_one_write(
    client: Client, pool: asyncpg.Pool, settings: Settings, catalog, live_whitelist
) -> None:
    """Written unchained, the six records of the three linkages brokered with the start are one
    call of the hub's group writer (one statement stamps them all with one ``recorded_at``),
    and once the workers stop each party's chainer has linked them: one record per party per
    attempt, every chain touched verifies."""
    deferred = settings.model_copy(update={"records_chaining": "deferred"})
    await register_fixture(pool, "sequence-probe.yaml")
    h = pick(settings, lambda h: h.municipality == "city-shibuya")
    async with workers(client, pool, deferred, catalog, live_whitelist):
        handle = await sdk(client, deferred).start(
            start("sequence-probe", "city-minato", code(deferred, "city-minato", h.members[0]))
        )
        await asyncio.wait_for(handle.result(), 60)
    assert await hub_calls(handle) == ["hub.resolve"]
    found = await records.query(pool, workflow_id=handle.id)
    steps = ("q1", "q2", "q3")
    kept = {(r.keeper, r.step): r for r in found}
    assert len(found) == len(kept) == 9
    assert set(kept) == {(k, s) for k in ("city-minato", "hub", "city-shibuya") for s in steps}
    assert len({kept[(k, s)].recorded_at for k in ("city-minato", "hub") for s in steps}) == 1
    assert all(r.chain_seq is not None and r.chained_by == r.keeper for r in found)
    result = await records.verify(
        pool,
        keys.load(settings).signer(),
        sorted({r.keeper for r in found}),
        unchained_for=dt.timedelta(0),
    )
    assert result.ok, result.breaks
