"""The hub writes the records of all the linkages of one call in one transaction.

A flow's start brokers its leading linkages ahead (``hub.resolve``), its parallel lanes ask for
theirs together (``hub.broker-group``): the requester's and the hub's records of every linkage
of that call go in one transaction, one durable commit, before any permit of them is issued. A
linkage refused in the group is refused alone: the others are brokered and recorded as before.

The transaction that inserted a row is its ``xmin``: records chained as they are written
(inline chaining, the suite's) are never updated, so rows with one ``xmin`` were written in one
transaction.
"""

from __future__ import annotations

import asyncio

import asyncpg
import pytest
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle
from temporalio.exceptions import ApplicationError

from renkei.bpf import registry
from renkei.bpf.loader import parse_text
from renkei.bpf.validation import validate
from renkei.contracts.failures import Failure
from renkei.kernel.settings import Settings
from whitelist import store

from .helpers import code, pick, register_fixture, sdk, start, workers

# a well-formed code no one is enrolled under
_UNKNOWN = "A" * 20


async def _transactions(pool: asyncpg.Pool, wid: str) -> dict[tuple[str, str], int]:
    """(keeper, step) of each record of the flow, and the transaction that inserted it."""
    rows = await pool.fetch(
        "SELECT keeper, step, xmin::text::bigint AS tx FROM records.access_records"
        " WHERE workflow_id = $1",
        wid,
    )
    return {(r["keeper"], r["step"]): r["tx"] for r in rows}


async def _hub_calls(handle: WorkflowHandle) -> list[str]:
    history = await handle.fetch_history()
    return [
        e.activity_task_scheduled_event_attributes.activity_type.name
        for e in history.events
        if e.HasField("activity_task_scheduled_event_attributes")
        and e.activity_task_scheduled_event_attributes.activity_type.name.startswith("hub.")
    ]


@pytest.fixture(autouse=True)
def _inline(settings: Settings) -> None:
    # deferred chaining links the records later (an update): their xmin is the chainer's then
    assert settings.records_chaining == "inline"


async def test_the_records_of_linkages_brokered_ahead_are_written_in_one_transaction(
    client: Client, pool: asyncpg.Pool, settings: Settings, catalog, live_whitelist
) -> None:
    """Three linkages brokered with the start: their six records (the requester's, the hub's)
    in one transaction; the provider writes its own, each in another."""
    await register_fixture(pool, "sequence-probe.yaml")
    h = pick(settings, lambda h: h.municipality == "city-shibuya")
    async with workers(client, pool, settings, catalog, live_whitelist):
        handle = await sdk(client, settings).start(
            start("sequence-probe", "city-minato", code(settings, "city-minato", h.members[0]))
        )
        await asyncio.wait_for(handle.result(), 60)
    assert await _hub_calls(handle) == ["hub.resolve"]
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
    calls = await _hub_calls(handle)
    # the group once; the refused lane alone after it
    assert calls.count("hub.broker-group") == 1 and calls.count("hub.broker") == 1, calls
    tx = await _transactions(pool, handle.id)
    assert not any(step == "spouse_tax" for _, step in tx), tx  # refused before any record
    brokered = {tx[(k, s)] for k in ("city-minato", "hub") for s in ("tax", "pension")}
    assert len(brokered) == 1, tx  # the two others: one transaction
