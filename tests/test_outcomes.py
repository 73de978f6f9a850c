"""What became of each linkage attempt, as the records and the API tell it.

The requester's and the hub's records are written when the hub decides, before the provider is
asked; the hub appends each attempt's outcome once the flow learns it (provided only for an
answer whose provider signature verified). A one-stop parent's records include its children's.
The API's state of a closed flow carries its result or the reason it did not reach one.
"""

from __future__ import annotations

import asyncio
import json

import asyncpg
import httpx
from pydantic import BaseModel
from temporalio.client import Client, WorkflowFailureError
from temporalio.exceptions import ApplicationError
from typer.testing import CliRunner

from activities.agencies import SAMPLE_AGENCIES
from activities.linkage import Provider
from renkei.app.web import serving
from renkei.app.web.api import issue_token
from renkei.contracts.messages import LinkageRequest
from renkei.kernel import keys, records
from renkei.kernel.settings import Settings

from .helpers import (
    allowance_check,
    code,
    flow_outcomes,
    hub_calls,
    pick,
    register_fixture,
    run,
    sdk,
    shibuya_family,
    start,
    workers,
)
from .processes import wired


async def _outcomes(pool: asyncpg.Pool, wid: str) -> dict[str, str]:
    """Each allowed attempt's outcome, once all are recorded (a ``provided`` is collected by
    the hub a moment after the answer, maybe after the flow's end)."""
    return await flow_outcomes(pool, wid)


def _listed(cli: CliRunner, *args: str) -> list[list[str]]:
    status, out = run(cli, "records", "list", *args)
    assert status == 0, out
    return [ln.split("\t") for ln in out.splitlines() if "\t" in ln]


async def test_a_provided_linkage_is_recorded_as_provided_and_the_state_has_the_result(
    client: Client, pool: asyncpg.Pool, settings: Settings, catalog, live_whitelist, cli
) -> None:
    token = await issue_token(pool, "city-minato")
    async with (
        workers(client, pool, settings, catalog, live_whitelist),
        serving(settings, pool, client) as base,
        httpx.AsyncClient(base_url=base, timeout=30) as http,
    ):
        handle = await sdk(client, settings).start(allowance_check(settings))
        await handle.result()
        state = (
            await http.get(
                f"/api/flows/{handle.id}/state", headers={"Authorization": f"Bearer {token}"}
            )
        ).json()
    assert state["ended"]["outcome"] == "completed"
    assert state["ended"]["result"] and {
        (x["step"], x["outcome"]) for x in state["ended"]["linkages"]
    } == {("tax", "provided"), ("pension", "provided")}
    assert await _outcomes(pool, handle.id) == {"tax": "provided", "pension": "provided"}
    rows = await asyncio.to_thread(_listed, cli, "--workflow", handle.id)
    assert len(rows) == 6 and {(r[2], r[9], r[10]) for r in rows} == {
        ("allowed", "tax", "provided"),
        ("allowed", "pension", "provided"),
    }
    # append-only: the outcome is never changed (the application's role may not; nor the owner)
    try:
        await pool.execute("UPDATE records.attempt_outcomes SET outcome = 'failed'")
    except asyncpg.InsufficientPrivilegeError:
        pass
    else:
        raise AssertionError("an outcome was changed")
    # hash-chained and signed by the hub: an outcome appended by anyone else is caught
    hub = keys.load(settings).signer().public_key()
    async with pool.acquire() as conn:
        ring = await records.keyring(conn, hub)
        async with conn.transaction():
            assert await records.verify_outcomes(conn, ring) is None
        forging = conn.transaction()
        await forging.start()
        try:
            await records.lock_platform(conn, records.OUTCOMES_LOCK)  # the writers' lock
            last = await conn.fetchrow(
                "SELECT chain_seq, outcome_hash FROM records.attempt_outcomes"
                " ORDER BY chain_seq DESC LIMIT 1"
            )
            [tax] = [
                r
                for r in await records.query(pool, workflow_id=handle.id)
                if r.keeper == "hub" and r.step == "tax"
            ]
            await conn.execute(
                "INSERT INTO records.attempt_outcomes (attempt_key, outcome, record_hash,"
                " chain_seq, prev_hash, outcome_hash, recorded_at, signer, signature)"
                " VALUES ($1, 'provided', $2, $3, $4, 'x', now(), 'hub', 'AAAA')",
                tax.attempt_key + "-forged",
                tax.record_hash,
                last["chain_seq"] + 1,
                last["outcome_hash"],
            )
            found = await records.verify_outcomes(conn, ring)
        finally:
            await forging.rollback()
    assert found is not None and found.chain_seq == last["chain_seq"] + 1


