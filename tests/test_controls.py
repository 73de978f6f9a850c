"""The PIA gate and the emergency stop against the real servers: a linkage either party has no
PIA in force for is denied and recorded with the reason; a platform operator's suspension stops
an in-flight flow's next linkage without a restart of anything, and its lift lets the next one
through; every change is kept with who and why; bad input gets its reason."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import uuid
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from temporalio.client import WorkflowFailureError
from temporalio.exceptions import ApplicationError

from renkei.app.web import serving
from renkei.app.web.codec_server import add_operator
from renkei.kernel import keys
from whitelist import controls_store
from whitelist.catalog import default_catalog
from whitelist.controls import Pia, parties_needing_pias
from whitelist.decide import JST
from whitelist.local import all_rows
from whitelist.store import LiveWhitelist

from .helpers import (
    child_rearing,
    code,
    hub_key,
    operator_token,
    pick,
    records_by_party,
    register_fixture,
    run,
    shibuya_family,
    start,
)

TASK = "child-rearing-allowance"


def _today() -> dt.date:
    return dt.datetime.now(JST).date()


@contextlib.asynccontextmanager
async def _changed_pia(pool, live: LiveWhitelist, org: str, task: str) -> AsyncIterator[Pia]:
    """(org, task)'s PIA as it is; put back as it was (a new event) when the block ends."""
    [before] = await controls_store.pias(pool, org, task, hub=hub_key().public_key())
    try:
        yield before
    finally:
        _, version = await controls_store.set_pia(pool, before, "test (put back)", hub=hub_key())
        await live.controls.wait_for_version(version)


async def _denied(handle) -> ApplicationError:
    with pytest.raises(WorkflowFailureError) as failure:
        await handle.result()
    cause = failure.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == "LinkageDenied", cause
    return cause


async def _records_say(pool, wid: str, expected: str) -> None:
    """The requester's and the hub's records of the run's one attempt say ``expected``; the
    provider was never asked."""
    found = await records_by_party(pool, wid)
    kept = {party for party, _ in found}
    assert kept == {"requester", "hub"}, found
    for (_, step), records in found.items():
        [rec] = records
        assert rec.outcome == "denied" and rec.whitelist_row is None and rec.legal_reference == ""
        assert expected in rec.reason, (step, rec.reason)


async def test_a_lapsed_pia_denies_the_linkage_and_both_records_say_why(
    env, pool, settings, live_whitelist
) -> None:
    person = pick(settings, lambda h: h.municipality == "city-minato").members[0]
    async with _changed_pia(pool, live_whitelist, "pref-tokyo", TASK) as before:
        yesterday = _today() - dt.timedelta(days=1)
        lapsed = before.model_copy(
            update={"approved_on": yesterday - dt.timedelta(days=5 * 365), "review_due": yesterday}
        )
        _, version = await controls_store.set_pia(pool, lapsed, "test", hub=hub_key())
        await live_whitelist.controls.wait_for_version(version)
        handle = await env.start(child_rearing(settings, person))
        cause = await _denied(handle)
    expected = f"pref-tokyo's PIA for task {TASK!r} is lapsed: its review was due on {yesterday}"
    assert expected in cause.message
    await _records_say(pool, handle.id, expected)
    # Put back, the same linkage goes through again.
    again = await env.start(child_rearing(settings, person))
    assert (await again.result()).outcome == "completed"


