"""The actions an org carries out live in the org registry (whitelist.org_acts, migration 0042),
each with its basis and period: seeded from the shipped catalog, added and ended by a platform
operator, and taken by the running hub and partners' gates without a restart."""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path

import asyncpg
import pytest
from temporalio.client import Client, WorkflowFailureError
from typer.testing import CliRunner

from renkei.app.bootstrap import issue_keys
from renkei.bpf import registry
from renkei.bpf.loader import parse_text
from renkei.contracts.failures import Failure
from renkei.contracts.messages import LinkageRequest
from renkei.kernel import keys, records
from renkei.kernel.pseudonyms import Pseudonyms
from renkei.kernel.settings import Settings
from whitelist import controls_store, orgs, store
from whitelist.catalog import default_catalog
from whitelist.controls import sample_pias
from whitelist.decide import JST
from whitelist.models import Acting, Action, Held, WhitelistRow
from whitelist.payloads import ActionReceipt
from whitelist.store import LiveWhitelist

from .helpers import code, hub_key, operator_token, pick, run, sdk, start, workers
from .test_orgs import _active

PROBE = Path(__file__).parent / "definitions" / "public-act-probe.yaml"
ACTION = Action(
    id="payment-stop-probe", ja="支給停止（試験）", en="Stop (probe)", request="GenericRecord"
)
BASIS = "試験用の根拠（法律の規定を想定）"


def _today() -> dt.date:
    return dt.datetime.now(JST).date()


async def test_the_shipped_actions_are_seeded_with_their_basis(pool: asyncpg.Pool) -> None:
    denki = (await orgs.load_orgs(pool))["sample-denki"]
    shipped = default_catalog().orgs["sample-denki"]
    assert denki.acts == ("electricity-move-notice",) == shipped.acts
    [acting] = [a for a in denki.acting if a.valid_to is None]
    assert acting.id == "electricity-move-notice" and acting.basis == shipped.acting[0].basis
    assert "電気需給契約" in acting.basis
    # seeding again (every `renkei init`) adds nothing
    assert await orgs.seed(pool, default_catalog().orgs, "test", hub=hub_key()) == []
    assert (await orgs.load_orgs(pool))["sample-denki"].acting == denki.acting