async def test_a_linkage_no_worker_answers_is_recorded_as_no_answer_not_provided(
    client: Client, pool: asyncpg.Pool, settings: Settings, catalog, live_whitelist, cli
) -> None:
    await register_fixture(pool, "no-answer-probe.yaml")  # one attempt of 2 s
    # Over the direct channel: city-shibuya's endpoint is configured, and nothing serves it.
    settings = wired(settings, "city-shibuya")
    direct = settings.linkage_transport == "direct"
    token = await issue_token(pool, "city-minato")
    h = pick(settings, lambda h: h.municipality == "city-shibuya")
    others = tuple(a for a in SAMPLE_AGENCIES if a != "city-shibuya")
    async with (
        workers(client, pool, settings, catalog, live_whitelist, agencies=others),
        serving(settings, pool, client) as base,
        httpx.AsyncClient(base_url=base, timeout=30) as http,
    ):
        handle = await sdk(client, settings).start(
            start("no-answer-probe", "city-minato", code(settings, "city-minato", h.members[0]))
        )
        try:
            await asyncio.wait_for(handle.result(), 60)
        except WorkflowFailureError:
            pass
        else:
            raise AssertionError("a linkage no one answered completed")
        state = (
            await http.get(
                f"/api/flows/{handle.id}/state", headers={"Authorization": f"Bearer {token}"}
            )
        ).json()
    assert state["ended"]["outcome"] == "failed"
    if direct:  # the call found no one at the endpoint: said at once, not after a timeout
        assert state["ended"]["failure_type"] == "ProviderError"
        assert "city-shibuya's endpoint: unavailable" in state["ended"]["reason"]
    else:
        assert state["ended"]["failure_type"] == "StepTimedOut"
        assert "no answer in time" in state["ended"]["reason"]
    kept = await records.query(pool, workflow_id=handle.id)
    assert {r.keeper for r in kept} == {"city-minato", "hub"}  # the provider never saw it
    assert all(r.outcome == "allowed" for r in kept)  # the hub's decision, as it was
    assert await _outcomes(pool, handle.id) == {"tax": "no_answer"}
    rows = await asyncio.to_thread(_listed, cli, "--workflow", handle.id)
    assert {r[10] for r in rows} == {"no_answer"}
    # The path is one of lean-paths-v2's, taken without a marker: the platform wrote the start,
    # asking for the unmarked paths (a start from before records lean-paths-v2: test_flows).
    patches = [
        json.loads(e.marker_recorded_event_attributes.details["patch-data"].payloads[0].data)["id"]
        for e in (await handle.fetch_history()).events
        if e.HasField("marker_recorded_event_attributes")
        and e.marker_recorded_event_attributes.marker_name == "core_patch"
    ]
    assert patches == []


async def test_a_linkage_cancelled_in_flight_is_recorded_as_cancelled(
    client: Client, pool: asyncpg.Pool, settings: Settings, catalog, live_whitelist
) -> None:
    await register_fixture(pool, "retry-probe.yaml")  # 3 s per attempt
    h = pick(settings, lambda h: h.municipality == "city-shibuya")
    entered = asyncio.Event()

    async def stall(req: LinkageRequest) -> BaseModel:
        entered.set()
        await asyncio.sleep(60)
        raise AssertionError("not reached")

    stalling: dict[str, dict[str, Provider]] = {"city-shibuya": {"local-tax": stall}}
    async with workers(client, pool, settings, catalog, live_whitelist, providers=stalling):
        handle = await sdk(client, settings).start(
            start("retry-probe", "city-minato", code(settings, "city-minato", h.members[0]))
        )
        await asyncio.wait_for(entered.wait(), 30)
        await handle.cancel()
        try:
            await asyncio.wait_for(handle.result(), 30)
        except WorkflowFailureError:
            pass
        found = await _outcomes(pool, handle.id)
    assert found == {"tax": "cancelled"}


