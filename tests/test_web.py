"""The HTTP app: the codec server and the citizen's records, on a real port."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest
import pytest_asyncio
from temporalio.api.common.v1 import Payload
from typer.testing import CliRunner

from activities.agencies.synthetic import Person
from renkei.app.citizen import NotACitizen, PortalClient, RecordFilter, records_for_subject
from renkei.app.stack import temporal_cli
from renkei.app.web import serving
from renkei.app.web.codec_server import add_operator, revoke_operator
from renkei.kernel import keys, records
from renkei.kernel.channels import ENCODING as CHANNEL_ENCODING
from renkei.kernel.codec import EncryptionCodec
from renkei.kernel.pseudonyms import PORTAL, derive_code
from renkei.kernel.settings import Settings

from .helpers import (
    STAND_IN,
    approved_hold,
    child_rearing,
    code,
    households,
    hub_public,
    pick,
    run,
    start,
)


@pytest_asyncio.fixture
async def web(settings: Settings, pool: asyncpg.Pool) -> AsyncIterator[str]:
    async with serving(settings, pool) as base:
        yield base


def portal_code(settings: Settings, person: Person) -> str:
    return derive_code(keys.load(settings).hub_key, PORTAL, person.subject_id)


def _wire(payloads: list[Payload]) -> dict[str, Any]:
    from google.protobuf import json_format
    from temporalio.api.common.v1 import Payloads

    return json_format.MessageToDict(Payloads(payloads=payloads))


# -- codec server --


async def test_codec_server_decrypts_only_for_an_operator_and_logs_every_request(
    web: str, pool: asyncpg.Pool, settings: Settings
) -> None:
    clear = Payload(
        metadata={"encoding": b"json/plain"}, data=b'{"subject":"ABCDEFGHIJKLMNOPQRST"}'
    )
    [sealed] = await EncryptionCodec(keys.load(settings).codec).encode([clear])
    body = _wire([sealed])
    name = f"op-{uuid.uuid4().hex[:6]}"
    token = await add_operator(pool, name)
    async with httpx.AsyncClient(base_url=web) as http:
        refused = await http.post("/codec/decode", json=body, headers={"X-Namespace": "default"})
        assert refused.status_code == 401
        assert "ABCDEFGHIJKLMNOPQRST" not in refused.text
        granted = await http.post(
            "/codec/decode",
            json=body,
            headers={"Authorization": f"Bearer {token}", "X-Namespace": "default"},
        )
        assert granted.status_code == 200
        [out] = granted.json()["payloads"]
        assert json.loads(base64.b64decode(out["data"])) == {"subject": "ABCDEFGHIJKLMNOPQRST"}
        # encode is the inverse, for the CLI's use
        encoded = await http.post(
            "/codec/encode", json=_wire([clear]), headers={"Authorization": f"Bearer {token}"}
        )
        [enc] = encoded.json()["payloads"]
        assert base64.b64decode(enc["metadata"]["encoding"]) == CHANNEL_ENCODING
        # a revoked token is refused
        assert await revoke_operator(pool, name)
        again = await http.post(
            "/codec/decode", json=body, headers={"Authorization": f"Bearer {token}"}
        )
        assert again.status_code == 401
    log = await pool.fetch(
        "SELECT operator, action, namespace, payloads, granted FROM codec.requests"
        " WHERE at > now() - interval '1 minute' ORDER BY id DESC LIMIT 4"
    )
    assert [(r["operator"], r["action"], r["granted"]) for r in log] == [
        (None, "decode", False),
        (name, "encode", True),
        (name, "decode", True),
        (None, "decode", False),
    ]
    assert log[2]["namespace"] == "default" and log[2]["payloads"] == 1
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await pool.execute("DELETE FROM codec.requests")


async def test_an_operator_reads_only_what_is_sealed_to_its_own_party(
    web: str, pool: asyncpg.Pool, settings: Settings
) -> None:
    """A linkage answer sealed between city-minato and the JPS: the JPS's operator and
    city-minato's read it; the platform's (hub) operator and kyokai-kenpo's see it as stored.
    Each request is logged with the operator's party, the channel asked and how many opened."""
    from temporalio.converter import ActivitySerializationContext

    from renkei.contracts.names import agency_queue, workflow_id
    from workers.plugin import channel_codec

    clear = Payload(metadata={"encoding": b"json/plain"}, data=b'{"pension":1234567}')
    context = ActivitySerializationContext(
        namespace="default",
        activity_id="pension",
        activity_type="query.pension",
        activity_task_queue=agency_queue(settings.task_queue_prefix, "jps"),
        workflow_id=workflow_id("child-allowance-check", "city-minato", "case-1"),
        workflow_type="child-allowance-check",
        is_local=False,
    )
    [sealed] = await channel_codec(settings, ["jps"]).with_context(context).encode([clear])
    seen: dict[str, bytes] = {}
    async with httpx.AsyncClient(base_url=web) as http:
        for party in ("jps", "city-minato", "hub", "kyokai-kenpo"):
            name = f"op-{party}-{uuid.uuid4().hex[:6]}"
            token = await add_operator(pool, name, party)
            got = await http.post(
                "/codec/decode",
                json=_wire([sealed]),
                headers={"Authorization": f"Bearer {token}"},
            )
            assert got.status_code == 200, got.text
            seen[party] = base64.b64decode(got.json()["payloads"][0]["data"])
            row = await pool.fetchrow(
                "SELECT party, channels, opened, granted FROM codec.requests WHERE operator = $1",
                name,
            )
            assert row["party"] == party and row["granted"]
            assert row["channels"] == [sealed.metadata["renkei-channel"].decode()]
            assert row["opened"] == (1 if party in ("jps", "city-minato") else 0)
    assert seen["jps"] == seen["city-minato"] == clear.data
    assert seen["hub"] == seen["kyokai-kenpo"] == sealed.data  # shown as stored


