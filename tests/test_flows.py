"""End-to-end flows on the real Temporal dev server and the real PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator

import asyncpg
import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import WorkflowExecutionStatus, WorkflowFailureError
from temporalio.common import SearchAttributePair, TypedSearchAttributes
from temporalio.exceptions import ApplicationError

from activities.agencies.municipality import providers as municipality_providers
from activities.linkage import Provider
from renkei.bpf import registry
from renkei.bpf.loader import load_file
from renkei.bpf.validation import validate
from renkei.contracts.messages import NEWEST_PATHS, FlowResult, LinkageRequest
from renkei.contracts.names import control_queue, workflow_id
from renkei.kernel import records
from renkei.kernel import search_attributes as sa
from tests.paths import SAMPLES_DIR
from whitelist import store
from whitelist.catalog import default_catalog
from whitelist.payloads import LocalTax

from .helpers import (
    STAND_IN,
    child_rearing,
    code,
    endpoints_of,
    pick,
    register_fixture,
    sdk,
    start,
    workers,
)


async def _records(
    pool: asyncpg.Pool, wid: str, keeper: str = "provider"
) -> list[records.AccessRecord]:
    """The records of run ``wid`` kept by the provider (default), the requester or the hub."""
    found = await records.query(pool, workflow_id=wid)
    return [
        r
        for r in found
        if r.keeper == {"provider": r.provider, "requester": r.requester}.get(keeper, keeper)
    ]


async def test_cohabiting_couple_counts_both_incomes(env, pool, settings) -> None:
    h = pick(settings, lambda h: h.kind == "family" and h.municipality == "city-minato")
    head, spouse = h.members[0], h.members[1]
    handle = await env.start(child_rearing(settings, head, spouse))
    result = await handle.result()
    assert result.outcome == "completed"
    assert result.result["cohabiting"] is True
    assert result.result["counted_income"] == head.taxable_income + spouse.taxable_income
    assert result.result["eligible"] == (head.taxable_income + spouse.taxable_income < 3_600_000)
    recs = await _records(pool, handle.id)
    assert sorted(r.step for r in recs) == ["household", "own_income", "spouse_income"]
    assert {r.outcome for r in recs} == {"allowed"}
    assert {r.legal_reference for r in recs} == {"番号法別表第二 五十七項" + STAND_IN}
    # Every party keeps its own record under its own code; the hub under its subject id.
    assert {r.subject_code for r in recs if r.step != "spouse_income"} == {
        code(settings, "city-minato", head)
    }
    mine = await _records(pool, handle.id, "requester")
    assert {(r.step, r.subject_code) for r in mine} == {
        ("household", code(settings, "pref-tokyo", head)),
        ("own_income", code(settings, "pref-tokyo", head)),
        ("spouse_income", code(settings, "pref-tokyo", spouse)),
    }
    hubs = await _records(pool, handle.id, "hub")
    assert {(r.step, r.subject_code) for r in hubs} == {
        ("household", str(head.subject_id)),
        ("own_income", str(head.subject_id)),
        ("spouse_income", str(spouse.subject_id)),
    }


async def test_single_parent_counts_own_income_only(env, pool, settings) -> None:
    h = pick(settings, lambda h: h.kind == "single-parent" and h.municipality == "city-minato")
    handle = await env.start(child_rearing(settings, h.members[0]))
    result = await handle.result()
    assert result.result == {
        "cohabiting": False,
        "counted_income": h.members[0].taxable_income,
        "eligible": h.members[0].taxable_income < 3_600_000,
    }
    assert [r.step for r in await _records(pool, handle.id)] == ["household", "own_only"]


async def test_vaccination_relief_reads_the_insurers_payments(env, pool, settings) -> None:
    from .helpers import households

    person = next(
        p
        for h in households(settings)
        for p in h.members
        if h.municipality == "city-minato" and p.medical_payments
    )
    paid = sum(a for _, a, _ in person.medical_payments)
    handle = await env.start(
        start(
            "vaccination-relief-medical-check",
            "city-minato",
            code(settings, "city-minato", person),
            inputs={"insurer": "kyokai-kenpo", "claimed_amount": paid + 1000},
        )
    )
    result = await handle.result()
    assert result.result == {"already_paid": paid, "payable": 1000}
    [rec] = await _records(pool, handle.id)
    assert (rec.provider, rec.info, rec.legal_reference) == (
        "kyokai-kenpo",
        "medical-benefit",
        "番号法別表第二 十七項" + STAND_IN,
    )


async def test_vaccination_relief_rejects_an_uninsured_applicant(env, settings) -> None:
    from .helpers import households

    person = next(
        p
        for h in households(settings)
        for p in h.members
        if h.municipality == "city-minato" and not p.insured_by_kyokai
    )
    result = await (
        await env.start(
            start(
                "vaccination-relief-medical-check",
                "city-minato",
                code(settings, "city-minato", person),
                inputs={"insurer": "kyokai-kenpo", "claimed_amount": 1},
            )
        )
    ).result()
    assert result.outcome == "rejected" and "not insured" in (result.reason or "")


async def test_child_allowance_queries_two_providers_in_parallel(env, pool, settings) -> None:
    h = pick(settings, lambda h: h.kind == "family" and h.municipality == "city-shibuya")
    handle = await env.start(
        start(
            "child-allowance-check",
            "city-minato",
            code(settings, "city-minato", h.members[0]),
            inputs={"previous_municipality": "city-shibuya"},
        )
    )
    try:
        result = await handle.result()
        assert result.result["taxable_income"] == h.members[0].taxable_income
    except WorkflowFailureError:
        pytest.fail("child allowance flow failed")
    recs = await _records(pool, handle.id)
    assert {(r.provider, r.legal_reference) for r in recs} == {
        ("city-shibuya", "番号法別表第二 七十四項" + STAND_IN),
        ("jps", "番号法別表第二 七十五項" + STAND_IN),
    }


async def test_provider_chosen_at_run_time_outside_the_whitelist_is_denied_and_recorded(
    client, pool, settings, catalog, live_whitelist
) -> None:
    calls: list[str] = []

    async def spy(req: LinkageRequest) -> LocalTax:
        calls.append(req.info)
        return LocalTax(fiscal_year=2025, taxable_income=0, municipal_tax=0, dependents=0)

    spying = {"jps": {"resident-record": spy, "local-tax": spy}}
    async with workers(client, pool, settings, catalog, live_whitelist, providers=spying):
        h = pick(settings, lambda h: h.municipality == "city-minato")
        handle = await sdk(client, settings).start(
            child_rearing(settings, h.members[0], municipality="jps")
        )
        with pytest.raises(WorkflowFailureError) as failure:
            await handle.result()
    cause = failure.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == "LinkageDenied"
    assert "denied by the whitelist" in cause.message
    assert calls == []  # the provider's code never ran
    # The hub refused to hand out jps's code: the provider never heard of the request.
    assert await _records(pool, handle.id) == []
    for keeper in ("requester", "hub"):
        [rec] = await _records(pool, handle.id, keeper)
        assert rec.outcome == "denied" and rec.provider == "jps" and rec.whitelist_row is None
    assert (await sdk(client, settings).describe(handle.id)).renkei_status == "denied"


async def test_nonconformant_definition_cannot_be_registered_or_started(
    env, pool, settings
) -> None:
    loaded = load_file(SAMPLES_DIR / "nonconformant" / "child-allowance-medical-peek.yaml")
    errors = [
        i
        for i in validate(loaded, default_catalog(), await store.load_index(pool))
        if i.severity == "error"
    ]
    assert errors
    from renkei.app.bootstrap import register_definitions

    _, rejected = await register_definitions(pool, SAMPLES_DIR / "nonconformant")
    assert rejected and await registry.fetch(pool, "child-allowance-medical-peek") is None
    h = pick(settings, lambda h: h.municipality == "city-minato")
    handle = await env.start(
        start(
            "child-allowance-medical-peek",
            "city-minato",
            code(settings, "city-minato", h.members[0]),
        )
    )
    with pytest.raises(WorkflowFailureError) as failure:
        await handle.result()
    assert "not registered" in str(failure.value.cause)
    assert await _records(pool, handle.id) == []


async def test_invalid_inputs_are_refused_before_the_start(env, settings) -> None:
    h = pick(settings, lambda h: h.municipality == "city-minato")
    with pytest.raises(
        ValueError, match="previous_municipality: the org does not hold role municipal-mayor"
    ):
        await env.start(
            start(
                "child-allowance-check",
                "city-minato",
                code(settings, "city-minato", h.members[0]),
                inputs={"previous_municipality": "jps"},
            )
        )
    with pytest.raises(ValueError, match="subject"):
        await env.start(
            start(
                "child-allowance-check",
                "city-minato",
                "not-a-code",
                inputs={"previous_municipality": "city-shibuya"},
            )
        )


async def test_an_executor_not_named_by_the_definition_cannot_run_it(env, pool, settings) -> None:
    h = pick(settings, lambda h: h.municipality == "city-minato")
    handle = await env.start(
        start(
            "child-allowance-check",
            "kyokai-kenpo",
            code(settings, "kyokai-kenpo", h.members[0]),
            inputs={"previous_municipality": "city-shibuya"},
        )
    )
    with pytest.raises(WorkflowFailureError) as failure:
        await handle.result()
    assert "not an executor" in str(failure.value.cause)


async def test_same_case_reference_returns_the_same_run(env, settings) -> None:
    h = pick(settings, lambda h: h.kind == "family" and h.municipality == "city-shibuya")
    req = start(
        "child-allowance-check",
        "city-minato",
        code(settings, "city-minato", h.members[0]),
        inputs={"previous_municipality": "city-shibuya"},
    )
    first = await env.start(req)
    await first.result()
    second = await env.start(req)
    assert second.id == first.id
    assert (await second.describe()).run_id == first.result_run_id


async def test_runs_are_findable_by_bpf_id_and_pin_their_definition(env, client, settings) -> None:
    h = pick(settings, lambda h: h.kind == "family" and h.municipality == "city-shibuya")
    req = start(
        "child-allowance-check",
        "city-minato",
        code(settings, "city-minato", h.members[0]),
        inputs={"previous_municipality": "city-shibuya"},
    )
    handle = await env.start(req)
    result: FlowResult = await handle.result()
    found = [
        w
        async for w in client.list_workflows(
            f"RenkeiBpf = 'child-allowance-check' AND WorkflowId = '{handle.id}'"
        )
    ]
    assert [w.workflow_type for w in found] == ["child-allowance-check"]
    desc = await handle.describe()
    # The pin, in the search attributes of the run's first upsert (runs from before lean-paths-v2
    # kept it in their memo): the run is found by the content it runs.
    assert desc.typed_search_attributes.get(sa.CONTENT_HASH) == result.pin.content_hash
    assert desc.typed_search_attributes.get(sa.BPF_VERSION) == 1
    assert await desc.memo_value("definition", None) is None
    pinned = [
        w
        async for w in client.list_workflows(
            f"RenkeiContentHash = '{result.pin.content_hash}' AND WorkflowId = '{handle.id}'"
        )
    ]
    assert [w.id for w in pinned] == [handle.id]
    # No personal data in the workflow id or the search attributes.
    assert req.subject not in handle.id
    assert all(req.subject not in str(v) for v in desc.search_attributes.values())


def _history_marks(events: list[HistoryEvent]) -> tuple[list[str], list[dict[str, str]]]:
    """The patch markers a run recorded, and what each of its upserts set (keyword values)."""
    patches = [
        json.loads(e.marker_recorded_event_attributes.details["patch-data"].payloads[0].data)["id"]
        for e in events
        if e.HasField("marker_recorded_event_attributes")
        and e.marker_recorded_event_attributes.marker_name == "core_patch"
    ]
    upserts = [
        {
            k: v.data.decode()
            for k, v in e.upsert_workflow_search_attributes_event_attributes.search_attributes.indexed_fields.items()
        }
        for e in events
        if e.event_type == EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES
    ]
    return patches, upserts


async def test_a_start_of_this_release_records_no_marker_and_one_from_before_its_own(
    client, pool, settings, catalog, live_whitelist
) -> None:
    """A start the platform writes asks for the unmarked paths: its run records no patch
    marker, and over the direct channel sets its attributes once, as it ends. A start written
    before (no ``paths``) records ``lean-paths-v2`` and upserts as it did. Both end alike."""
    await register_fixture(pool, "retry-probe.yaml")  # one query
    h = pick(settings, lambda h: h.municipality == "city-shibuya")
    direct = settings.linkage_transport == "direct"
    async with workers(client, pool, settings, catalog, live_whitelist):
        new = await sdk(client, settings).start(
            start("retry-probe", "city-minato", code(settings, "city-minato", h.members[0]))
        )
        old_start = start("retry-probe", "city-minato", code(settings, "city-minato", h.members[0]))
        assert old_start.paths is None
        old = await client.start_workflow(
            old_start.bpf,
            old_start,
            id=workflow_id(old_start.bpf, old_start.executor, old_start.case_ref),
            task_queue=control_queue(settings.task_queue_prefix, old_start.executor),
            result_type=FlowResult,
            search_attributes=TypedSearchAttributes([SearchAttributePair(sa.STATUS, "starting")]),
        )
        results = [await new.result(), await old.result()]
    assert [r.result for r in results] == [{"income": h.members[0].taxable_income}] * 2
    new_patches, new_upserts = _history_marks(list((await new.fetch_history()).events))
    old_patches, old_upserts = _history_marks(list((await old.fetch_history()).events))
    assert new_patches == [] and old_patches == ["lean-paths-v2"]
    # The SDK's TemporalChangeVersion upsert goes with the marker; then "running", then the end.
    assert [u.get(sa.STATUS.name) for u in old_upserts] == [None, '"running"', '"completed"']
    assert [u.get(sa.STATUS.name) for u in new_upserts] == (
        ['"completed"'] if direct else ['"running"', '"completed"']
    )
    assert sa.CONTENT_HASH.name in new_upserts[0] and sa.BPF_VERSION.name in new_upserts[0]
    for handle, result in zip((new, old), results, strict=True):
        found = (await handle.describe()).typed_search_attributes
        assert found.get(sa.STATUS) == "completed"
        assert found.get(sa.CONTENT_HASH) == result.pin.content_hash
    # A start asking for paths newer than this worker knows (the newest it takes: NEWEST_PATHS)
    # is left to a worker that knows them.
    ahead = start("retry-probe", "city-minato", code(settings, "city-minato", h.members[0]))
    async with workers(client, pool, settings, catalog, live_whitelist):
        later = await client.start_workflow(
            ahead.bpf,
            ahead.model_copy(update={"paths": NEWEST_PATHS + 1}),
            id=workflow_id(ahead.bpf, ahead.executor, ahead.case_ref),
            task_queue=control_queue(settings.task_queue_prefix, ahead.executor),
            result_type=FlowResult,
        )
        for _ in range(100):
            events = list((await later.fetch_history()).events)
            if any(e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED for e in events):
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("a start from a newer release ran on this worker")
        assert (await later.describe()).status == WorkflowExecutionStatus.RUNNING
        await later.terminate("test over")


async def test_a_slow_direct_linkage_shows_the_run_running_as_it_ends(
    client, pool, settings, catalog, live_whitelist
) -> None:
    """A direct linkage outlasting its workflow task: what the run set before it is upserted as
    soon as it ends, not only with the run's end."""
    if settings.linkage_transport != "direct":
        pytest.skip("a linkage through the provider's queue sets the attributes before it")
    await register_fixture(pool, "slow-answer-probe.yaml")
    real = municipality_providers("city-shibuya", pool)["local-tax"]

    async def slow(req: LinkageRequest) -> LocalTax:
        await asyncio.sleep(12)  # past the workflow task's 10 s: the SDK extends the task
        return await real(req)  # type: ignore[return-value]

    h = pick(settings, lambda h: h.municipality == "city-shibuya")
    async with workers(
        client,
        pool,
        settings,
        catalog,
        live_whitelist,
        providers={"city-shibuya": {"local-tax": slow}},
    ):
        handle = await sdk(client, settings).start(
            start("slow-answer-probe", "city-minato", code(settings, "city-minato", h.members[0]))
        )
        await handle.result()
    events = list((await handle.fetch_history()).events)
    _, upserts = _history_marks(events)
    assert [u.get(sa.STATUS.name) for u in upserts] == ['"running"', '"completed"']
    tasks = [
        e.event_id for e in events if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED
    ]
    [running] = [
        e.event_id
        for e in events
        if e.event_type == EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES
    ][:1]
    # set in a later workflow task than the one that asked the provider (the run's first when
    # the hub resolved it over its endpoint, else its second, after the hub's activity) and
    # went on as the provider took long
    asked = 0 if settings.hub_transport == "direct" else 1
    assert running > tasks[asked + 1]