async def test_a_one_stop_parents_records_include_its_childrens(
    client: Client, pool: asyncpg.Pool, settings: Settings, catalog, live_whitelist, cli
) -> None:
    await register_fixture(pool, "one-stop-probe.yaml")
    h = pick(settings, lambda h: h.municipality == "city-shibuya" and h.kind == "family")
    subject = code(settings, "city-minato", h.members[0])
    async with workers(client, pool, settings, catalog, live_whitelist):
        handle = await sdk(client, settings).start(start("one-stop-probe", "city-minato", subject))
        await handle.result()
    children = [
        r for r in await records.query(pool, limit=100_000) if r.parent_workflow_id == handle.id
    ]
    assert children
    by_flow = await asyncio.to_thread(_listed, cli, "--workflow", handle.id, "--limit", "1000")
    child_keys = {(r.keeper, r.chain_seq) for r in children}
    assert child_keys <= {(r[0].split("#")[0], int(r[0].split("#")[1])) for r in by_flow}
    by_bpf = await asyncio.to_thread(_listed, cli, "--bpf", "one-stop-probe", "--limit", "100000")
    assert child_keys <= {(r[0].split("#")[0], int(r[0].split("#")[1])) for r in by_bpf}


async def test_a_flow_of_provided_linkages_tells_the_hub_no_outcome_and_all_are_recorded(
    client: Client, pool: asyncpg.Pool, settings: Settings, catalog, live_whitelist
) -> None:
    """Three linkages in sequence: all three are brokered with the start (brokered ahead: no
    broker call at the steps), and the flow tells the hub no outcome at all (no ``hub.outcomes``
    at the end, none beside): the hub collects each ``provided`` from the provider's own
    receipt, exactly once and with the receipt, chained and signed."""
    await register_fixture(pool, "sequence-probe.yaml")
    h = pick(settings, lambda h: h.municipality == "city-shibuya")
    async with workers(client, pool, settings, catalog, live_whitelist):
        handle = await sdk(client, settings).start(
            start("sequence-probe", "city-minato", code(settings, "city-minato", h.members[0]))
        )
        await asyncio.wait_for(handle.result(), 60)
        history = await handle.fetch_history()
    # Every linkage is brokered with the start, and no outcome is told: one call to the hub
    # (at its endpoint, or on its queue).
    assert await hub_calls(handle) == ["hub.resolve"]
    # Every path the run takes rests on its start's `paths`: no patch marker at all (nor the
    # SDK's search-attribute upsert with one); a start from before records one for all of them.
    # (Over the direct channel each linkage's end is a local activity's marker.)
    patches = [
        e
        for e in history.events
        if e.HasField("marker_recorded_event_attributes")
        and e.marker_recorded_event_attributes.marker_name == "core_patch"
    ]
    assert patches == []
    kept = await records.query(pool, workflow_id=handle.id)
    assert sorted((r.keeper, r.step) for r in kept) == sorted(
        (keeper, step)
        for keeper in ("city-minato", "hub", "city-shibuya")
        for step in ("q1", "q2", "q3")
    )  # exactly one record per party per attempt, the first one's too
    assert await _outcomes(pool, handle.id) == {
        "q1": "provided",
        "q2": "provided",
        "q3": "provided",
    }
    # Each with the provider's receipt it was collected from, once per attempt.
    hubs = [r for r in kept if r.keeper == "hub"]
    ended = await records.outcomes(pool, [r.attempt_key for r in hubs])
    receipts = {
        r["attempt_key"]: r
        for r in await pool.fetch(
            "SELECT attempt_key, signature, answer_digest FROM records.answer_receipts"
            " WHERE attempt_key = ANY($1)",
            [r.attempt_key for r in hubs],
        )
    }
    for r in hubs:
        o = ended[r.attempt_key]
        assert (o.receipt, o.answer_digest) == (
            receipts[r.attempt_key]["signature"],
            receipts[r.attempt_key]["answer_digest"],
        )
    assert (
        await pool.fetchval(
            "SELECT count(*) FROM records.attempt_outcomes WHERE attempt_key = ANY($1)",
            [r.attempt_key for r in hubs],
        )
        == 3
    )
    hub = keys.load(settings).signer().public_key()
    async with pool.acquire() as conn:
        ring = await records.keyring(conn, hub)
        async with conn.transaction():
            assert await records.verify_outcomes(conn, ring) is None