async def test_codec_server_lets_the_temporal_ui_call_it_with_the_operator_cookie(
    web: str, pool: asyncpg.Pool, settings: Settings
) -> None:
    token = await add_operator(pool, f"op-{uuid.uuid4().hex[:6]}")
    origin = f"http://localhost:{settings.ui_port}"
    async with httpx.AsyncClient(base_url=web) as http:
        preflight = await http.options(
            "/codec/decode",
            headers={
                "Origin": origin,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "content-type,x-namespace",
            },
        )
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == origin
        assert preflight.headers["access-control-allow-credentials"] == "true"
        stranger = await http.options(
            "/codec/decode",
            headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "POST"},
        )
        assert "access-control-allow-origin" not in stranger.headers
        bad = await http.post("/codec/login", data={"token": "rko_wrong"})
        assert bad.status_code == 401
        signed_in = await http.post("/codec/login", data={"token": token})
        assert signed_in.status_code == 303 and "renkei_codec" in signed_in.headers["set-cookie"]
        assert "HttpOnly" in signed_in.headers["set-cookie"]
        [sealed] = await EncryptionCodec(keys.load(settings).codec).encode(
            [Payload(metadata={"encoding": b"json/plain"}, data=b"1")]
        )
        decoded = await http.post("/codec/decode", json=_wire([sealed]), headers={"Origin": origin})
        assert decoded.status_code == 200  # the cookie alone authorises
        assert decoded.headers["access-control-allow-origin"] == origin