async def test_a_withdrawn_pia_of_the_provider_denies_and_its_history_is_kept(
    env, pool, settings, live_whitelist
) -> None:
    person = pick(settings, lambda h: h.municipality == "city-minato").members[0]
    async with _changed_pia(pool, live_whitelist, "city-minato", TASK):
        _, version = await controls_store.withdraw_pia(
            pool,
            "city-minato",
            TASK,
            "the assessment is being redone",
            "test-operator",
            hub=hub_key(),
        )
        await live_whitelist.controls.wait_for_version(version)
        handle = await env.start(child_rearing(settings, person))
        cause = await _denied(handle)
        with pytest.raises(controls_store.ControlRefused, match="already withdrawn"):
            await controls_store.withdraw_pia(
                pool, "city-minato", TASK, "twice", "test-operator", hub=hub_key()
            )
    expected = f"city-minato's PIA for task {TASK!r} is withdrawn on {_today()}"
    assert expected in cause.message and "the assessment is being redone" in cause.message
    await _records_say(pool, handle.id, expected)
    history = await controls_store.pia_history(
        pool, "city-minato", TASK, hub=hub_key().public_key()
    )
    assert [e.status for e in history[-3:]] == ["active", "withdrawn", "active"]
    withdrawn = history[-2]
    assert withdrawn.recorded_by == "test-operator"
    assert withdrawn.note == "the assessment is being redone"
    # The past is kept as it was: the application may not rewrite it, nor may the owner.
    for role in ("", "SET LOCAL ROLE NONE"):
        async with pool.acquire() as conn, conn.transaction():
            if role:
                await conn.execute(role)
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute(
                    "UPDATE controls.pia_events SET status = 'active' WHERE seq = $1",
                    withdrawn.seq,
                )