async def test_one_record_per_linkage_despite_a_forced_retry(
    client, pool, settings, catalog, live_whitelist
) -> None:
    await register_fixture(pool, "retry-probe.yaml")
    real = municipality_providers("city-shibuya", pool)["local-tax"]
    attempts: list[int] = []

    async def flaky(req: LinkageRequest) -> LocalTax:
        attempts.append(1)
        if len(attempts) < 3:
            raise RuntimeError("transient outage at the provider")
        return await real(req)  # type: ignore[return-value]

    async with workers(
        client,
        pool,
        settings,
        catalog,
        live_whitelist,
        providers={"city-shibuya": {"local-tax": flaky}},
    ):
        h = pick(settings, lambda h: h.municipality == "city-shibuya")
        handle = await sdk(client, settings).start(
            start("retry-probe", "city-minato", code(settings, "city-minato", h.members[0]))
        )
        result = await handle.result()
    assert len(attempts) == 3
    assert result.result["income"] == h.members[0].taxable_income
    # One record per party to the attempt: the provider's, the requester's, the hub's.
    for keeper in ("provider", "requester", "hub"):
        [rec] = await _records(pool, handle.id, keeper)
        assert rec.outcome == "allowed"


async def test_one_record_per_linkage_across_a_worker_restart(
    client, pool, settings, catalog, live_whitelist
) -> None:
    await register_fixture(pool, "retry-probe.yaml")
    entered = asyncio.Event()
    stuck = asyncio.Event()

    async def hang(req: LinkageRequest) -> LocalTax:
        entered.set()
        await stuck.wait()  # never set: this worker "crashes" with the linkage in flight
        raise AssertionError("unreachable")

    h = pick(settings, lambda h: h.municipality == "city-shibuya")
    rc = sdk(client, settings)

    @contextlib.asynccontextmanager
    async def shibuya(providers: dict[str, Provider] | None) -> AsyncIterator[None]:
        """city-shibuya's worker alone (and, over the direct channel, its endpoint)."""
        from activities.direct import DirectWiring
        from workers.agency import agency_worker
        from workers.assembly import serving_directly

        direct = settings.linkage_transport == "direct"
        wiring = DirectWiring(endpoints_of(settings)) if direct else None
        own = agency_worker(
            client,
            pool,
            settings,
            catalog,
            "city-shibuya",
            live_whitelist,
            providers,
            direct=wiring,
        )
        async with contextlib.AsyncExitStack() as stack:
            if wiring is not None:
                await stack.enter_async_context(serving_directly(wiring, settings))
            await stack.enter_async_context(own)
            yield

    async with workers(client, pool, settings, catalog, live_whitelist, agencies=()):
        async with shibuya({"local-tax": hang}):
            handle = await rc.start(
                start("retry-probe", "city-minato", code(settings, "city-minato", h.members[0]))
            )
            await asyncio.wait_for(entered.wait(), 30)
        # That worker is gone with the linkage in flight; a fresh worker of the same org takes over.

        async with shibuya(None):
            result = await asyncio.wait_for(handle.result(), 60)
    assert result.result["income"] == h.members[0].taxable_income
    [rec] = await _records(pool, handle.id)
    assert rec.outcome == "allowed" and rec.step == "tax"


