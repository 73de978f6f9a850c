"""Participants: the live org registry, onboarding, and certificates (docs/participants.md).

Orgs are added, activated, merged and retired through the CLI and the API while the workers run;
the flows that follow see each change without a restart.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import Mapping
from typing import Any

import asyncpg
import httpx
import pytest
from temporalio.client import Client, WorkflowFailureError
from typer.testing import CliRunner

from activities.linkage import Provider
from renkei.app import onboarding
from renkei.app.actors import TOKEN_VARIABLE
from renkei.app.bootstrap import issue_keys
from renkei.app.client import RenkeiClient
from renkei.app.web import serving
from renkei.app.web.codec_server import add_operator
from renkei.contracts.failures import Failure
from renkei.contracts.messages import LinkageRequest
from renkei.contracts.probe import probe_code
from renkei.contracts.provider import NoMatch
from renkei.kernel import attest, keys, records
from renkei.kernel.settings import Settings
from whitelist import orgs
from whitelist.decide import JST, decide_linkage
from whitelist.models import Held
from whitelist.payloads import LocalTax
from whitelist.store import LiveWhitelist

from .helpers import (
    cli_joins,
    code,
    give_pias,
    hub_key,
    onboard_org,
    shibuya_family,
    start,
    workers,
)

STRANGER = "Z" * 20


def tax_office(org: str, pool: object = None) -> Mapping[str, Provider]:
    """A new municipality's local-tax provider: it holds everyone but the contract's stranger."""

    async def local_tax(req: LinkageRequest) -> LocalTax:
        if req.subject in (STRANGER, probe_code(org, held=False)):
            raise NoMatch(org, req.info)
        return LocalTax(fiscal_year=2025, taxable_income=3_000_000, municipal_tax=1, dependents=1)

    return {"local-tax": local_tax}


def _new_id(prefix: str = "city") -> str:
    return f"{prefix}-t{uuid.uuid4().hex[:8]}"


def _cli(cli: CliRunner, token: str | None, *args: str) -> tuple[int, str]:
    from renkei.app.cli import app

    result = cli.invoke(app, list(args), env={TOKEN_VARIABLE: token or ""})
    return result.exit_code, result.output


async def _operator(pool: asyncpg.Pool, party: str, role: str) -> str:
    return await add_operator(pool, f"op-{uuid.uuid4().hex[:8]}", party, role)


async def _denials(pool: asyncpg.Pool, wid: str) -> list[str]:
    return [
        r.reason
        for r in await records.query(pool, workflow_id=wid)
        if r.keeper == records.HUB and r.outcome == "denied"
    ]


async def _check(rc: RenkeiClient, settings: Settings, previous: str, index: int = 0) -> Any:
    h = shibuya_family(settings, index)
    return await rc.start(
        start(
            "child-allowance-check",
            "city-minato",
            code(settings, "city-minato", h.members[0]),
            inputs={"previous_municipality": previous},
        )
    )


async def test_an_org_added_while_workers_run_answers_once_active_and_not_before_nor_retired(
    client: Client,
    pool: asyncpg.Pool,
    settings: Settings,
    catalog,
    live_whitelist: LiveWhitelist,
    cli: CliRunner,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cli_joins(monkeypatch, client, settings)
    koto = _new_id()
    platform = await _operator(pool, "hub", "platform-operator")
    body = await _operator(pool, settings.conformance_body, "conformance-body")
    rc = RenkeiClient(client, settings, catalog=live_whitelist.bind(catalog))
    # the hub's and the sample agencies' workers run from before the org exists, to the end
    async with workers(client, pool, settings, catalog, live_whitelist):
        rc_, out = await asyncio.to_thread(
            _cli,
            cli,
            platform,
            "orgs",
            "add",
            koto,
            "--ja",
            "江東区",
            "--en",
            "Koto City",
            "--kind",
            "municipal",
            "--role",
            "municipal-mayor",
            "--serves",
            "local-tax",
        )
        assert rc_ == 0, out
        assert f"{koto}: registered" in out
        rc_, out = await asyncio.to_thread(_cli, cli, platform, "keys", "issue", koto)
        assert rc_ == 0, out
        await give_pias(pool, live_whitelist)
        assert live_whitelist.bind(catalog).orgs[koto].status == "registered"
        # the new org's own worker, with its own providers
        async with workers(
            client,
            pool,
            settings,
            catalog,
            live_whitelist,
            agencies=(koto,),
            providers={koto: dict(tax_office(koto))},
            control=False,
        ):
            await _onboard_and_retire(
                client, pool, settings, live_whitelist, cli, rc, koto, platform, body
            )
    history = [(e.action, e.actor_role) for e in await orgs.events(pool, koto)]
    assert history == [
        ("add", "platform-operator"),
        ("contract-tested", "platform-operator"),
        ("certified", "conformance-body"),
        ("active", "platform-operator"),
        ("retired", "platform-operator"),
    ]


async def _onboard_and_retire(
    client: Client,
    pool: asyncpg.Pool,
    settings: Settings,
    live_whitelist: LiveWhitelist,
    cli: CliRunner,
    rc: RenkeiClient,
    koto: str,
    platform: str,
    body: str,
) -> None:
    # registered only: the hub refuses it as a provider, and records why
    registered = await _check(rc, settings, koto)
    with pytest.raises(WorkflowFailureError) as failure:
        await registered.result()
    assert Failure.LINKAGE_DENIED.caused(failure.value.cause)
    assert await _denials(pool, registered.id) == [
        f"provider org {koto!r} is registered, not active: only an active org asks or answers"
    ]

    # onboarding: the contract test through its running worker, the certificate, activation
    rc_, out = await asyncio.to_thread(
        _cli, cli, platform, "contract", koto, "--providers", "tests.test_orgs:tax_office"
    )
    assert rc_ == 2 and "No such option: --providers" in out, out
    rc_, out = await asyncio.to_thread(_cli, cli, platform, "contract", koto)
    assert rc_ == 0, out
    assert "PASS  local-tax: its probe subject: an answer that fits" in out
    assert "passed, recorded" in out
    probed = await pool.fetch("SELECT outcome FROM records.contract_probes WHERE org = $1", koto)
    assert probed and {p["outcome"] for p in probed} == {"allowed"}
    rc_, out = await asyncio.to_thread(_cli, cli, body, "orgs", "certify", koto)
    assert rc_ == 0, out
    async with serving(settings, pool, client) as base, httpx.AsyncClient(base_url=base) as http:
        as_body = await http.post(
            f"/api/orgs/{koto}/activate", headers={"Authorization": f"Bearer {body}"}
        )
        assert as_body.status_code == 403, as_body.text
        done = await http.post(
            f"/api/orgs/{koto}/activate", headers={"Authorization": f"Bearer {platform}"}
        )
        assert done.status_code == 200, done.text
    await live_whitelist.wait_for_version(done.json()["whitelist_version"])

    active = await _check(rc, settings, koto, 1)
    assert (await active.result()).outcome == "completed"
    allowed = [
        r
        for r in await records.query(pool, workflow_id=active.id)
        if r.keeper == records.HUB and r.provider == koto
    ]
    assert [r.outcome for r in allowed] == ["allowed"]

    rc_, out = await asyncio.to_thread(_cli, cli, platform, "orgs", "retire", koto)
    assert rc_ == 0, out
    await give_pias(pool, live_whitelist)
    retired = await _check(rc, settings, koto, 2)
    with pytest.raises(WorkflowFailureError):
        await retired.result()
    assert await _denials(pool, retired.id) == [
        f"provider org {koto!r} is retired, not active: only an active org asks or answers"
    ]


async def _active(pool: asyncpg.Pool, settings: Settings, catalog, new: orgs.NewOrg) -> None:
    """Onboard ``new`` (a tax office: its contract test on :func:`tax_office`)."""
    await onboard_org(pool, settings, catalog, new, tax_office(new.id))


async def test_a_merger_makes_the_successor_answer_for_the_predecessor_from_its_date(
    client: Client, pool: asyncpg.Pool, settings: Settings, catalog, live_whitelist
) -> None:
    old, new = _new_id("town"), _new_id()
    await _active(
        pool,
        settings,
        catalog,
        orgs.NewOrg(
            id=old,
            ja="旧町",
            en="Old Town",
            kind="municipal",
            roles=(Held(id="municipal-mayor"),),
            serves=(Held(id="local-tax"),),
        ),
    )
    await _active(
        pool, settings, catalog, orgs.NewOrg(id=new, ja="新市", en="New City", kind="municipal")
    )
    today = dt.datetime.now(JST).date()
    tomorrow = today + dt.timedelta(days=1)
    await orgs.merge(pool, old, new, tomorrow, "test", "platform-operator", hub=hub_key())
    await give_pias(pool, live_whitelist)
    live = live_whitelist.bind(catalog)
    index = live_whitelist.index
    noon = dt.datetime.combine(today, dt.time(12), JST)

    def asks(provider: str, at: dt.datetime) -> bool:
        return decide_linkage(
            live, index, "city-minato", provider, "child-allowance", "local-tax", at
        ).allowed

    # before the merger's date the predecessor answers and the successor holds no role yet
    assert asks(old, noon) and not asks(new, noon)
    assert live.org_roles(new, today) == frozenset()
    # from its date the successor holds the roles, the predecessor none, and is refused
    later = noon + dt.timedelta(days=1)
    assert asks(new, later) and not asks(old, later)
    assert live.org_roles(new, tomorrow) == frozenset({"municipal-mayor"})
    refusal = orgs.standing_refusal(live, "city-minato", old, later)
    assert refusal is not None
    assert refusal.reason == f"provider org {old!r} merged into {new!r} on {tomorrow.isoformat()}"
    assert orgs.standing_refusal(live, "city-minato", old, noon) is None

    # a merger effective today: a running flow asks the successor for the predecessor's tax
    old2, new2 = _new_id("town"), _new_id()
    await _active(
        pool,
        settings,
        catalog,
        orgs.NewOrg(
            id=old2,
            ja="旧村",
            en="Old Village",
            kind="municipal",
            roles=(Held(id="municipal-mayor"),),
            serves=(Held(id="local-tax"),),
        ),
    )
    await _active(
        pool, settings, catalog, orgs.NewOrg(id=new2, ja="新町", en="New Town", kind="municipal")
    )
    await issue_keys(pool, settings, [old2, new2])
    rc = RenkeiClient(client, settings, catalog=live_whitelist.bind(catalog))
    async with workers(
        client,
        pool,
        settings,
        catalog,
        live_whitelist,
        agencies=("city-minato", "jps", old2, new2),
        providers={old2: dict(tax_office(old2)), new2: dict(tax_office(new2))},
    ):
        await orgs.merge(pool, old2, new2, today, "test", "platform-operator", hub=hub_key())
        await give_pias(pool, live_whitelist)
        answered = await _check(rc, settings, new2, 3)
        assert (await answered.result()).outcome == "completed"
        # the predecessor holds no role from today: a start naming it is refused at once
        with pytest.raises(ValueError, match="the org does not hold role municipal-mayor"):
            await _check(rc, settings, old2, 4)


async def test_a_forged_certificate_fails_verification(
    pool: asyncpg.Pool, settings: Settings, catalog
) -> None:
    org = _new_id()
    await _active(
        pool,
        settings,
        catalog,
        orgs.NewOrg(
            id=org,
            ja="検証市",
            en="Verify City",
            kind="municipal",
            roles=(Held(id="municipal-mayor"),),
            serves=(Held(id="local-tax"),),
        ),
    )
    [cert] = await onboarding.certificates(pool, org)
    assert await onboarding.verify(pool, settings, cert) is None
    # signed with another key (the hub's, not the conformance body's)
    wrong_key = cert.model_copy(
        update={
            "signature": attest.org_certificate(
                keys.load(settings).signer(), org, cert.served, cert.report_hash
            )
        }
    )
    assert await onboarding.verify(pool, settings, wrong_key) == (
        "the signature does not hold for this org, these items and this report hash"
    )
    # the body's own key over a report hash no contract test of the org has
    body = keys.load_org(settings, settings.conformance_body).signer()
    made_up = "sha256:" + "0" * 64
    wrong_report = cert.model_copy(
        update={
            "report_hash": made_up,
            "signature": attest.org_certificate(body, org, cert.served, made_up),
        }
    )
    assert await onboarding.verify(pool, settings, wrong_report) == (
        f"no passing contract test of {org} has report hash {made_up}"
    )
    # the certificate moved to other items
    assert await onboarding.verify(
        pool, settings, cert.model_copy(update={"served": ["resident-record"]})
    ) == ("the signature does not hold for this org, these items and this report hash")


async def test_samples_are_active_by_the_onboarding_path_with_certificates_that_verify(
    pool: asyncpg.Pool, settings: Settings
) -> None:
    registry = await orgs.load_orgs(pool)
    for org in ("mhlw", "pref-tokyo", "city-minato", "city-shibuya", "kyokai-kenpo", "jps"):
        assert registry[org].status == "active"
        [cert, *_] = await onboarding.certificates(pool, org)
        assert await onboarding.verify(pool, settings, cert) is None
        assert [e.action for e in await orgs.events(pool, org)][:4] == [
            "add",
            "contract-tested",
            "certified",
            "active",
        ]


async def test_bad_org_input_gets_a_clear_answer(
    client: Client, pool: asyncpg.Pool, settings: Settings, cli: CliRunner
) -> None:
    platform = await _operator(pool, "hub", "platform-operator")
    executor = await _operator(pool, "city-minato", "executor")
    org = _new_id()
    cases = [
        (platform, ["orgs", "add", org, "--ja", "x", "--en", "x", "--kind", "village"], 2, "kind"),
        (
            platform,
            [
                "orgs",
                "add",
                org,
                "--ja",
                "x",
                "--en",
                "x",
                "--kind",
                "municipal",
                "--role",
                "x@2026",
            ],
            2,
            "--role 'x@2026': expected ID, ID@YYYY-MM-DD or ID@FROM..TO",
        ),
        (
            platform,
            [
                "orgs",
                "add",
                org,
                "--ja",
                "x",
                "--en",
                "x",
                "--kind",
                "municipal",
                "--role",
                "mayor",
            ],
            1,
            "refused: unknown role 'mayor'",
        ),
        (
            platform,
            [
                "orgs",
                "add",
                org,
                "--ja",
                "x",
                "--en",
                "x",
                "--kind",
                "private",
                "--serves",
                "local-tax",
            ],
            1,
            "a private org serves no info item",
        ),
        (
            executor,
            ["orgs", "add", org, "--ja", "x", "--en", "x", "--kind", "municipal"],
            1,
            "may not do this: it takes a platform-operator",
        ),
        ("rko_nothing", ["orgs", "retire", "city-minato"], 1, "not a current operator token"),
        (
            platform,
            ["orgs", "merge", "city-minato", "--into", "city-minato", "--on", "2030-01-01"],
            1,
            "cannot merge into itself",
        ),
        (platform, ["orgs", "activate", "no-such-org"], 1, "unknown org 'no-such-org'"),
        (
            None,
            ["operators", "add", org, "--party", "city-minato", "--role", "platform-operator"],
            2,
            "--role platform-operator: a platform operator acts for the hub (--party hub)",
        ),
        (
            None,
            ["operators", "add", org, "--party", "hub", "--role", "definer"],
            2,
            "--role definer: a definer acts for an org: unknown org 'hub'",
        ),
        (None, ["operators", "add", org, "--role", "boss"], 2, "--role 'boss': one of"),
        (platform, ["orgs", "activate", "city-minato"], 1, "is active: it cannot become active"),
    ]
    for token, args, code_, said in cases:
        rc_, out = await asyncio.to_thread(_cli, cli, token, *args)
        assert (rc_, said in out) == (code_, True), (args, out)
        assert "Traceback" not in out
    async with serving(settings, pool, client) as base, httpx.AsyncClient(base_url=base) as http:
        assert (await http.get("/api/orgs")).status_code == 401
        auth = {"Authorization": f"Bearer {platform}"}
        bad = await http.post("/api/orgs", json={"id": "Bad Id", "ja": "x"}, headers=auth)
        assert bad.status_code == 422
        assert {tuple(e["loc"]) for e in bad.json()["detail"]} >= {
            ("body", "id"),
            ("body", "en"),
            ("body", "kind"),
        }
        twice = await http.post(
            "/api/orgs",
            json={"id": "city-minato", "ja": "港区", "en": "Minato", "kind": "municipal"},
            headers=auth,
        )
        assert twice.status_code == 409
        assert twice.json() == {"detail": "org 'city-minato' is already registered"}
        merge = await http.post(
            "/api/orgs/no-such-org/merge",
            json={"into": "city-minato", "on": "2030-01-01"},
            headers=auth,
        )
        assert merge.status_code == 404
        listed = await http.get("/api/orgs", headers=auth)
        assert {"city-minato", "jps"} <= {o["id"] for o in listed.json()["orgs"]}


async def test_an_org_activated_while_the_hub_runs_starts_flows_as_their_executor(
    client: Client, pool: asyncpg.Pool, settings: Settings, catalog, live_whitelist
) -> None:
    from activities.direct import DirectWiring
    from renkei.kernel.pseudonyms import Pseudonyms
    from workers.control import control_worker
    from workers.plugin import attach_registry, connect, party_client

    from .helpers import endpoints_of

    city = _new_id()
    async with workers(client, pool, settings, catalog, live_whitelist):  # the hub runs first
        await _active(
            pool,
            settings,
            catalog,
            orgs.NewOrg(
                id=city,
                ja="新区",
                en="New Ward",
                kind="municipal",
                roles=(Held(id="municipal-mayor"),),
                serves=(Held(id="local-tax"),),
            ),
        )
        await issue_keys(pool, settings, [city])
        await give_pias(pool, live_whitelist)
        h = shibuya_family(settings, 5)
        await Pseudonyms(pool, keys.load(settings).hub_key).enroll(
            [h.members[0].subject_id], [city]
        )
        # the new org's own counter (a process started now, with its key file) and its own
        # control worker (its flows run on its queue), beside the running hub
        rc = RenkeiClient(
            await connect(settings, client.service_client.config.target_host),
            settings,
            catalog=live_whitelist.bind(catalog),
        )
        own = party_client(client, settings, [city], legacy_ring=False)
        attach_registry(own, pool, settings)
        # (its flows ask the providers the test's workers serve, over the direct channel)
        wiring = DirectWiring(endpoints_of(settings))
        async with control_worker(own, settings, city, direct=wiring):
            run = await rc.start(
                start(
                    "child-allowance-check",
                    city,
                    code(settings, city, h.members[0]),
                    inputs={"previous_municipality": "city-shibuya"},
                )
            )
            assert (await run.result()).outcome in ("completed", "rejected")
    kept = [r for r in await records.query(pool, workflow_id=run.id) if r.keeper == records.HUB]
    assert {(r.requester, r.provider, r.outcome) for r in kept} == {
        (city, "city-shibuya", "allowed"),
        (city, "jps", "allowed"),
    }


async def test_an_org_is_renamed_given_and_relieved_of_roles_and_items_with_their_dates(
    client: Client, pool: asyncpg.Pool, settings: Settings, catalog, cli: CliRunner
) -> None:
    org = _new_id()
    platform = await _operator(pool, "hub", "platform-operator")
    await orgs.add(
        pool,
        catalog,
        orgs.NewOrg(
            id=org,
            ja="旧名",
            en="Old Name",
            kind="municipal",
            roles=(Held(id="municipal-mayor"),),
            serves=(Held(id="resident-record"),),
        ),
        "test",
        "platform-operator",
        hub=hub_key(),
    )
    args = [
        "orgs", "change", org, "--en", "New Name",
        "--add-serves", "local-tax@2027-04-01",
        "--end-serves", "resident-record@2027-04-01",
    ]  # fmt: skip
    rc_, out = await asyncio.to_thread(_cli, cli, platform, *args)
    assert rc_ == 0, out
    found = (await orgs.load_orgs(pool, today=dt.date(2027, 4, 1)))[org]
    assert (found.ja, found.en, found.serves) == ("旧名", "New Name", ("local-tax",))
    before = (await orgs.load_orgs(pool, today=dt.date(2027, 3, 31)))[org]
    assert before.serves == ("resident-record",)
    # ending what it does not hold (open on that date) is refused, and nothing changes
    rc_, out = await asyncio.to_thread(
        _cli, cli, platform, "orgs", "change", org, "--end-role", "jps@2027-04-01"
    )
    assert (rc_, out) == (1, f"refused: {org} holds no role 'jps' open on 2027-04-01\n")
    async with serving(settings, pool, client) as base, httpx.AsyncClient(base_url=base) as http:
        changed = await http.post(
            f"/api/orgs/{org}/change",
            json={"end_roles": {"municipal-mayor": "2028-04-01"}},
            headers={"Authorization": f"Bearer {platform}"},
        )
        assert changed.status_code == 200, changed.text
    [held] = (await orgs.load_orgs(pool))[org].held
    assert (held.id, held.valid_from, held.valid_to) == (
        "municipal-mayor",
        None,
        dt.date(2028, 4, 1),
    )
    rc_, out = await asyncio.to_thread(_cli, cli, platform, "orgs", "show", org)
    assert rc_ == 0 and "role\tmunicipal-mayor\t- .. 2028-04-01" in out, out
    assert [e.action for e in await orgs.events(pool, org)] == ["add", "change", "change"]
    rc_, out = await asyncio.to_thread(_cli, cli, platform, "orgs", "list")
    assert f"{org}\tmunicipal\tregistered\troles: municipal-mayor\t" in out