async def test_a_pia_or_a_lift_appended_in_the_database_decides_nothing(
    env, pool, settings, base_settings, live_whitelist
) -> None:
    """Any process with the application's role can append to the PIA registry and the
    emergency stop's events: an active PIA or a lift appended so would have every gate let the
    linkage through. Only the events the hub signed count: an unsigned one, one with a signature
    copied from another event, or one under a number chosen ahead decides nothing; a version
    number pushed ahead does not keep the workers from the hub's next change; a target whose
    newest events none hold is taken as suspended until the hub's own next event."""
    hub = hub_key()
    person = pick(settings, lambda h: h.municipality == "city-minato").members[0]
    org_task = ("city-minato", TASK)
    index = lambda: live_whitelist.controls.index  # noqa: E731

    async def written(sql: str, *values: object) -> None:  # the application's role, and a bump
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute(sql, *values)
            version = await conn.fetchval(
                "UPDATE controls.version SET version = version + 1 RETURNING version"
            )
            await conn.execute("SELECT pg_notify('renkei_controls', $1)", str(version))

    async def until(check: object) -> None:  # bounded: the notice reaching the worker
        for _ in range(200):
            if callable(check) and check():
                return
            await asyncio.sleep(0.05)
        raise AssertionError("the workers never took the hub's change")

    pia_columns = "org, task, level, approved_on, review_due, status, note, recorded_by"
    async with _changed_pia(pool, live_whitelist, *org_task) as before:
        [signed_active] = [
            e
            for e in await controls_store.pia_history(pool, *org_task, hub=hub.public_key())
            if e.status == "active" and e.holds
        ][-1:]
        _, version = await controls_store.withdraw_pia(
            pool, *org_task, "redone", "test-operator", hub=hub
        )
        await live_whitelist.controls.wait_for_version(version)
        active = (*org_task, before.level, before.approved_on, before.review_due, "active")
        # An active PIA appended unsigned; then one carrying a signed event's signature.
        await written(
            f"INSERT INTO controls.pia_events ({pia_columns}) VALUES"
            " ($1, $2, $3, $4, $5, $6, '', 'someone')",
            *active,
        )
        copied = await pool.fetchrow(
            "SELECT signing_id, signature FROM controls.pia_events WHERE seq = $1",
            signed_active.seq,
        )
        await written(
            f"INSERT INTO controls.pia_events ({pia_columns}, recorded_at, signing_id, signature)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            *active,
            signed_active.note,
            signed_active.recorded_by,
            signed_active.recorded_at,
            *copied,
        )
        # Under a number chosen ahead (the hub's next event would fail on it): refused.
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await written(
                f"INSERT INTO controls.pia_events (seq, {pia_columns}) VALUES"
                " ($1, $2, $3, $4, $5, $6, $7, '', 'someone')",
                2**62,
                *active,
            )
        await asyncio.sleep(1.0)  # the notices reached the workers, which read them
        assert index().pia(*org_task) is not None
        assert index().pia(*org_task).status == "withdrawn"  # type: ignore[union-attr]
        [found] = await controls_store.pias(pool, *org_task, hub=hub.public_key())
        assert found.status == "withdrawn"
        history = await controls_store.pia_history(pool, *org_task, hub=hub.public_key())
        assert [(e.status, e.holds) for e in history[-3:]] == [
            ("withdrawn", True),
            ("active", False),
            ("active", False),
        ]
        cause = await _denied(await env.start(child_rearing(settings, person)))
        assert f"city-minato's PIA for task {TASK!r} is withdrawn" in cause.message
        # The version number pushed far ahead, then back: the hub's next change still reaches
        # the workers (newer is the hub's word, not the number).
        await written("UPDATE controls.version SET version = version + 1000000")
        await asyncio.sleep(0.5)
        await written("UPDATE controls.version SET version = version - 1000002")
    await until(lambda: getattr(index().pia(*org_task), "status", None) == "active")
    assert (await env.start(child_rearing(settings, person))).id  # started: put back

    # The emergency stop: a lift appended unsigned does not lift.
    def stopped(target: str) -> str | None:
        return next((s.reason for s in index().suspensions() if s.target == target), None)

    stop = "test/" + uuid.uuid4().hex[:8]  # a whitelist row's id: only this test's
    await controls_store.suspend(pool, "row", stop, "drill", "test-operator", hub=hub)
    lift_columns = "kind, target, action, reason, operator"
    await written(
        f"INSERT INTO controls.suspension_events ({lift_columns})"
        " VALUES ('row', $1, 'lift', 'someone', 'someone')",
        stop,
    )
    await asyncio.sleep(1.0)
    assert stopped(stop) == "drill"
    in_force = await controls_store.suspensions(pool, hub=hub.public_key())
    assert [s.reason for s in in_force if s.target == stop] == ["drill"]
    # Unsigned events, however many, hide nothing: they are not even read.
    junk = f"INSERT INTO controls.suspension_events ({lift_columns}, signing_id, signature)"
    await written(
        f"{junk} SELECT 'row', $1, 'lift', 'someone', 'someone', NULL, NULL"
        " FROM generate_series(1, $2)",
        stop,
        2 * controls_store.EVENTS_LOOKED_AT,
    )
    assert [
        s.reason
        for s in await controls_store.suspensions(pool, hub=hub.public_key())
        if s.target == stop
    ] == ["drill"]
    # Events claiming the hub's key, enough to hide its newest: taken as suspended (nothing
    # says the hub lifted it); one signed with another key: the same.
    hub_id = keys.key_id(keys.public_raw(hub.public_key()))
    hidden, other = ("test/" + uuid.uuid4().hex[:8] for _ in range(2))
    for target in (hidden, other):
        await controls_store.suspend(pool, "row", target, "drill", "test-operator", hub=hub)
        await controls_store.lift(pool, "row", target, "drill over", "test-operator", hub=hub)
    await written(
        f"{junk} SELECT 'row', $1, 'lift', 'someone', 'someone', $3, 'AAAA'"
        " FROM generate_series(1, $2)",
        hidden,
        controls_store.EVENTS_LOOKED_AT,
        hub_id,
    )
    await written(
        f"{junk} VALUES ('row', $1, 'lift', 'someone', 'someone', 'another-key', 'AAAA')", other
    )
    await until(lambda: "none holds" in (stopped(hidden) or "") and bool(stopped(other)))
    # A reader that pinned a key the hub does not sign with (a stale key file) takes none of
    # the hub's events since signing began: a suspension reads as in force, a PIA as none.
    stale = Ed25519PrivateKey.generate().public_key()
    assert stop in {s.target for s in await controls_store.suspensions(pool, hub=stale)}
    assert not await controls_store.pias(pool, *org_task, hub=stale)
    # A function of the same name put first on the search path does not change what the
    # numbering trigger checks: it resolves names in the system catalog only.
    async with pool.acquire() as conn:
        begun = conn.transaction()
        await begun.start()
        try:
            await conn.execute("SET LOCAL ROLE NONE")
            await conn.execute(
                "CREATE FUNCTION public.currval(regclass) RETURNS bigint LANGUAGE sql"
                " AS 'SELECT 4611686018427387904::bigint'"
            )
            await conn.execute("SET LOCAL search_path = public, pg_catalog")
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute(
                    f"INSERT INTO controls.suspension_events (seq, {lift_columns})"
                    " VALUES (4611686018427387904, 'row', 'x', 'lift', 'someone', 'someone')"
                )
        finally:
            await begun.rollback()
    # The hub's own events lift both.
    # An agency's database role cannot hold up the hub's changes: their lock is a row of a table
    # it may not read (an advisory lock, open to every role, it could hold for ever).
    from renkei.kernel.db import create_pool, party_role

    agency = await create_pool(
        base_settings.database_url, max_size=1, role=party_role("city-minato")
    )
    try:
        async with agency.acquire() as conn:
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                async with conn.transaction():
                    await conn.execute(
                        "SELECT 1 FROM records.platform_locks WHERE name = 'controls'"
                        " FOR NO KEY UPDATE"
                    )
            await conn.execute("SELECT pg_advisory_lock(125779969795433)")  # the writers' before
            try:
                async with asyncio.timeout(30):
                    for target in (stop, hidden, other):
                        await controls_store.lift(
                            pool, "row", target, "drill over", "test-operator", hub=hub
                        )
            finally:
                await conn.execute("SELECT pg_advisory_unlock_all()")
    finally:
        await agency.close()
    await until(lambda: not {stop, hidden, other} & {s.target for s in index().suspensions()})