async def test_unknown_subject_code_fails_without_naming_it(env, pool, settings) -> None:
    fake = "A" * 20
    handle = await env.start(
        start(
            "child-allowance-check",
            "city-minato",
            fake,
            inputs={"previous_municipality": "city-shibuya"},
        )
    )
    with pytest.raises(WorkflowFailureError) as failure:
        await handle.result()
    assert fake not in str(failure.value.cause)
    assert "no subject is enrolled" in str(failure.value.cause)


async def test_search_attributes_are_registered_idempotently(client) -> None:
    from renkei.kernel.search_attributes import ensure_registered

    assert await ensure_registered(client, "default") == []


async def test_a_signed_answer_that_breaks_its_schema_fails_the_flow_with_the_fields(
    client, pool, settings, catalog, live_whitelist
) -> None:
    """A provider's worker answers (and signs) a payload its info item's schema refuses: the
    flow fails at once with the fields that do not fit, naming no value, instead of failing its
    workflow task again and again."""
    from pydantic import BaseModel

    from renkei.contracts.failures import Failure

    await register_fixture(pool, "retry-probe.yaml")
    secret = "1234567-not-a-number"

    class OffSchema(BaseModel):  # what a broken provider's code returns
        taxable_income: str
        fiscal_year: str

    async def off_schema(req: LinkageRequest) -> OffSchema:
        return OffSchema(taxable_income=secret, fiscal_year="last")

    async with workers(
        client,
        pool,
        settings,
        catalog,
        live_whitelist,
        providers={"city-shibuya": {"local-tax": off_schema}},
    ):
        h = pick(settings, lambda h: h.municipality == "city-shibuya")
        handle = await sdk(client, settings).start(
            start("retry-probe", "city-minato", code(settings, "city-minato", h.members[0]))
        )
        with pytest.raises(WorkflowFailureError) as failed:
            await asyncio.wait_for(handle.result(), 60)
    cause = failed.value.cause
    assert Failure.INVALID_ANSWER.caused(cause), cause
    assert "taxable_income" in str(cause) and secret not in str(cause)
