"""Long-running flows: waits for people (with reminders and deadlines), timers, child flows,
continue-as-new.

Durations are real Temporal timers on the dev server. Test mode scales them
(``RENKEI_TEST_TIME_SCALE``), so a 30-day wait lasts seconds here; operation mode never scales.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from temporalio.client import Client, WorkflowHandle, WorkflowUpdateFailedError

from renkei.contracts.messages import (
    RESUMED_TEXT_PATHS,
    Acknowledged,
    FlowResult,
    Response,
    Waiting,
)
from renkei.kernel import records
from renkei.kernel import search_attributes as sa
from renkei.kernel.settings import Settings

from .helpers import (
    approved_hold,
    code,
    pick,
    pick_aside,
    register_fixture,
    sdk,
    start,
    wait_for_outcomes,
    workers,
)

DAY = 86_400


def _applicant(settings: Settings) -> str:
    h = pick(settings, lambda h: h.municipality == "city-shibuya")
    return code(settings, "city-minato", h.members[0])


async def _waiting(handle, step: str, within: float = 10) -> list[Waiting]:
    for _ in range(int(within * 10)):
        found: list[Waiting] = await handle.query("renkei.waiting", result_type=list[Waiting])
        if any(w.step == step for w in found):
            return found
        await asyncio.sleep(0.1)
    raise AssertionError(f"never waited at {step}")


async def test_consent_given_after_a_preview_completes_the_flow(
    client: Client, pool: asyncpg.Pool, settings: Settings, catalog, live_whitelist
) -> None:
    await register_fixture(pool, "consent-probe.yaml")
    slow = settings.model_copy(update={"test_time_scale": 1e-4})  # 30 days ≈ 4 minutes
    async with workers(client, pool, slow, catalog, live_whitelist):
        before = dt.datetime.now(dt.UTC)
        handle = await sdk(client, slow).start(
            start("consent-probe", "city-minato", _applicant(settings), trigger="portal")
        )
        [w] = await _waiting(handle, "consent")
        after = dt.datetime.now(dt.UTC)
        assert w.for_ == "preview-consent" and "taxable_income" in w.preview["tax"]
        # 30 days scaled (259.2 s) from when the flow began to wait, however long that took
        due = dt.timedelta(days=30) * 1e-4
        assert before + due - dt.timedelta(seconds=1) < w.deadline < after + due
        described = await handle.describe()
        assert described.typed_search_attributes.get(sa.WAITING_FOR) == "consent:preview-consent"
        assert described.typed_search_attributes.get(sa.STATUS) == "waiting"
        ack = await handle.execute_update(
            "renkei.respond",
            Response(step="consent", payload={"agree": True}),
            result_type=Acknowledged,
        )
        assert ack.step == "consent"
        result = await handle.result()
    assert result.outcome == "completed" and isinstance(result.result["income"], int)
    kept = await records.query(pool, workflow_id=handle.id)
    assert kept and {r.trigger for r in kept} == {"portal"}
    # "running" from the first linkage on (over the direct channel: set with the wait, past
    # the linkage), "waiting", and as the wait ends the flow's end: the "running" between them
    # lasted no time, and has no upsert of its own
    upserts = _upserts(await handle.fetch_history())
    assert [u.get(sa.STATUS.name) for u in upserts] == (
        ["waiting", "completed"]
        if settings.linkage_transport == "direct"
        else ["running", "waiting", "completed"]
    )
    assert upserts[-1][sa.WAITING_FOR.name] is None


def _upserts(history) -> list[dict[str, object]]:
    """The run's own search attributes each upsert in its history set (``None``: unset), in
    order, leaving out the SDK's own (``TemporalChangeVersion``, with a patch marker)."""
    found = []
    for e in history.events:
        if e.HasField("upsert_workflow_search_attributes_event_attributes"):
            fields = e.upsert_workflow_search_attributes_event_attributes.search_attributes
            set_ = {
                name: json.loads(p.data) if p.data else None
                for name, p in fields.indexed_fields.items()
                if name != "TemporalChangeVersion"
            }
            if set_:
                found.append(set_)
    return found