async def _until_waiting(rc, wid: str) -> None:
    for _ in range(600):
        if await rc.waiting(wid):
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the flow never waited")


async def test_a_suspension_stops_an_in_flight_flows_next_linkage_and_its_lift_lets_it_through(
    env, client, pool, settings, live_whitelist
) -> None:
    await register_fixture(pool, "stop-probe.yaml")
    person = shibuya_family(settings).members[0]
    operator = f"stop-{uuid.uuid4().hex[:6]}"
    token = await add_operator(pool, operator)
    platform = {"Authorization": f"Bearer {token}"}
    flows = [
        await env.start(start("stop-probe", "city-minato", code(settings, "city-minato", person)))
        for _ in range(2)
    ]
    for handle in flows:
        await _until_waiting(env, handle.id)
    async with serving(settings, pool, client) as base, httpx.AsyncClient(base_url=base) as http:
        stop = {"kind": "org", "target": "city-shibuya", "side": "provider"}
        made = await http.post(
            "/api/platform/suspensions",
            json={**stop, "reason": "a suspected leak under investigation"},
            headers=platform,
        )
        assert made.status_code == 201, made.text
        assert made.json()["suspension"]["operator"] == operator
        # The running workers hear of it (no restart): bounded, not a measure of speed.
        await live_whitelist.controls.wait_for_version(made.json()["version"])
        await env.respond(flows[0].id, "go", {"go": True})
        cause = await _denied(flows[0])
        expected = f"suspended: org city-shibuya (as provider) suspended by {operator}"
        assert expected in cause.message and "a suspected leak" in cause.message
        await _records_say(pool, flows[0].id, expected)

        lifted = await http.post(
            "/api/platform/suspensions/lift",
            json={"kind": "org", "target": "city-shibuya", "reason": "the leak was elsewhere"},
            headers=platform,
        )
        assert lifted.status_code == 200, lifted.text
        await live_whitelist.controls.wait_for_version(lifted.json()["version"])
        await env.respond(flows[1].id, "go", {"go": True})
        assert (await flows[1].result()).outcome == "completed"
        found = await records_by_party(pool, flows[1].id)
        assert {r.outcome for rs in found.values() for r in rs} == {"allowed"}

        history = await http.get(
            "/api/platform/suspensions/history",
            params={"kind": "org", "target": "city-shibuya"},
            headers=platform,
        )
        assert [(e["action"], e["operator"], e["reason"]) for e in history.json()][-2:] == [
            ("suspend", operator, "a suspected leak under investigation"),
            ("lift", operator, "the leak was elsewhere"),
        ]
        now = await http.get("/api/platform/suspensions", headers=platform)
        assert not [s for s in now.json() if s["target"] == "city-shibuya"]