async def test_an_outcome_is_not_held_back_while_the_flow_waits(
    client: Client, pool: asyncpg.Pool, settings: Settings, catalog, live_whitelist
) -> None:
    """A linkage followed by a 30-day wait: its outcome is recorded while the flow waits (not
    held for a next broker request that may be a month away)."""
    await register_fixture(pool, "consent-probe.yaml")
    h = pick(settings, lambda h: h.municipality == "city-shibuya")
    rc = sdk(client, settings)
    async with workers(client, pool, settings, catalog, live_whitelist):
        handle = await rc.start(
            start(
                "consent-probe",
                "city-minato",
                code(settings, "city-minato", h.members[0]),
                trigger="portal",
            )
        )
        async with asyncio.timeout(120):
            while not await rc.waiting(handle.id):  # noqa: ASYNC110 (the flow's state, polled)
                await asyncio.sleep(0.05)
        found = await _outcomes(pool, handle.id)
        assert await rc.waiting(handle.id)  # still waiting: the outcome did not wait for its end
        await handle.terminate("test over")
    assert found == {"tax": "provided"}


async def test_outcomes_told_together_are_each_taken_or_refused_on_their_own(
    pool: asyncpg.Pool, settings: Settings
) -> None:
    """One batch: an attempt reported as provided without the provider's receipt is recorded
    as unreceipted (not provided), an unknown attempt is skipped, and the others are still
    recorded; records made by hand take provided only on the provider's own record."""
    from datetime import UTC, datetime

    from activities.attempts import attempt_key, attempt_record
    from whitelist.decide import Decision

    hub = records.RecordSigner(records.HUB, keys.load(settings).signer())
    req = LinkageRequest(
        requester="city-minato",
        provider="city-shibuya",
        task="child-allowance",
        info="local-tax",
        subject="code",
        bpf="batch-probe",
        bpf_version=1,
        content_hash="sha256:x",
        step="s",
    )
    keys_ = [attempt_key("batch-probe/city-minato/x", "run", s) for s in ("a", "b")]
    for key, step in zip(keys_, ("a", "b"), strict=True):
        await records.write(
            pool,
            *(
                attempt_record(
                    keeper=keeper,
                    subject_code="code",
                    req=req.model_copy(update={"step": step}),
                    decision=Decision(allowed=True, reason="test"),
                    decided_at=datetime.now(UTC),
                    workflow_id="batch-probe/city-minato/x",
                    run_id="run",
                    key=key,
                )
                for keeper in ("city-minato", records.HUB)
            ),
            signer=hub,
        )
    found = await records.record_outcomes(
        pool, [(keys_[0], "provided"), (keys_[1], "failed"), ("no/such/attempt", "failed")], hub
    )
    # "provided" without the provider's receipt is the executor's word alone: not provided
    assert isinstance(found[0], records.AttemptOutcome) and found[0].outcome == "unreceipted"
    assert found[0].receipt is None
    assert isinstance(found[1], records.AttemptOutcome) and found[1].outcome == "failed"
    assert found[2] is None
    assert set(await records.outcomes(pool, keys_)) == set(keys_)
    # records made by hand from before receipts: "provided" only on the provider's own record
    third = attempt_key("batch-probe/city-minato/x", "run", "c")
    await records.write(
        pool,
        *(
            attempt_record(
                keeper=keeper,
                subject_code="code",
                req=req.model_copy(update={"step": "c"}),
                decision=Decision(allowed=True, reason="test"),
                decided_at=datetime.now(UTC),
                workflow_id="batch-probe/city-minato/x",
                run_id="run",
                key=third,
            )
            for keeper in ("city-minato", records.HUB)
        ),
        signer=hub,
    )
    legacy = await records.record_outcomes(pool, [(third, "provided")], hub, require_receipts=False)
    assert isinstance(legacy[0], PermissionError)
    # told again (a retried call): the same outcome comes back, nothing is appended twice
    again = await records.record_outcomes(pool, [(keys_[1], "provided")], hub)
    assert again == [found[1]]


async def test_a_parallel_steps_linkages_are_brokered_in_one_call(
    client: Client, pool: asyncpg.Pool, settings: Settings, catalog, live_whitelist
) -> None:
    """The two lanes of child-allowance-check ask for their linkages at the same moment: one
    call to the hub brokers both, each decided and recorded on its own."""
    async with workers(client, pool, settings, catalog, live_whitelist):
        handle = await sdk(client, settings).start(allowance_check(settings))
        result = await asyncio.wait_for(handle.result(), 60)
        history = await handle.fetch_history()
    assert result.outcome == "completed"
    called = [
        e.activity_task_scheduled_event_attributes.activity_type.name
        for e in history.events
        if e.HasField("activity_task_scheduled_event_attributes")
    ]
    assert called.count("hub.broker-group") == 1 and "hub.broker" not in called
    kept = await records.query(pool, workflow_id=handle.id)
    assert sorted((r.keeper, r.step) for r in kept) == sorted(
        [
            ("city-minato", "tax"),
            ("hub", "tax"),
            ("city-shibuya", "tax"),
            ("city-minato", "pension"),
            ("hub", "pension"),
            ("jps", "pension"),
        ]
    )
    assert await _outcomes(pool, handle.id) == {"tax": "provided", "pension": "provided"}