@contextlib.asynccontextmanager
async def _waiting_first(
    client: Client, pool: asyncpg.Pool, settings: Settings, catalog, live_whitelist
) -> AsyncIterator[WorkflowHandle[Any, Any]]:
    """A run of the wait-first probe, started with the workers running and waiting for the
    citizen's consent (the workers stop as the block ends)."""
    await register_fixture(pool, "wait-first-probe.yaml")
    slow = settings.model_copy(update={"test_time_scale": 1e-4})
    async with workers(client, pool, slow, catalog, live_whitelist):
        handle = await sdk(client, slow).start(
            start("wait-first-probe", "city-minato", _applicant(settings), trigger="portal")
        )
        await _waiting(handle, "consent")
        yield handle


async def test_a_flow_sets_its_search_attributes_once_for_each_thing_it_waits_on(
    client: Client, pool: asyncpg.Pool, settings: Settings, catalog, live_whitelist
) -> None:
    """A flow that starts by waiting shows "waiting" from its first upsert ("running" and the
    pinned version go with it); as its wait ends, "running" is set before its next linkage, not
    left for the flow's end; as it ends, one upsert. The states an operator reads are the ones
    it had: no upsert of its own for a "running" that lasts no time."""
    async with _waiting_first(client, pool, settings, catalog, live_whitelist) as handle:
        described = await handle.describe()
        assert described.typed_search_attributes.get(sa.STATUS) == "waiting"
        assert described.typed_search_attributes.get(sa.BPF_VERSION) == 1
        await handle.execute_update(
            "renkei.respond",
            Response(step="consent", payload={"agree": True}),
            result_type=Acknowledged,
        )
        result = await handle.result()
    assert result.outcome == "completed"
    history = await handle.fetch_history()
    upserts = _upserts(history)
    assert [u.get(sa.STATUS.name) for u in upserts] == ["waiting", "running", "completed"]
    assert upserts[0][sa.BPF_VERSION.name] == 1 and upserts[0][sa.WAITING_FOR.name]
    assert upserts[1][sa.WAITING_FOR.name] is None and upserts[1][sa.DEADLINE.name] is None
    # "running" is set before the linkage goes out, in the same workflow task as the answer
    kinds = [e.WhichOneof("attributes") for e in history.events]
    running = [
        i
        for i, e in enumerate(history.events)
        if e.HasField("upsert_workflow_search_attributes_event_attributes")
        and sa.STATUS.name
        in e.upsert_workflow_search_attributes_event_attributes.search_attributes.indexed_fields
    ][1]
    linkage = next(
        i
        for i, k in enumerate(kinds)
        if i > running
        and k in ("marker_recorded_event_attributes", "activity_task_scheduled_event_attributes")
    )
    assert linkage > running
    described = await handle.describe()
    assert described.typed_search_attributes.get(sa.STATUS) == "completed"
    assert described.typed_search_attributes.get(sa.WAITING_FOR) is None


async def test_a_flow_cancelled_while_it_waits_shows_no_wait_left(
    client: Client, pool: asyncpg.Pool, settings: Settings, catalog, live_whitelist
) -> None:
    """A flow cancelled while it waits sets what it set as its wait ended before it ends: its
    search attributes show no wait and no deadline left (as a run that folds them would
    otherwise keep "waiting" from its last upsert)."""
    from temporalio.client import WorkflowFailureError

    async with _waiting_first(client, pool, settings, catalog, live_whitelist) as handle:
        await handle.cancel()
        with pytest.raises(WorkflowFailureError):
            await handle.result()
    described = await handle.describe()
    assert described.typed_search_attributes.get(sa.WAITING_FOR) is None
    assert described.typed_search_attributes.get(sa.DEADLINE) is None
    assert described.typed_search_attributes.get(sa.STATUS) == "running"
    # and the cancelled run replays, in the sandbox, as its executor's control worker replays it
    # (no recorded history has a folded run cancelled: this one is checked as it is made)
    from workers.plugin import replayer
    from workflows.interpreter import BpfInterpreter

    history = await handle.fetch_history()
    assert history.events[-1].HasField("workflow_execution_canceled_event_attributes")
    replayed = await replayer(
        settings,
        [BpfInterpreter],
        parties=["city-minato"],
        build_id="fixture.control.city-minato",
    ).replay_workflow(history, raise_on_replay_failure=False)
    assert replayed.replay_failure is None, replayed.replay_failure