async def test_a_suspended_bpf_version_admits_no_new_run_and_its_runs_show_it(
    env, client, pool, settings, live_whitelist, cli, monkeypatch
) -> None:
    from renkei.app.web.api import issue_token

    await register_fixture(pool, "stop-probe.yaml")
    operator = f"stop-{uuid.uuid4().hex[:6]}"
    platform = {"Authorization": f"Bearer {await add_operator(pool, operator)}"}
    agency = {"Authorization": f"Bearer {await issue_token(pool, 'city-minato')}"}
    subject = code(settings, "city-minato", shibuya_family(settings).members[0])
    body = {
        "bpf": "stop-probe",
        "version": 1,
        "executor": "city-minato",
        "subject": subject,
        "case_ref": f"case-{uuid.uuid4().hex[:8]}",
    }
    in_flight = await env.start(start("stop-probe", "city-minato", subject))
    await _until_waiting(env, in_flight.id)
    monkeypatch.setenv("RENKEI_TEMPORAL_ADDRESS", client.service_client.config.target_host)
    async with serving(settings, pool, client) as base, httpx.AsyncClient(base_url=base) as http:
        what = {"kind": "bpf", "target": "stop-probe", "version": 1}
        made = await http.post(
            "/api/platform/suspensions", json={**what, "reason": "wrong letters"}, headers=platform
        )
        assert made.status_code == 201, made.text
        await live_whitelist.controls.wait_for_version(made.json()["version"])
        try:
            refused = await http.post("/api/flows", json=body, headers=agency)
            assert refused.status_code == 403
            assert "no new run starts: BPF stop-probe v1 suspended" in refused.json()["detail"]
            # Past the API (the SDK, Temporal itself), the hub refuses it at its first step.
            handle = await env.start(start("stop-probe", "city-minato", subject))
            with pytest.raises(WorkflowFailureError) as failure:
                await handle.result()
            assert isinstance(failure.value.cause, ApplicationError)
            assert failure.value.cause.type == "Suspended"
            # `renkei runs` shows it beside the run still in flight.
            code_, out = await asyncio.to_thread(run, cli, "runs", "--bpf", "stop-probe")
            [line] = [ln for ln in out.splitlines() if ln.startswith(in_flight.id)]
            assert code_ == 0 and "suspended: BPF stop-probe v1 (wrong letters)" in line, out
            # The run in flight is denied at its next linkage.
            await env.respond(in_flight.id, "go", {"go": True})
            cause = await _denied(in_flight)
            assert "suspended: BPF stop-probe v1 suspended by" in cause.message
        finally:
            lifted = await http.post(
                "/api/platform/suspensions/lift",
                json={**what, "reason": "fixed"},
                headers=platform,
            )
            assert lifted.status_code == 200, lifted.text
        # An executor suspended as requester starts nothing either; as provider only, it does.
        for side, status in (("requester", 403), ("provider", 201)):
            who = {"kind": "org", "target": "city-minato"}
            made = await http.post(
                "/api/platform/suspensions",
                json={**who, "side": side, "reason": "drill"},
                headers=platform,
            )
            assert made.status_code == 201, made.text
            try:
                got = await http.post("/api/flows", json=body, headers=agency)
                assert got.status_code == status, got.text
                if status == 403:
                    assert "org city-minato (as requester) suspended by" in got.text
            finally:
                await http.post(
                    "/api/platform/suspensions/lift",
                    json={**who, "reason": "drill over"},
                    headers=platform,
                )


