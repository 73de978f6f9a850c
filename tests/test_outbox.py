"""The executor's outbox: a wait's reminder reaches its executor, and only it, at least once,
until the executor acknowledges it (SDK, HTTP API, CLI)."""

from __future__ import annotations

import asyncio

import asyncpg
import httpx
import pytest
from temporalio.client import Client
from typer.testing import CliRunner

from renkei.app import outbox
from renkei.app.web import serving
from renkei.app.web.api import issue_token
from renkei.kernel.settings import Settings

from .helpers import code, pick, register_fixture, run, sdk, start, workers


def _applicant(settings: Settings) -> str:
    h = pick(settings, lambda h: h.municipality == "city-shibuya")
    return code(settings, "city-minato", h.members[0])


async def _reminded(
    client: Client, pool: asyncpg.Pool, settings: Settings, catalog, live_whitelist
) -> tuple[str, str]:
    """Run consent-probe (30-day wait, reminder 7 days before) until it times out; its
    workflow id and subject code."""
    await register_fixture(pool, "consent-probe.yaml")
    fast = settings.model_copy(update={"test_time_scale": 1e-6})  # 30 days ≈ 2.6 s
    subject = _applicant(settings)
    async with workers(client, pool, fast, catalog, live_whitelist):
        handle = await sdk(client, fast).start(
            start("consent-probe", "city-minato", subject, trigger="portal")
        )
        result = await asyncio.wait_for(handle.result(), 60)
    assert result.outcome == "rejected"  # nobody answered: it reminded, then timed out
    return handle.id, subject


async def _ids(pool: asyncpg.Pool, org: str) -> set[int]:
    return {m.id for m in await outbox.pending(pool, org)}


async def test_a_reminder_is_delivered_to_its_executor_until_acknowledged(
    client: Client, pool: asyncpg.Pool, settings: Settings, catalog, live_whitelist
) -> None:
    wid, subject = await _reminded(client, pool, settings, catalog, live_whitelist)
    [m] = [m for m in await outbox.pending(pool, "city-minato") if m.workflow_id == wid]
    assert (m.kind, m.step, m.waits_for) == ("reminder", "consent", "preview-consent")
    assert m.deliveries >= 1
    assert subject not in m.model_dump_json()  # nothing personal: the flow's id says which
    for other in ("city-shibuya", "jps"):  # not in another org's outbox, nor theirs to ack
        assert m.id not in await _ids(pool, other)
        assert await outbox.ack(pool, other, m.id) is None
    # at least once: listed again (and counted) until acknowledged
    [again] = [x for x in await outbox.pending(pool, "city-minato") if x.id == m.id]
    assert again.deliveries == m.deliveries + 1
    # a body that fails leaves its message for the next delivery
    with pytest.raises(RuntimeError):
        async for got in outbox.deliver(pool, "city-minato"):
            if got.id == m.id:
                raise RuntimeError("the letter did not go out")
    assert m.id in await _ids(pool, "city-minato")
    # a body that completes acknowledges it; the iterator ends with the outbox empty
    delivered = [got.id async for got in outbox.deliver(pool, "city-minato")]
    assert m.id in delivered
    assert m.id not in await _ids(pool, "city-minato")
    acked = await outbox.ack(pool, "city-minato", m.id)  # again: the first time stands
    assert acked is not None and acked.id == m.id


async def test_the_api_and_the_cli_serve_an_org_its_own_outbox_only(
    client: Client,
    pool: asyncpg.Pool,
    settings: Settings,
    catalog,
    live_whitelist,
    cli: CliRunner,
) -> None:
    wid, subject = await _reminded(client, pool, settings, catalog, live_whitelist)
    minato = {"Authorization": f"Bearer {await issue_token(pool, 'city-minato')}"}
    shibuya = {"Authorization": f"Bearer {await issue_token(pool, 'city-shibuya')}"}
    async with serving(settings, pool, client) as base, httpx.AsyncClient(base_url=base) as http:
        assert (await http.get("/api/outbox")).status_code == 401
        listed = await http.get("/api/outbox", headers=minato)
        assert listed.status_code == 200 and subject not in listed.text
        [m] = [m for m in listed.json() if m["workflow_id"] == wid]
        assert m["step"] == "consent" and m["waits_for"] == "preview-consent"
        others = await http.get("/api/outbox", headers=shibuya)
        assert others.status_code == 200 and wid not in others.text
        # another org's message and an unknown one get the same 404
        for headers, mid in ((shibuya, m["id"]), (minato, outbox.MAX_ID)):
            refused = await http.post(f"/api/outbox/{mid}/ack", headers=headers)
            assert refused.status_code == 404, refused.text
            assert refused.json() == {"detail": "no such message in your outbox"}
        assert (await http.post("/api/outbox/0/ack", headers=minato)).status_code == 422
        again = await http.get("/api/outbox", headers=minato)
        assert [x["deliveries"] for x in again.json() if x["id"] == m["id"]] == [
            m["deliveries"] + 1
        ]
        # the CLI lists it too, then acknowledges it (off this loop, as a user would run it)
        rc, out = await asyncio.to_thread(run, cli, "outbox", "list", "--org", "city-minato")
        assert rc == 0 and wid in out and subject not in out
        rc, out = await asyncio.to_thread(
            run, cli, "outbox", "ack", str(m["id"]), "--org", "city-shibuya"
        )
        assert rc == 1
        rc, out = await asyncio.to_thread(
            run, cli, "outbox", "ack", str(m["id"]), "--org", "city-minato"
        )
        assert rc == 0 and f"acknowledged {m['id']}" in out
        gone = await http.get("/api/outbox", headers=minato)
        assert wid not in gone.text
        acked = await http.post(f"/api/outbox/{m['id']}/ack", headers=minato)
        assert acked.status_code == 200 and acked.json()["id"] == m["id"]
        spec = (await http.get("/api/openapi.json")).json()
        ack_responses = spec["paths"]["/api/outbox/{message_id}/ack"]["post"]["responses"]
        assert {"200", "401", "404", "422"} <= set(ack_responses)