async def test_consent_refused_and_malformed_responses(
    client: Client, pool: asyncpg.Pool, settings: Settings, catalog, live_whitelist
) -> None:
    await register_fixture(pool, "consent-probe.yaml")
    slow = settings.model_copy(update={"test_time_scale": 1e-4})
    async with workers(client, pool, slow, catalog, live_whitelist):
        handle = await sdk(client, slow).start(
            start("consent-probe", "city-minato", _applicant(settings), trigger="portal")
        )
        await _waiting(handle, "consent")
        for bad, why in (
            ({"agree": "perhaps"}, "agree: must be of type boolean"),
            ({}, "agree: required"),
            ({"agree": True, "note": "call me at 0312345678"}, "note: does not match"),
            ({"agree": True, "extra": 1}, "extra: not a field of this response"),
        ):
            with pytest.raises(WorkflowUpdateFailedError) as refused:
                await handle.execute_update("renkei.respond", Response(step="consent", payload=bad))
            assert why in str(refused.value.cause)
            assert "0312345678" not in str(refused.value.cause)
        with pytest.raises(WorkflowUpdateFailedError) as wrong_step:
            await handle.execute_update("renkei.respond", Response(step="tax", payload={}))
        assert "not waiting at step 'tax'" in str(wrong_step.value.cause)
        # Still waiting after all of that; a valid refusal ends it.
        assert [w.step for w in await _waiting(handle, "consent")] == ["consent"]
        await handle.signal("renkei.respond", Response(step="consent", payload={"agree": False}))
        result = await handle.result()
    assert result.outcome == "rejected"
    assert result.reason == "the citizen refused the use of the data"


async def test_a_30_day_wait_reminds_before_and_times_out(
    client: Client, pool: asyncpg.Pool, settings: Settings, catalog, live_whitelist
) -> None:
    await register_fixture(pool, "consent-probe.yaml")
    fast = settings.model_copy(update={"test_time_scale": 1e-6})  # 30 days ≈ 2.6 s
    async with workers(client, pool, fast, catalog, live_whitelist):
        handle = await sdk(client, fast).start(
            start("consent-probe", "city-minato", _applicant(settings), trigger="portal")
        )
        result: FlowResult = await asyncio.wait_for(handle.result(), 60)
    assert result.outcome == "rejected"
    assert result.reason == "the citizen did not confirm the preview within 30 days"
    reminders = await pool.fetch(
        "SELECT step, executor, subject_code, deadline, created_at FROM hub.reminders"
        " WHERE workflow_id = $1",
        handle.id,
    )
    assert [(r["step"], r["executor"]) for r in reminders] == [("consent", "city-minato")]
    # the reminder went out no sooner than about 7 (scaled) days before the deadline (how long
    # after its timer it is written, 0.6 s before the deadline here, is the machine's load)
    lead = (reminders[0]["deadline"] - reminders[0]["created_at"]).total_seconds()
    assert lead < 7 * DAY * 1e-6 + 1.5


async def test_sleep_until_months_ahead_then_continue(
    client: Client, pool: asyncpg.Pool, settings: Settings, catalog, live_whitelist
) -> None:
    await register_fixture(pool, "sleep-probe.yaml")
    fast = settings.model_copy(update={"test_time_scale": 5e-7})  # 4 months ≈ 5 s
    async with workers(client, pool, fast, catalog, live_whitelist):
        began = dt.datetime.now(dt.UTC)
        handle = await sdk(client, fast).start(
            start("sleep-probe", "city-minato", _applicant(settings), inputs={"months": 4})
        )
        async with asyncio.timeout(30):  # the flow reaches its sleep (polled: not a fixed wait)
            while await handle.query("renkei.status") != "sleeping":  # noqa: ASYNC110 (a query)
                await asyncio.sleep(0.05)
        result = await asyncio.wait_for(handle.result(), 60)
    took = (dt.datetime.now(dt.UTC) - began).total_seconds()
    assert result.outcome == "completed"
    assert took >= (120 + 2) * DAY * 5e-7 * 0.95  # the timers really ran
    history = await handle.fetch_history()
    timers = [e for e in history.events if e.HasField("timer_started_event_attributes")]
    assert len(timers) == 2