async def test_only_a_platform_operator_changes_anything_and_bad_input_gets_its_reason(
    client, pool, settings
) -> None:
    platform = {"Authorization": f"Bearer {await add_operator(pool, 'platform-checks')}"}
    minato = {"Authorization": f"Bearer {await add_operator(pool, 'minato-ops', 'city-minato')}"}
    stop = {"kind": "org", "target": "city-minato", "reason": "test"}
    async with serving(settings, pool, client) as base, httpx.AsyncClient(base_url=base) as http:
        assert (await http.post("/api/platform/suspensions", json=stop)).status_code == 401
        wrong = await http.post(
            "/api/platform/suspensions", json=stop, headers={"Authorization": "Bearer rko_no"}
        )
        assert wrong.status_code == 401
        org_op = await http.post("/api/platform/suspensions", json=stop, headers=minato)
        assert org_op.status_code == 403 and "city-minato's" in org_op.json()["detail"]
        pia = {"level": "full", "approved_on": "2026-04-01", "review_due": "2031-03-31"}
        cases = [
            (
                "post",
                "/api/platform/suspensions",
                {**stop, "target": "city-minatoo"},
                "did you mean",
            ),
            ("post", "/api/platform/suspensions", {**stop, "kind": "bpf"}, "one version at a time"),
            ("post", "/api/platform/suspensions", {**stop, "reason": ""}, "reason"),
            ("post", "/api/platform/suspensions", {**stop, "reason": "a\nb"}, "reason"),
            ("post", "/api/platform/suspensions", {**stop, "kind": "row"}, "no whitelist row"),
            (
                "post",
                "/api/platform/suspensions",
                {**stop, "kind": "bpf", "target": "no-such-flow", "version": 3},
                "not registered",
            ),
            ("post", "/api/platform/suspensions/lift", stop, "no suspension of org city-minato"),
            ("put", f"/api/platform/pias/city-minato/{TASK}", {**pia, "level": "big"}, "level"),
            (
                "put",
                f"/api/platform/pias/city-minato/{TASK}",
                {**pia, "review_due": "2025-01-01"},
                "review_due: before approved_on",
            ),
            ("put", "/api/platform/pias/city-minato/no-such-task", pia, "unknown task"),
            (
                "post",
                "/api/platform/pias/mhlw/no-such-task/withdraw",
                {"reason": "x"},
                "unknown task",
            ),
        ]
        for method, path, body, expected in cases:
            got = await http.request(method, path, json=body, headers=platform)
            assert got.status_code == 422, (path, body, got.text)
            assert expected in got.text, (path, body, got.text)
        listed = await http.get(
            "/api/platform/pias", params={"org": "city-minato", "task": TASK}, headers=platform
        )
        assert [p["status"] for p in listed.json()] == ["active"]
        missing = await http.get("/api/platform/pias/mhlw/no-such-task/history", headers=platform)
        assert missing.status_code == 404