async def test_temporal_cli_shows_history_through_the_codec_server(
    env, web: str, pool: asyncpg.Pool, settings: Settings, client
) -> None:
    h = pick(settings, lambda h: h.municipality == "city-minato" and h.kind == "single-parent")
    handle = await env.start(child_rearing(settings, h.members[0]))
    await handle.result()
    token = await add_operator(pool, f"op-{uuid.uuid4().hex[:6]}")
    address = client.service_client.config.target_host

    async def show(*extra: str) -> str:
        proc = await asyncio.create_subprocess_exec(
            temporal_cli(),
            "workflow",
            "show",
            "--address",
            address,
            "-w",
            handle.id,
            "-o",
            "json",
            *extra,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await proc.communicate()
        return out.decode()

    def payload_text(out: str) -> str:
        """The history's payload data, base64-decoded, as one text."""
        found: list[str] = []

        def walk(node: Any) -> None:
            if isinstance(node, dict):
                for k, v in node.items():
                    if k == "data" and isinstance(v, str):
                        found.append(base64.b64decode(v).decode("utf-8", "replace"))
                    else:
                        walk(v)
            elif isinstance(node, list):
                for v in node:
                    walk(v)

        walk(json.loads(out))
        return "\n".join(found)

    secret = code(settings, "pref-tokyo", h.members[0])
    plain = payload_text(await show())
    # The subject's code and the hub's decision on a linkage: in payloads sealed between the
    # executor and the hub (not the executor's own, which stay the executor's).
    assert plain and secret not in plain and "permitted by" not in plain
    decoded = payload_text(
        await show("--codec-endpoint", settings.codec_endpoint, "--codec-auth", f"Bearer {token}")
    )
    assert secret in decoded and "permitted by" in decoded
    refused = await show("--codec-endpoint", settings.codec_endpoint)
    assert secret not in refused


# -- the citizen's records --


async def _hub_records(pool: asyncpg.Pool, person: Person) -> set[tuple[str, str]]:
    rows = await pool.fetch(
        "SELECT coalesce(parent_workflow_id, workflow_id) AS application, step"
        " FROM records.access_records"
        " WHERE keeper = 'hub' AND subject_code = $1 AND hold_until IS NULL",
        str(person.subject_id),
    )
    # The application a record belongs to: a one-stop flow's, when a part of it linked.
    return {(r["application"], r["step"]) for r in rows}


async def test_each_citizen_gets_exactly_their_own_records(
    env, web: str, pool: asyncpg.Pool, settings: Settings
) -> None:
    couple = pick(settings, lambda h: h.kind == "family" and h.municipality == "city-minato")
    head, spouse = couple.members[0], couple.members[1]
    moved = pick(settings, lambda h: h.kind == "family" and h.municipality == "city-shibuya")
    mover = moved.members[0]
    first = await env.start(child_rearing(settings, head, spouse))
    second = await env.start(
        start(
            "child-allowance-check",
            "city-minato",
            code(settings, "city-minato", mover),
            inputs={"previous_municipality": "city-shibuya"},
        )
    )
    await first.result()
    await second.result()
    nobody = None
    for h in reversed(households(settings)):
        held = await pool.fetchval(  # none at all: a record withheld from them shows too
            "SELECT count(*) FROM records.access_records WHERE keeper = 'hub'"
            " AND subject_code = $1",
            str(h.members[0].subject_id),
        )
        if not held:
            nobody = h.members[0]
            break
    assert nobody is not None
    expected = {
        "head": {(first.id, "household"), (first.id, "own_income")},
        "spouse": {(first.id, "spouse_income")},
        "mover": {(second.id, "tax"), (second.id, "pension")},
    }
    people = {"head": head, "spouse": spouse, "mover": mover, "nobody": nobody}
    seen: dict[str, set[tuple[str, str]]] = {}
    for who, person in people.items():
        found = await PortalClient(web, portal_code(settings, person)).records()
        seen[who] = {(r.application, r.step) for r in found}
        assert seen[who] == await _hub_records(pool, person)  # all of theirs, nothing else
        assert [r.at for r in found] == sorted((r.at for r in found), reverse=True)
    for who, mine in expected.items():
        assert mine <= seen[who]
        for other, theirs in seen.items():
            if other != who:
                assert not (mine & theirs)
    assert seen["nobody"] == set()
    one = next(
        r
        for r in await PortalClient(web, portal_code(settings, spouse)).records()
        if r.application == first.id
    )
    assert (one.requester.id, one.provider.id, one.info.id, one.task.id) == (
        "pref-tokyo",
        "city-minato",
        "local-tax",
        "child-rearing-allowance",
    )
    # A linkage of today (after 2024-05-27) cites the 2015 table as the stand-in it is.
    assert one.legal_reference == "番号法別表第二 五十七項" + STAND_IN
    assert one.requester.ja == "東京都"
    # Filters: by agency, and by period.
    only_jps = await PortalClient(web, portal_code(settings, mover)).records(
        RecordFilter(agency="jps")
    )
    assert only_jps and {r.provider.id for r in only_jps} == {"jps"}
    tomorrow = dt.date.today() + dt.timedelta(days=2)
    assert (
        await PortalClient(web, portal_code(settings, mover)).records(RecordFilter(since=tomorrow))
        == []
    )


async def test_the_records_api_refuses_without_a_known_portal_code(web: str) -> None:
    async with httpx.AsyncClient(base_url=web) as http:
        assert (await http.get("/api/citizen/records")).status_code == 401
        unknown = await http.get(
            "/api/citizen/records", headers={"Authorization": "Bearer " + "A" * 20}
        )
        assert unknown.status_code == 401
    with pytest.raises(NotACitizen):
        await PortalClient(web, "B" * 20).records()


async def test_a_disclosure_hold_hides_records_until_it_ends_and_then_shows_itself(
    env, pool: asyncpg.Pool, settings: Settings, catalog
) -> None:
    h = pick(settings, lambda h: h.kind == "single-parent" and h.municipality == "city-minato")
    person = h.members[0]
    flow = child_rearing(settings, person)
    hold = await approved_hold(pool, "pref-tokyo", flow.bpf, flow.case_ref, flow.subject, days=90)
    until = hold.until
    handle = await env.start(flow.model_copy(update={"hold": hold}))
    await handle.result()
    now = await records_for_subject(pool, catalog, person.subject_id, hub=hub_public(settings))
    assert not [r for r in now if r.application == handle.id]
    # While withheld, the citizen sees that records exist and until when, not what they are.
    withheld = [
        r
        for r in now
        if r.withheld and r.held_until and abs((r.held_until - until).total_seconds()) < 1
    ]
    assert withheld and all(
        r.requester.id == "withheld" and r.hold_reason == "investigation" for r in withheld
    )
    # Asking by agency does not tell them apart: the withheld records are listed under its
    # requester, its providers and an agency that had no part in it alike.
    for agency in ("pref-tokyo", "city-minato", "jps", "city-shibuya"):
        by_agency = await records_for_subject(
            pool, catalog, person.subject_id, RecordFilter(agency=agency), hub=hub_public(settings)
        )
        assert [r.at for r in by_agency if r.withheld] == [r.at for r in now if r.withheld], agency
    later = await records_for_subject(
        pool,
        catalog,
        person.subject_id,
        hub=hub_public(settings),
        now=until + dt.timedelta(seconds=1),
    )
    held = [r for r in later if r.application == handle.id]
    assert held and all(r.hold_reason == "investigation" and r.vouched for r in held)
    assert all(
        r.held_until is not None and abs((r.held_until - until).total_seconds()) < 1 for r in held
    )
    # The hold is part of the hashed record, for the requester and the hub alike.
    kept = await records.query(pool, workflow_id=handle.id)
    assert {r.keeper for r in kept if r.hold_reason == "investigation"} == {"pref-tokyo", "hub"}


def test_records_mine_and_subjects_enroll_on_the_command_line(
    cli: CliRunner, settings: Settings
) -> None:
    from renkei.kernel.pseudonyms import synthetic_number

    number = synthetic_number(uuid.uuid4())
    code_, portal = run(cli, "subjects", "enroll", "--org", "portal", input=f"{number}\n")
    assert code_ == 0
    portal = portal.strip().splitlines()[-1]
    assert len(portal) == 20 and number not in portal
    code_, minato = run(cli, "subjects", "enroll", "--org", "city-minato", "--number", number)
    assert code_ == 0 and minato.strip() != portal
    code_, out = run(cli, "subjects", "enroll", "--org", "city-minato", "--number", "123")
    assert code_ == 2 and "12 digits" in out
    code_, out = run(cli, "records", "mine", "--portal-code", portal, "--json")
    assert code_ == 0 and json.loads(out.splitlines()[0]) == []
    code_, out = run(cli, "records", "mine", "--portal-code", "C" * 20)
    assert code_ == 1 and "not known" in out
