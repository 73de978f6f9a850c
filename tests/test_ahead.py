"""Brokering ahead: the hub brokers the linkages a flow will certainly ask for next, in the call
the flow makes anyway (its start's, or its broker request's).

Each is decided, recorded for the requester and the hub and permitted exactly as at its step;
the flow uses the held answer at the step (a denial fails that step, not an earlier one), brokers
the step again if the permit no longer lasts its whole budget, and tells the hub an attempt it
never asked as ``not_asked``. The provider's gate decides every request it receives as before.
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
from renkei.contracts.messages import LinkageRequest
from renkei.contracts.retries import BROKER_GROUP_LIMIT
from renkei.kernel import keys, records
from renkei.kernel.settings import Settings
from whitelist import store
from whitelist.payloads import LocalTax

from .helpers import code, pick, register_fixture, sdk, start, workers


async def _outcomes(pool: asyncpg.Pool, wid: str) -> dict[str, str]:
    kept = await records.query(pool, workflow_id=wid)
    found = await records.outcomes(pool, [r.attempt_key for r in kept])
    return {r.step: found[r.attempt_key].outcome for r in kept if r.attempt_key in found}


async def _hub_calls(handle: WorkflowHandle) -> list[str]:
    history = await handle.fetch_history()
    return [
        e.activity_task_scheduled_event_attributes.activity_type.name
        for e in history.events
        if e.HasField("activity_task_scheduled_event_attributes")
        and e.activity_task_scheduled_event_attributes.activity_type.name.startswith("hub.")
    ]


async def _register(pool: asyncpg.Pool, catalog, bpf: str, steps: list[str], result: str) -> None:
    """Register a definition of the child-allowance task whose steps are ``steps`` (YAML
    lines, indented as list items of ``steps:``)."""
    text = "\n".join(
        [
            f"bpf: {bpf}",
            "version: 1",
            f"title: {{ja: 先行照会の確認, en: {bpf}}}",
            "task: child-allowance",
            "owners: {definer: mhlw, executors: [role:municipal-mayor]}",
            "triggers: [counter]",
            "inputs:",
            "  tax_office: {type: org, required: false}",
            "steps:",
            *steps,
            f"result: {{income: {result}}}",
        ]
    )
    loaded = parse_text(text, f"{bpf}.yaml")
    errors = [
        i for i in validate(loaded, catalog, await store.load_index(pool)) if i.severity == "error"
    ]
    assert not errors, errors
    await registry.register(pool, loaded)


def _queries(n: int) -> list[str]:
    return [
        f"  - {{id: q{i}, query: {{info: local-tax, provider: city-shibuya}}}}" for i in range(n)
    ]


def _subject(settings: Settings) -> str:
    h = pick(settings, lambda h: h.municipality == "city-shibuya")
    return code(settings, "city-minato", h.members[0])


async def _one_record_each(pool: asyncpg.Pool, wid: str, steps: list[str]) -> None:
    kept = await records.query(pool, workflow_id=wid, limit=100_000)
    assert sorted((r.keeper, r.step) for r in kept) == sorted(
        (keeper, step) for keeper in ("city-minato", "hub", "city-shibuya") for step in steps
    )


async def test_a_sequence_of_three_is_brokered_with_its_start(
    client: Client, pool: asyncpg.Pool, settings: Settings, catalog, live_whitelist
) -> None:
    """All three linkages are decided when the run starts, before the first provider is asked;
    no broker call at any step; one record per party per attempt; all provided."""
    await register_fixture(pool, "sequence-probe.yaml")
    async with workers(client, pool, settings, catalog, live_whitelist):
        handle = await sdk(client, settings).start(
            start("sequence-probe", "city-minato", _subject(settings))
        )
        await asyncio.wait_for(handle.result(), 60)
    calls = await _hub_calls(handle)
    assert calls.count("hub.resolve") == 1 and set(calls) == {"hub.resolve", "hub.outcomes"}
    await _one_record_each(pool, handle.id, ["q1", "q2", "q3"])
    kept = {(r.keeper, r.step): r for r in await records.query(pool, workflow_id=handle.id)}
    # the hub decided q3 before city-shibuya's gate decided q1: brokered ahead, with the start
    assert kept[("hub", "q3")].decided_at < kept[("city-shibuya", "q1")].decided_at
    assert await _outcomes(pool, handle.id) == dict.fromkeys(("q1", "q2", "q3"), "provided")


async def test_ten_in_sequence_are_brokered_with_the_start_and_past_the_limit_in_one_call(
    client: Client, pool: asyncpg.Pool, settings: Settings, catalog, live_whitelist
) -> None:
    """Ten linkages in sequence: all brokered with the start. A sequence longer than one call
    takes (the limit, 50): the first 50 with the start, the rest in one call at the 51st."""
    n = BROKER_GROUP_LIMIT + 2
    await _register(pool, catalog, "ahead-ten-probe", _queries(10), "q9.taxable_income")
    await _register(pool, catalog, "ahead-long-probe", _queries(n), f"q{n - 1}.taxable_income")
    rc = sdk(client, settings)
    async with workers(client, pool, settings, catalog, live_whitelist):
        ten = await rc.start(start("ahead-ten-probe", "city-minato", _subject(settings)))
        long = await rc.start(start("ahead-long-probe", "city-minato", _subject(settings)))
        assert (await asyncio.wait_for(ten.result(), 120)).outcome == "completed"
        assert (await asyncio.wait_for(long.result(), 300)).outcome == "completed"
    calls = await _hub_calls(ten)
    assert calls.count("hub.resolve") == 1 and set(calls) == {"hub.resolve", "hub.outcomes"}
    await _one_record_each(pool, ten.id, [f"q{i}" for i in range(10)])
    calls = await _hub_calls(long)
    assert calls.count("hub.resolve") == 1 and calls.count("hub.broker-group") == 1
    assert set(calls) == {"hub.resolve", "hub.broker-group", "hub.outcomes"}
    await _one_record_each(pool, long.id, [f"q{i}" for i in range(n)])
    assert set((await _outcomes(pool, long.id)).values()) == {"provided"}


async def test_an_attempt_permitted_ahead_and_never_reached_is_not_asked(
    client: Client, pool: asyncpg.Pool, settings: Settings, catalog, live_whitelist
) -> None:
    """The second linkage fails at its provider: the third, permitted with the start, is never
    asked. The hub records it as not_asked; its provider has no record and no receipt of it,
    and nothing disagrees with the providers' receipts."""
    await register_fixture(pool, "sequence-probe.yaml")

    async def second_fails(req: LinkageRequest) -> LocalTax:
        if req.step == "q2":
            raise ApplicationError("the register is down", non_retryable=True)
        return LocalTax(fiscal_year=2025, taxable_income=1, municipal_tax=0, dependents=0)

    failing = {"city-shibuya": {"local-tax": second_fails}}
    async with workers(client, pool, settings, catalog, live_whitelist, providers=failing):
        handle = await sdk(client, settings).start(
            start("sequence-probe", "city-minato", _subject(settings))
        )
        with pytest.raises(WorkflowFailureError):
            await asyncio.wait_for(handle.result(), 60)
    assert await _outcomes(pool, handle.id) == {
        "q1": "provided",
        "q2": "failed",
        "q3": "not_asked",
    }
    kept = {(r.keeper, r.step): r.outcome for r in await records.query(pool, workflow_id=handle.id)}
    assert kept[("city-minato", "q3")] == kept[("hub", "q3")] == "allowed"
    assert ("city-shibuya", "q3") not in kept  # the provider never received it
    q3 = f"{handle.id}/{(await handle.describe()).run_id}/q3"
    assert q3 not in {r.attempt_key for r in await records.receipts(pool, "city-shibuya")}
    hub = keys.load(settings).signer().public_key()
    mismatches = await records.reconcile(pool, hub)
    assert not [m for m in mismatches if m.attempt_key.startswith(handle.id)]