def test_the_cli_records_who_and_why_and_refuses_bad_input(cli) -> None:
    operator = f"cli-{uuid.uuid4().hex[:6]}"
    token = operator_token(cli, operator)
    minato = operator_token(cli, f"{operator}-minato", "--party", "city-minato")

    def by_(who: str, *args: str) -> tuple[int, str]:
        return run(cli, *args, token=who)

    def by(*args: str) -> tuple[int, str]:
        return by_(token, *args)

    code_, out = by_("", "suspend", "org", "city-minato", "--reason", "drill")
    assert code_ == 2 and "error: sign in: set RENKEI_OPERATOR_TOKEN" in out, out
    assert "Traceback" not in out
    code_, out = by_("rko_nobody", "pia", "withdraw", "jps", TASK, "--reason", "x")
    assert code_ == 2 and "not a current operator token (revoked or unknown)" in out, out
    code_, out = by_(minato, "suspend", "org", "city-minato", "--reason", "drill")
    assert code_ == 2 and "an operator of city-minato's" in out
    code_, out = by_(minato, "pia", "withdraw", "city-minato", TASK, "--reason", "x")
    assert code_ == 2 and "(executor of city-minato) is not a platform operator" in out, out
    code_, out = by("suspend", "org", "jps", "--reason", "drill", "--operator", "someone")
    assert code_ == 2 and "No such option: --operator" in out, out
    code_, out = by("suspend", "org", "city-minatoo", "--reason", "drill")
    assert code_ == 2 and "did you mean" in out
    code_, out = by("suspend", "org", "city-minato", "--side", "sideways", "--reason", "x")
    assert code_ == 2 and "side:" in out and "Traceback" not in out
    code_, out = by("lift", "row", "no/such/row", "--reason", "x")
    assert code_ == 2 and "no suspension of row no/such/row is in force" in out

    code_, out = by("suspend", "org", "jps", "--side", "requester", "--reason", "drill")
    assert code_ == 0 and f"org jps (as requester) suspended by {operator}" in out, out
    code_, out = by("suspensions")
    assert code_ == 0 and "org jps (as requester)" in out and "drill" in out
    code_, out = by("lift", "org", "jps", "--reason", "drill over")
    assert code_ == 0 and f"lifted by {operator}: drill over" in out, out
    code_, out = by("suspensions", "--history")
    assert "suspend\torg jps (as requester)" in out and "lift\torg jps" in out

    code_, out = by(
        "pia", "set", "jps", "no-such-task", "--level", "full", "--approved", "2026-04-01",
        "--review-due", "2031-03-31",
    )  # fmt: skip
    assert code_ == 2 and "unknown task" in out
    code_, out = by(
        "pia", "set", "jps", TASK, "--level", "full", "--approved", "2026-13-01",
        "--review-due", "2031-03-31",
    )  # fmt: skip
    assert code_ == 2 and "--approved is a day" in out
    catalog = default_catalog()
    needed = set(parties_needing_pias(catalog, all_rows(catalog)))
    org, task = next((o, t) for o in catalog.orgs for t in catalog.tasks if (o, t) not in needed)
    code_, out = by("pia", "withdraw", org, task, "--reason", "x")
    assert code_ == 2 and "no PIA recorded" in out, out
    code_, out = by("pia", "list", "--org", "city-minato", "--task", TASK)
    assert code_ == 0 and "全項目評価" in out and "in force" in out


def test_bpf_validate_warns_of_an_executor_without_a_pia_in_force(cli) -> None:
    from tests.paths import SAMPLES_DIR

    sample = str(SAMPLES_DIR / "child-allowance.yaml")  # run by every municipal mayor
    operator = f"cli-{uuid.uuid4().hex[:6]}"
    token = operator_token(cli, operator)
    code_, out = run(cli, "bpf", "validate", sample)
    assert code_ == 0 and "PIA" not in out, out
    code_, _ = run(
        cli, "pia", "withdraw", "city-shibuya", "child-allowance", "--reason", "redo", token=token
    )
    assert code_ == 0
    code_, out = run(cli, "pia", "history", "city-shibuya", "child-allowance")
    last = out.splitlines()[-1].split("\t")
    assert (last[1], last[5]) == ("withdrawn", operator), out  # recorded as the signed-in one
    try:
        code_, out = run(cli, "bpf", "validate", sample)
        # A warning, located at the executors, naming the org and why; the file still passes.
        assert code_ == 0 and f"ok: {sample}" in out, out
        [warning] = [ln for ln in out.splitlines() if ln.startswith("warning:") and "PIA" in ln]
        assert "owners.executors[0]" in warning
        assert "executor city-shibuya's PIA for task 'child-allowance' is withdrawn" in warning
        assert "city-minato" not in warning
    finally:
        code_, out = run(
            cli, "pia", "set", "city-shibuya", "child-allowance", "--level", "full",
            "--approved", "2026-04-01", "--review-due", "2031-03-31", token=token,
        )  # fmt: skip
        assert code_ == 0, out