async def test_a_child_bpf_runs_with_its_own_checks_and_records_and_state_survives_continue_as_new(
    client: Client, pool: asyncpg.Pool, settings: Settings, catalog, live_whitelist
) -> None:
    await register_fixture(pool, "one-stop-probe.yaml")
    h = pick(settings, lambda h: h.municipality == "city-shibuya" and h.kind == "family")
    subject = code(settings, "city-minato", h.members[0])
    plain = settings.model_copy(update={"history_limit": 10_000})
    short = settings.model_copy(update={"history_limit": 20})
    async with workers(client, pool, plain, catalog, live_whitelist):
        once = await (
            await sdk(client, plain).start(start("one-stop-probe", "city-minato", subject))
        ).result()
    async with workers(client, pool, short, catalog, live_whitelist):
        handle = await sdk(client, short).start(start("one-stop-probe", "city-minato", subject))
        continued = await handle.result()
    # Same result, same linkages, though the run continued as new along the way.
    assert continued.result == once.result
    assert continued.result["income"] == h.members[0].taxable_income and continued.result["same"]
    # Linkages are listed in the order they finished; the child's two lanes run in parallel.
    assert sorted(x.step for x in continued.linkages) == sorted(x.step for x in once.linkages)
    steps = [x.step for x in continued.linkages]
    assert (steps[0], steps[-1]) == ("tax", "again")
    assert "allowance/tax" in [x.step for x in continued.linkages]
    first_run = client.get_workflow_handle(handle.id, run_id=handle.first_execution_run_id)
    events = (await first_run.fetch_history()).events
    assert events[-1].HasField("workflow_execution_continued_as_new_event_attributes")
    # The run it continued in carries its state as the exact text the hub signed, and asks for
    # paths a worker from before does not take (it would start the flow afresh).
    carried = await sdk(client, short).started_with(handle.id)
    assert carried.resume is None and carried.signed_resume is not None
    assert carried.paths == RESUMED_TEXT_PATHS
    # The child ran as its own flow: its own whitelist decisions and records.
    child_id = f"child-allowance-check/city-minato/{handle.id.rsplit('/', 1)[-1]}.allowance"
    child_records = await records.query(pool, workflow_id=child_id)
    assert {(r.keeper, r.step) for r in child_records} >= {
        ("city-minato", "tax"),
        ("hub", "tax"),
        ("city-shibuya", "tax"),
        ("jps", "pension"),
    }