async def test_an_act_added_and_ended_while_workers_run_is_admitted_then_refused(
    client: Client,
    pool: asyncpg.Pool,
    settings: Settings,
    catalog,
    live_whitelist: LiveWhitelist,
) -> None:
    """A public partner added at run time: the hub refuses an act it does not carry out; once
    the registry says it does, the act is carried out and recorded by every side; once ended,
    it is refused again — each change taken by the running workers."""
    partner = f"pension-t{uuid.uuid4().hex[:8]}"
    test_catalog = catalog.model_copy(update={"actions": {**catalog.actions, ACTION.id: ACTION}})
    bpf = f"act-registry-{uuid.uuid4().hex[:8]}"
    text = PROBE.read_text().replace("bpf: public-act-probe", f"bpf: {bpf}")
    text = text.replace("partner: jps", f"partner: {partner}")
    await registry.register(pool, parse_text(text, f"{bpf}.yaml"))
    row = WhitelistRow(
        id=f"test-partners/{partner}",
        source="test-partners",
        item="試験用の根拠（法律の規定を想定）",
        requester_role="municipal-mayor",
        task="move-one-stop",
        provider_role="japan-pension-service",
        info=ACTION.id,
        legal_text="試験用",
        valid_from=dt.date(2024, 4, 1),
    )
    person = pick(settings, lambda h: h.municipality == "city-minato").members[0]
    got: list[LinkageRequest] = []

    async def stop(req: LinkageRequest) -> ActionReceipt:
        got.append(req)
        return ActionReceipt(done=True, reference="STOP-1")

    async def act() -> str:
        handle = await sdk(client, settings).start(
            start(bpf, "city-minato", code(settings, "city-minato", person))
        )
        await handle.result()
        return handle.id

    await _active(
        pool,
        settings,
        catalog,
        orgs.NewOrg(
            id=partner,
            ja="試験年金機構",
            en="Probe Pension Body",
            kind="public-body",
            roles=(Held(id="japan-pension-service"),),
        ),
    )
    await issue_keys(pool, settings, [partner])
    await Pseudonyms(pool, keys.load(settings).hub_key).enroll([person.subject_id], [partner])
    await live_whitelist.wait_for_version(
        await store.upsert_rows(pool, [row], hub=keys.load(settings).signer())
    )
    live = test_catalog.model_copy(update={"orgs": await orgs.load_orgs(pool)})
    await controls_store.seed_pias(
        pool, sample_pias(live, [row], _today()), recorded_by="test", hub=hub_key()
    )
    await live_whitelist.controls.wait_for_version(await controls_store.current_version(pool))
    try:
        async with workers(
            client,
            pool,
            settings,
            test_catalog,
            live_whitelist,
            agencies=(partner,),
            providers={partner: {ACTION.id: stop}},
        ):
            # not (yet) carried out: the hub refuses before the whitelist, and says why
            with pytest.raises(WorkflowFailureError) as failure:
                await act()
            assert Failure.LINKAGE_DENIED.caused(failure.value.cause)
            assert await _hub_denials(pool, bpf) == [
                f"{partner} does not carry out action {ACTION.id!r}"
            ]
            await live_whitelist.wait_for_version(
                await orgs.add_act(
                    pool,
                    test_catalog,
                    partner,
                    Acting(id=ACTION.id, basis=BASIS),
                    "test",
                    "platform-operator",
                    hub=hub_key(),
                )
            )
            done = await act()
            # the hub's view, frozen while the partner still carries the act out
            assert settings.database_url
            hubs_view = await LiveWhitelist(
                settings.database_url, sealed_by=keys.load(settings).signer().public_key()
            ).start()
            await hubs_view.stop()
            ended = await orgs.end_act(
                pool, partner, ACTION.id, _today(), "test", "platform-operator", hub=hub_key()
            )
            await live_whitelist.wait_for_version(ended)
            with pytest.raises(WorkflowFailureError) as failure:
                await act()
            assert Failure.LINKAGE_DENIED.caused(failure.value.cause)
        # a hub that has not heard of the end permits the act; the partner's own gate, which
        # has, refuses it before the partner's code runs
        async with (
            workers(client, pool, settings, test_catalog, hubs_view, agencies=()),
            workers(
                client,
                pool,
                settings,
                test_catalog,
                live_whitelist,
                agencies=(partner,),
                providers={partner: {ACTION.id: stop}},
                control=False,
            ),
        ):
            with pytest.raises(WorkflowFailureError):
                await act()
    finally:
        await live_whitelist.wait_for_version(
            await store.delete_rows(pool, [row.id], hub=keys.load(settings).signer())
        )
        await orgs.transition(pool, partner, "retired", "test", "platform-operator", hub=hub_key())
    assert len(got) == 1 and got[0].subject == code(settings, partner, person)
    kept = {(r.keeper, r.outcome) for r in await records.query(pool, workflow_id=done)}
    assert kept == {(records.HUB, "allowed"), ("city-minato", "allowed"), (partner, "allowed")}
    assert (
        await _hub_denials(pool, bpf) == [f"{partner} does not carry out action {ACTION.id!r}"] * 2
    )
    gates = [r for r in await records.query(pool, keeper=partner, bpf=bpf) if r.outcome == "denied"]
    assert [r.reason for r in gates] == [
        f"refused: {partner} does not carry out action {ACTION.id!r}"
    ]
    hubs = await records.query(pool, keeper=records.HUB, workflow_id=gates[0].workflow_id)
    assert [r.outcome for r in hubs] == ["allowed"]  # the stale hub did permit it
    history = [e.action for e in await orgs.events(pool, partner)]
    assert history[-3:] == ["add-act", "end-act", "retired"]
    [period] = (await orgs.load_orgs(pool))[partner].acting
    assert (period.basis, period.valid_to) == (BASIS, _today())


async def _hub_denials(pool: asyncpg.Pool, bpf: str) -> list[str]:
    return [
        r.reason or ""
        for r in await records.query(pool, keeper=records.HUB, bpf=bpf)
        if r.outcome == "denied"
    ]