async def test_a_provider_suspended_after_the_hub_permitted_refuses_at_its_own_gate(
    client, pool, settings, catalog, live_whitelist, base_settings
) -> None:
    """The hub's index has not heard of the suspension yet (it stops following the controls
    here); the provider's gate has, and refuses the attempt the hub permitted, before any
    provider code."""
    from .helpers import allowance_check, sdk, workers

    assert base_settings.database_url
    hubs_view = await LiveWhitelist(
        base_settings.database_url, sealed_by=keys.load(base_settings).signer().public_key()
    ).start()
    hubs_view.controls.freeze()  # frozen: the hub decides on what it knew before
    operator = f"stop-{uuid.uuid4().hex[:6]}"
    await add_operator(pool, operator)
    _, version = await controls_store.suspend(
        pool,
        "org",
        "city-shibuya",
        "the provider's own stop",
        operator,
        side="provider",
        hub=hub_key(),
    )
    try:
        await live_whitelist.controls.wait_for_version(version)
        async with (
            workers(client, pool, settings, catalog, hubs_view, agencies=()),
            workers(client, pool, settings, catalog, live_whitelist, control=False),
        ):
            handle = await sdk(client, settings).start(allowance_check(settings))
            with pytest.raises(WorkflowFailureError) as failure:
                await handle.result()
    finally:
        _, version = await controls_store.lift(
            pool, "org", "city-shibuya", "drill over", operator, hub=hub_key()
        )
        await live_whitelist.controls.wait_for_version(version)
        await hubs_view.stop()
    assert "suspended: org city-shibuya (as provider)" in str(failure.value.cause)
    found = await records_by_party(pool, handle.id)
    [hubs] = found[("hub", "tax")]
    [gates] = found[("provider", "tax")]
    assert hubs.outcome == "allowed"  # the hub permitted it ...
    assert gates.outcome == "denied" and gates.keeper == "city-shibuya"  # ... the gate did not
    assert "suspended: org city-shibuya (as provider)" in gates.reason


async def test_one_listener_follows_both_channels_and_comes_back_after_losing_its_connection(
    pool, base_settings
) -> None:
    """A LiveWhitelist listens on one connection for its rows and its controls: a change on each
    channel reaches it; its connection killed by the server, it reconnects and both channels
    reach it again."""
    from whitelist import store
    from whitelist.models import WhitelistRow

    assert base_settings.database_url
    operator = f"live-{uuid.uuid4().hex[:6]}"
    await add_operator(pool, operator)
    probe = f"live-probe-{uuid.uuid4().hex[:6]}"
    row = WhitelistRow(
        id=f"test/{probe}",
        source="test",
        item="live",
        requester_role="municipal-mayor",
        task=probe,
        provider_role="jasso",
        info="local-tax",
        legal_text="test",
        valid_from=dt.date(2020, 1, 1),
    )
    asked = (["municipal-mayor"], probe, ["jasso"], "local-tax", dt.datetime.now(JST).date())
    live = await LiveWhitelist(
        base_settings.database_url, sealed_by=keys.load(base_settings).signer().public_key()
    ).start()
    try:
        for turn in ("before", "after"):
            if turn == "after":  # the server drops the one listening connection
                own = {live._listener._conn.get_server_pid()} if live._listener._conn else set()
                assert len(own) == 1
                admin = await asyncpg.connect(base_settings.database_url)  # the login user
                try:
                    assert await admin.fetchval("SELECT pg_terminate_backend($1)", own.pop())
                finally:
                    await admin.close()
            _, version = await controls_store.suspend(
                pool, "bpf", probe, turn, operator, version=1, hub=hub_key()
            )
            await live.controls.wait_for_version(version, timeout=30)
            assert live.controls.index.bpf_suspension(probe, 1) is not None, turn
            _, version = await controls_store.lift(
                pool, "bpf", probe, turn, operator, version=1, hub=hub_key()
            )
            await live.controls.wait_for_version(version, timeout=30)
            assert live.controls.index.bpf_suspension(probe, 1) is None, turn
            version = await store.upsert_rows(pool, [row], hub=keys.load(base_settings).signer())
            await live.wait_for_version(version, timeout=30)
            assert live.index.decide(*asked).allowed, turn
            version = await store.delete_rows(pool, [row.id], hub=keys.load(base_settings).signer())
            await live.wait_for_version(version, timeout=30)
            assert not live.index.decide(*asked).allowed, turn
    finally:
        await live.stop()