async def test_a_flow_called_by_a_called_flow_serves_the_top_level_flow(
    client: Client, pool: asyncpg.Pool, settings: Settings, catalog, live_whitelist
) -> None:
    """Two levels of calls: the innermost flow claims the top-level flow as the one it serves,
    which started its caller, not itself; the hub finds it up the chain of callers Temporal
    reports, and the whole runs."""
    for fixture in ("one-stop-probe.yaml", "nested-call-probe.yaml"):
        await register_fixture(pool, fixture)
    h = pick(settings, lambda h: h.municipality == "city-shibuya" and h.kind == "family")
    subject = code(settings, "city-minato", h.members[0])
    async with workers(client, pool, settings, catalog, live_whitelist):
        done = await (
            await sdk(client, settings).start(start("nested-call-probe", "city-minato", subject))
        ).result()
    assert done.outcome == "completed", done
    assert "inner/allowance/tax" in [x.step for x in done.linkages], done.linkages
    # Under an approved hold about the case's person: every call carries it (test_hostile:
    # about anyone else, a call carrying it is refused). About someone no other test picks:
    # their records are withheld from their view.
    h = pick_aside(settings, lambda h: h.municipality == "city-shibuya" and h.kind == "family")
    subject = code(settings, "city-minato", h.members[0])
    case = f"case-{uuid.uuid4().hex[:10]}"
    hold = await approved_hold(pool, "city-minato", "nested-call-probe", case, subject)
    held = start("nested-call-probe", "city-minato", subject, hold=hold).model_copy(
        update={"case_ref": case}
    )
    async with workers(client, pool, settings, catalog, live_whitelist):
        handle = await sdk(client, settings).start(held)
        done = await handle.result()
    assert done.outcome == "completed", done
    called = f"one-stop-probe/city-minato/{case}.inner"
    innermost = f"child-allowance-check/city-minato/{case}.inner.allowance"
    kept = [r for wid in (called, innermost) for r in await records.query(pool, workflow_id=wid)]
    assert {r.workflow_id for r in kept} == {called, innermost}
    # the records the citizen's view reads (the hub's) and the executor's carry the hold
    assert {r.keeper for r in kept} >= {records.HUB, "city-minato"}
    assert all(
        r.hold_reason == "investigation" for r in kept if r.keeper in (records.HUB, "city-minato")
    )


async def test_a_permit_held_when_the_run_continues_as_new_ends_not_asked_and_is_asked_again(
    client: Client, pool: asyncpg.Pool, settings: Settings, catalog, live_whitelist
) -> None:
    """The hub permits ``tax`` and ``again`` as the run starts; the run's history is long after
    ``tax``, so it continues as new before ``again``. The permit names the run that held it:
    that run tells it as never asked, the provider never sees it, and the next run has
    ``again`` brokered and asked for itself. Every attempt the hub allowed ends; none is left
    pending."""
    await register_fixture(pool, "continue-probe.yaml")
    h = pick(settings, lambda h: h.municipality == "city-shibuya" and h.kind == "family")
    subject = code(settings, "city-minato", h.members[0])
    # Past 2 events: a run resolved at the hub's endpoint with direct linkages may do all it
    # does within its first workflow task, when its history is 3 events long.
    short = settings.model_copy(update={"history_limit": 2})
    async with workers(client, pool, short, catalog, live_whitelist):
        handle = await sdk(client, short).start(start("continue-probe", "city-minato", subject))
        result = await handle.result()
    assert result.result == {"income": h.members[0].taxable_income, "same": True}
    first = handle.first_execution_run_id
    last = (await client.get_workflow_handle(handle.id).describe()).run_id
    assert first is not None and first != last  # it continued as new
    allowed = [
        r
        for r in await records.query(pool, workflow_id=handle.id, keeper=records.HUB)
        if r.outcome == "allowed"
    ]
    ended = await wait_for_outcomes(pool, [r.attempt_key for r in allowed])
    by_attempt = {(r.run_id, r.step): ended[r.attempt_key].outcome for r in allowed}
    assert by_attempt[(first, "tax")] == "provided"
    assert by_attempt[(first, "again")] == "not_asked"  # held when the run continued
    assert [o for (run, step), o in by_attempt.items() if step == "again" and run != first] == [
        "provided"
    ]
    asked = {
        (r.run_id, r.step)
        for r in await records.query(pool, workflow_id=handle.id, keeper="city-shibuya")
    }
    assert (first, "tax") in asked and (first, "again") not in asked
    assert len(asked) == 2
    # the kit's recorder writes both runs, the first named for its place (replay tests)
    from pathlib import Path
    from tempfile import TemporaryDirectory

    from renkei.app.kit import Report, ScenarioResult, record_histories

    ran = ScenarioResult(
        name="continued",
        passed=True,
        outcome="completed",
        linkages=[],
        problems=[],
        workflow_id=handle.id,
    )
    report = Report(bpf="continue-probe", version=1, content_hash="-", passed=True, scenarios=[ran])
    with TemporaryDirectory() as out:
        written = await record_histories(client, report, Path(out))
        assert [p.name for p in written] == ["v1-continued.run1.json", "v1-continued.json"]
        runs = [json.loads(p.read_text(encoding="utf-8"))["history"]["events"] for p in written]
    assert runs[0][-1]["eventType"] == "EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW"
    assert runs[1][-1]["eventType"] == "EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED"