def test_the_cli_adds_and_ends_an_act_as_a_platform_operator_with_clear_refusals(
    cli: CliRunner,
) -> None:
    tag = uuid.uuid4().hex[:6]
    org = f"denki-t{tag}"
    platform = operator_token(cli, f"acts-{tag}")
    body = operator_token(
        cli, f"acts-body-{tag}", "--party", "digital-agency", "--role", "conformance-body"
    )
    add = ("orgs", "add", org, "--ja", "試験電力", "--en", "Probe Electric", "--kind", "private")
    code_, out = run(cli, *add, "--role", "electricity-retailer", token=platform)
    assert code_ == 0, out
    try:
        basis = "電気需給契約（供給約款）に基づく手続（試験）"
        act = ("orgs", "add-act", org, "electricity-move-notice", "--basis", basis)
        code_, out = run(cli, *act, token="")
        assert code_ == 1 and "refused: sign in: set RENKEI_OPERATOR_TOKEN" in out, out
        code_, out = run(cli, *act, token=body)
        assert code_ == 1 and "it takes a platform-operator" in out, out
        code_, out = run(
            cli, "orgs", "add-act", org, "no-such-action", "--basis", basis, token=platform
        )
        assert code_ == 1 and "unknown action 'no-such-action'" in out, out
        code_, out = run(
            cli, "orgs", "add-act", org, "electricity-move-notice", "--basis", "", token=platform
        )
        assert code_ == 2 and "basis" in out and "Traceback" not in out, out
        code_, out = run(cli, *act, "--from", "2027-04-01", "--to", "2027-03-01", token=platform)
        assert code_ == 1 and "is not after valid_from" in out, out
        code_, out = run(cli, *act, "--from", "2026-04-01", token=platform)
        assert code_ == 0 and f"{org}: carries out electricity-move-notice" in out, out
        code_, out = run(cli, *act, "--from", "2026-10-01", token=platform)  # overlaps
        assert code_ == 1 and "already carries out 'electricity-move-notice'" in out, out
        code_, out = run(cli, "orgs", "show", org)
        assert f"acts\telectricity-move-notice\t2026-04-01 .. open\t{basis}" in out, out
        code_, out = run(cli, "orgs", "list")
        assert "acts: electricity-move-notice" in next(
            ln for ln in out.splitlines() if ln.startswith(org + "\t")
        )
        ending = ("orgs", "end-act", org, "electricity-move-notice", "--on", "2027-01-01")
        code_, out = run(cli, *ending, token=platform)
        assert code_ == 0 and "until 2027-01-01" in out, out
        code_, out = run(cli, *ending, token=platform)  # nothing open then any more
        assert code_ == 1 and "carries out no action 'electricity-move-notice' open" in out
        code_, out = run(cli, "orgs", "show", org)
        assert "acts\telectricity-move-notice\t2026-04-01 .. 2027-01-01" in out, out
    finally:
        assert run(cli, "orgs", "retire", org, token=platform)[0] == 0


async def test_a_merger_moves_the_predecessors_actions_with_their_basis(
    pool: asyncpg.Pool, catalog
) -> None:
    tag = uuid.uuid4().hex[:6]
    old, new = f"city-o{tag}", f"city-n{tag}"
    on = dt.date(2027, 4, 1)
    act = Acting(id="electricity-move-notice", basis=BASIS)
    for org, acting in ((old, (act,)), (new, ())):
        await orgs.add(
            pool,
            catalog,
            orgs.NewOrg(id=org, ja="市", en="City", kind="municipal", acting=acting),
            "test",
            "platform-operator",
            hub=hub_key(),
        )
    try:
        await orgs.merge(pool, old, new, on, "test", "platform-operator", hub=hub_key())
        found = await orgs.load_orgs(pool, today=on)
        assert found[old].acting == (act.model_copy(update={"valid_to": on}),)
        assert found[new].acting == (act.model_copy(update={"valid_from": on}),)
        assert (found[old].acts, found[new].acts) == ((), ("electricity-move-notice",))
        assert found[old].acts_at(on - dt.timedelta(days=1)) == {"electricity-move-notice"}
    finally:
        for org in (old, new):
            await orgs.transition(pool, org, "retired", "test", "platform-operator", hub=hub_key())