async def test_a_step_whose_permit_no_longer_lasts_its_budget_is_brokered_again(
    client: Client, pool: asyncpg.Pool, settings: Settings, catalog, live_whitelist
) -> None:
    """q2's budget is a whole day (the longest a permit lasts): its permit from the start no
    longer covers it once q1 has run, so the flow brokers q2 again at its step (the hub's
    records of the attempt, written once, stay as they were); q3's permit still covers its
    budget and is used."""
    steps = _queries(3)
    steps[1] = (
        "  - {id: q1, query: {info: local-tax, provider: city-shibuya, timeout: 1h,"
        " retry: {max_attempts: 25}}}"
    )
    await _register(pool, catalog, "ahead-expiry-probe", steps, "q2.taxable_income")
    async with workers(client, pool, settings, catalog, live_whitelist):
        handle = await sdk(client, settings).start(
            start("ahead-expiry-probe", "city-minato", _subject(settings))
        )
        assert (await asyncio.wait_for(handle.result(), 60)).outcome == "completed"
    calls = await _hub_calls(handle)
    assert calls.count("hub.resolve") == 1 and calls.count("hub.broker") == 1
    assert set(calls) == {"hub.resolve", "hub.broker", "hub.outcomes"}
    await _one_record_each(pool, handle.id, ["q0", "q1", "q2"])
    assert await _outcomes(pool, handle.id) == dict.fromkeys(("q0", "q1", "q2"), "provided")


async def test_nothing_the_flow_computes_is_brokered_ahead_nor_past(
    client: Client, pool: asyncpg.Pool, settings: Settings, catalog, live_whitelist
) -> None:
    """q1's provider is an expression: the start brokers q0 only; q1 is asked at its step, with
    q2 (which certainly follows it) in the same call."""
    steps = _queries(3)
    steps[1] = '  - {id: q1, query: {info: local-tax, provider: "${ inputs.tax_office }"}}'
    await _register(pool, catalog, "ahead-expression-probe", steps, "q2.taxable_income")
    async with workers(client, pool, settings, catalog, live_whitelist):
        handle = await sdk(client, settings).start(
            start(
                "ahead-expression-probe",
                "city-minato",
                _subject(settings),
                inputs={"tax_office": "city-shibuya"},
            )
        )
        assert (await asyncio.wait_for(handle.result(), 60)).outcome == "completed"
    calls = await _hub_calls(handle)
    assert calls.count("hub.resolve") == 1 and calls.count("hub.broker-group") == 1
    assert set(calls) == {"hub.resolve", "hub.broker-group", "hub.outcomes"}
    kept = {(r.keeper, r.step): r for r in await records.query(pool, workflow_id=handle.id)}
    # q1 and q2 were decided only once q0 had been answered
    for step in ("q1", "q2"):
        assert kept[("hub", step)].decided_at > kept[("city-shibuya", "q0")].decided_at
    await _one_record_each(pool, handle.id, ["q0", "q1", "q2"])