async def test_starting_twice_with_one_case_reference_is_one_run(
    client: Client, pool: asyncpg.Pool, settings: Settings, catalog, live_whitelist
) -> None:
    await register_fixture(pool, "consent-probe.yaml")
    slow = settings.model_copy(update={"test_time_scale": 1e-4})
    async with workers(client, pool, slow, catalog, live_whitelist):
        flow = start("consent-probe", "city-minato", _applicant(settings), trigger="portal")
        a = await sdk(client, slow).start(flow)
        b = await sdk(client, slow).start(flow)
        assert (a.id, a.result_run_id) == (b.id, b.result_run_id)
        await _waiting(a, "consent")
        await a.execute_update("renkei.respond", Response(step="consent", payload={"agree": True}))
        await a.result()


async def test_the_http_api_starts_answers_and_reads_a_portal_application(
    client: Client, pool: asyncpg.Pool, settings: Settings, catalog, live_whitelist
) -> None:
    import httpx

    from renkei.app.web import serving
    from renkei.app.web.api import issue_token

    await register_fixture(pool, "consent-probe.yaml")
    slow = settings.model_copy(update={"test_time_scale": 1e-4})
    minato = await issue_token(pool, "city-minato")
    shibuya = await issue_token(pool, "city-shibuya")
    body = start("consent-probe", "city-minato", _applicant(settings), trigger="portal").model_dump(
        mode="json"
    )
    async with (
        workers(client, pool, slow, catalog, live_whitelist),
        serving(slow, pool, client) as base,
        httpx.AsyncClient(base_url=base, timeout=30) as http,
    ):
        auth = {"Authorization": f"Bearer {minato}"}
        assert (await http.post("/api/flows", json=body)).status_code == 401
        other = await http.post(
            "/api/flows", json=body, headers={"Authorization": f"Bearer {shibuya}"}
        )
        assert other.status_code == 403
        first = await http.post("/api/flows", json=body, headers=auth)
        assert first.status_code == 201, first.text
        again = await http.post("/api/flows", json=body, headers=auth)
        wid = first.json()["workflow_id"]
        assert (
            again.json()["workflow_id"] == wid and again.json()["run_id"] == first.json()["run_id"]
        )
        for _ in range(100):
            state = (await http.get(f"/api/flows/{wid}/state", headers=auth)).json()
            if state["waiting"]:
                break
            await asyncio.sleep(0.1)
        [w] = state["waiting"]
        assert w["step"] == "consent" and w["for_"] == "preview-consent" and "deadline" in w
        assert (
            state["run"]["trigger"] == "portal"
            and state["run"]["waiting_for"] == "consent:preview-consent"
        )
        peek = await http.get(
            f"/api/flows/{wid}/state", headers={"Authorization": f"Bearer {shibuya}"}
        )
        assert peek.status_code == 404
        bad = await http.post(
            f"/api/flows/{wid}/respond",
            json={"step": "consent", "payload": {"agree": "yes"}},
            headers=auth,
        )
        assert bad.status_code == 422 and "agree: must be of type boolean" in bad.json()["detail"]
        ok = await http.post(
            f"/api/flows/{wid}/respond",
            json={"step": "consent", "payload": {"agree": True}},
            headers=auth,
        )
        assert ok.status_code == 200 and ok.json()["step"] == "consent"
        result = await sdk(client, slow).result(wid)
        assert result.outcome == "completed"
        spec = (await http.get("/api/openapi.json")).json()
        assert {"/api/flows", "/api/flows/{workflow_id}/respond"} <= set(spec["paths"])
    waiting_runs = await sdk(client, slow).runs(bpf="consent-probe", status="completed")
    assert wid in [r.workflow_id for r in waiting_runs]