async def test_a_lane_denied_in_a_group_fails_the_flow_and_its_sibling_is_cancelled(
    client: Client, pool: asyncpg.Pool, settings: Settings, catalog, live_whitelist
) -> None:
    """Both lanes brokered in one call; the hub denies one (a provider outside the whitelist),
    grants the other: the flow fails as denied, the granted linkage is never asked and its
    outcome is cancelled, and each party keeps one record per attempt."""
    await register_fixture(pool, "group-denial-probe.yaml")
    h = shibuya_family(settings)
    async with workers(client, pool, settings, catalog, live_whitelist):
        handle = await sdk(client, settings).start(
            start(
                "group-denial-probe",
                "city-minato",
                code(settings, "city-minato", h.members[0]),
                inputs={"tax_office": "jps"},
            )
        )
        try:
            await asyncio.wait_for(handle.result(), 60)
        except WorkflowFailureError as failure:
            cause = failure.cause
        else:
            raise AssertionError("a linkage outside the whitelist went through")
        history = await handle.fetch_history()
    assert isinstance(cause, ApplicationError) and cause.type == "LinkageDenied"
    called = [
        e.activity_task_scheduled_event_attributes.activity_type.name
        for e in history.events
        if e.HasField("activity_task_scheduled_event_attributes")
    ]
    assert called.count("hub.broker-group") == 1 and "hub.broker" not in called
    kept = {(r.keeper, r.step): r.outcome for r in await records.query(pool, workflow_id=handle.id)}
    assert {k: v for k, v in kept.items() if k[1] == "tax"} == {
        ("city-minato", "tax"): "denied",
        ("hub", "tax"): "denied",
    }
    assert kept[("city-minato", "pension")] == kept[("hub", "pension")] == "allowed"
    assert await _outcomes(pool, handle.id) == {"pension": "cancelled"}


async def test_a_parallel_step_wider_than_one_call_is_brokered_in_several(
    client: Client, pool: asyncpg.Pool, settings: Settings, catalog, live_whitelist
) -> None:
    """52 lanes asking at once: brokered in calls of at most 50 (one call stays within the
    hub's timeout), each linkage once."""
    from renkei.bpf import registry
    from renkei.bpf.loader import parse_text
    from renkei.bpf.validation import validate
    from renkei.contracts.retries import BROKER_GROUP_LIMIT
    from whitelist import store

    lanes = BROKER_GROUP_LIMIT + 2
    text = "\n".join(
        [
            "bpf: wide-group-probe",
            "version: 1",
            "title: {ja: 多数の並行照会, en: Wide group probe}",
            "task: child-allowance",
            "owners: {definer: mhlw, executors: [role:municipal-mayor]}",
            "triggers: [counter]",
            "steps:",
            "  - id: all",
            "    parallel:",
            *(
                f"      - [{{id: q{i}, query: {{info: local-tax, provider: city-shibuya}}}}]"
                for i in range(lanes)
            ),
            "result: {income: q0.taxable_income}",
        ]
    )
    loaded = parse_text(text, "wide-group-probe.yaml")
    assert not [
        i for i in validate(loaded, catalog, await store.load_index(pool)) if i.severity == "error"
    ]
    await registry.register(pool, loaded)
    h = shibuya_family(settings)
    async with workers(client, pool, settings, catalog, live_whitelist):
        handle = await sdk(client, settings).start(
            start("wide-group-probe", "city-minato", code(settings, "city-minato", h.members[0]))
        )
        result = await asyncio.wait_for(handle.result(), 120)
        history = await handle.fetch_history()
    assert result.outcome == "completed"
    called = [
        e.activity_task_scheduled_event_attributes.activity_type.name
        for e in history.events
        if e.HasField("activity_task_scheduled_event_attributes")
    ]
    assert called.count("hub.broker-group") == 2 and "hub.broker" not in called
    kept = await records.query(pool, workflow_id=handle.id)
    assert len(kept) == 3 * lanes and len({(r.keeper, r.step) for r in kept}) == 3 * lanes
