"""The contract test reaches the org's own worker on its queue, through its whitelist gate, with a
probe permit that holds for probe subjects only; nothing of a probe is a real exchange."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import uuid

import asyncpg
import pytest
from temporalio.client import Client
from temporalio.worker import Worker
from typer.testing import CliRunner

from activities.agencies import providers_for
from activities.permits import PermitIssuer
from activities.probe import ProbePermits
from renkei.app import onboarding
from renkei.app.kit.contracts import ContractCheck
from renkei.contracts.messages import LinkageRequest
from renkei.contracts.names import agency_queue
from renkei.contracts.probe import (
    PROBE_WORKFLOW,
    ProbeAnswer,
    ProbeRun,
    ProbeStep,
    probe_code,
    probe_queue,
    probe_workflow_id,
)
from renkei.contracts.provider import NoMatch
from renkei.kernel import keys
from renkei.kernel.settings import Settings
from whitelist import store
from whitelist.payloads import LocalTax
from whitelist.store import LiveWhitelist
from workflows.contract_probe import ContractProbe

from .helpers import cli_joins, code, operator_token, run, shibuya_family, workers

# What the probes are given to answer where they should: time to spare on a busy machine (the
# test of an org that does not answer gives its own 2 s).
WAIT = dt.timedelta(seconds=30)


async def _contract(
    client: Client, pool: asyncpg.Pool, settings: Settings, catalog, org: str, wait=WAIT
) -> onboarding.ContractRun:
    return await onboarding.contract_test_through_worker(
        client, pool, settings, catalog, await store.load_index(pool), org, "test", wait
    )


def _failed(checks: list[ContractCheck]) -> dict[tuple[str, str], str]:
    return {(c.info, c.check): c.detail for c in checks if not c.passed}


async def _real_records_of_probes(pool: asyncpg.Pool) -> int:
    """Records and provider receipts of probes: a probe is no exchange, so both stay empty."""
    return int(
        await pool.fetchval(
            "SELECT (SELECT count(*) FROM records.access_records"
            "        WHERE workflow_id LIKE 'contract-probe/%')"
            "     + (SELECT count(*) FROM records.answer_receipts"
            "        WHERE attempt_key LIKE 'contract-probe/%')"
        )
    )


async def test_the_contract_test_goes_through_each_orgs_worker_and_is_no_real_exchange(
    client: Client,
    pool: asyncpg.Pool,
    settings: Settings,
    catalog,
    live_whitelist: LiveWhitelist,
    cli: CliRunner,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cli_joins(monkeypatch, client, settings)
    orgs = ("city-minato", "kyokai-kenpo", "jps", "sample-denki")
    before = await pool.fetchval("SELECT count(*) FROM records.contract_probes")
    async with workers(
        client, pool, settings, catalog, live_whitelist, agencies=orgs, control=False
    ):
        for org in orgs:
            done = await _contract(client, pool, settings, catalog, org)
            assert done.passed, _failed(done.checks)
        token = await asyncio.to_thread(operator_token, cli, f"probe-ops-{uuid.uuid4().hex[:6]}")
        code_, out = await asyncio.to_thread(run, cli, "contract", "jps", token=token)
    assert code_ == 0, out
    assert "PASS  pension-benefit: its probe subject: an answer that fits" in out
    assert "passed, recorded" in out
    checks = {(c.info, c.check) for c in done.checks}
    assert (
        "electricity-move-notice",
        "a receipt that fits, for the request's fields and no code",
    ) in checks
    # every probe went through each org's gate, and is kept in its table of probes only
    probes = await pool.fetch(
        "SELECT org, info, outcome, reason FROM records.contract_probes ORDER BY stored_at"
    )
    assert len(probes) - before >= 8
    assert {p["org"] for p in probes} >= set(orgs)
    assert {(p["outcome"], p["reason"]) for p in probes[before:]} == {("allowed", "contract probe")}
    assert ("city-minato", "resident-cohort") in {(p["org"], p["info"]) for p in probes}
    # nothing of a probe is in any chain of access records (what billing, usage, the outboxes
    # and the citizens' pages read), nor in the reminders
    assert await _real_records_of_probes(pool) == 0
    assert not await pool.fetchval(
        "SELECT count(*) FROM hub.reminders WHERE workflow_id LIKE 'contract-probe/%'"
    )
    kept = await pool.fetchrow(
        "SELECT passed, actor FROM whitelist.org_contract_tests WHERE org = 'jps'"
        " ORDER BY id DESC LIMIT 1"
    )
    assert kept["passed"] and kept["actor"].startswith("probe-ops-")


async def test_with_the_orgs_worker_down_the_contract_fails_saying_so(
    client: Client, pool: asyncpg.Pool, settings: Settings, catalog
) -> None:
    done = await _contract(client, pool, settings, catalog, "jps", dt.timedelta(seconds=2))
    assert not done.passed
    queue = agency_queue(settings.task_queue_prefix, "jps")
    failed = _failed(done.checks)
    detail = failed[("pension-benefit", "its probe subject: an answer that fits")]
    assert detail == f"no answer on {queue} within 2s: is the org's worker running?"
    later = failed[
        ("pension-benefit", "a subject it does not hold: NoMatch, or an answer that fits")
    ]
    assert later.startswith("not asked: no answer")
    assert not await pool.fetchval(
        "SELECT passed FROM whitelist.org_contract_tests WHERE org = 'jps' ORDER BY id DESC LIMIT 1"
    )


@pytest.mark.filterwarnings("ignore:Pydantic serializer warnings")  # the broken provider's
async def test_a_worker_answering_out_of_its_schema_fails_the_contract_naming_the_item(
    client: Client, pool: asyncpg.Pool, settings: Settings, catalog, live_whitelist: LiveWhitelist
) -> None:
    async def wrong_shape(req: LinkageRequest) -> LocalTax:
        return LocalTax.model_construct(fiscal_year=2025, taxable_income="a lot")  # type: ignore[arg-type]

    async def no_fixture(req: LinkageRequest) -> LocalTax:
        raise NoMatch("city-minato", req.info)

    broken = {
        **providers_for("city-minato", pool),
        "local-tax": wrong_shape,
        "resident-record": no_fixture,
    }
    async with workers(
        client,
        pool,
        settings,
        catalog,
        live_whitelist,
        agencies=("city-minato",),
        providers={"city-minato": broken},
        control=False,
    ):
        done = await _contract(client, pool, settings, catalog, "city-minato")
    assert not done.passed
    failed = _failed(done.checks)
    assert {info for info, _ in failed} == {"local-tax", "resident-record"}
    assert "taxable_income" in failed[("local-tax", "its probe subject: an answer that fits")]
    assert failed[("resident-record", "its probe subject: an answer that fits")] == (
        "NoMatch: city-minato's providers hold no synthetic fixture under its probe code"
        f" {probe_code('city-minato')} (renkei.contracts.probe)"
    )


async def _probe_by_hand(
    client: Client,
    pool: asyncpg.Pool,
    settings: Settings,
    org: str,
    workflow_id: str,
    step: ProbeStep,
) -> ProbeAnswer:
    """A probe run as an attacker holding a probe permit would make it (or a hub that signed
    the wrong thing): the gate is what stands."""
    queue = probe_queue(settings.task_queue_prefix, uuid.uuid4().hex[:12])
    permits = ProbePermits(PermitIssuer(pool, keys.load(settings)), WAIT)
    asked = ProbeRun(
        org=org,
        task_queue_prefix=settings.task_queue_prefix,
        probe_queue=queue,
        timeout_seconds=WAIT.total_seconds(),
        steps=[step],
    )
    async with Worker(
        client, task_queue=queue, workflows=[ContractProbe], activities=[permits.permit]
    ):
        [got] = await client.execute_workflow(
            PROBE_WORKFLOW, asked, id=workflow_id, task_queue=queue, result_type=list[ProbeAnswer]
        )
    return ProbeAnswer.model_validate(got)


async def test_a_probe_permit_holds_for_no_real_subject_no_real_flow_and_no_other_item(
    client: Client, pool: asyncpg.Pool, settings: Settings, catalog, live_whitelist: LiveWhitelist
) -> None:
    person = shibuya_family(settings).members[0]
    real = code(settings, "city-minato", person)
    probe_id = probe_workflow_id("city-minato", uuid.uuid4().hex[:12])
    async with workers(
        client, pool, settings, catalog, live_whitelist, agencies=("city-minato",), control=False
    ):
        # a probe permit for a person's code: refused, before the provider's code runs
        got = await _probe_by_hand(
            client, pool, settings, "city-minato", probe_id,
            ProbeStep(step="local-tax.held", info="local-tax", subject=real),
        )  # fmt: skip
        assert got.answer is None and got.failure_kind == "refused"
        assert "a contract probe may name a probe subject only" in (got.failure or "")
        assert real not in (got.failure or "")
        # a probe permit in a flow of the real kind (its workflow id not a probe run's)
        flow_id = f"child-allowance-check/hub/case-{uuid.uuid4().hex[:8]}"
        got = await _probe_by_hand(
            client, pool, settings, "city-minato", flow_id,
            ProbeStep(step="local-tax.held", info="local-tax", subject=probe_code("city-minato")),
        )  # fmt: skip
        assert got.failure_kind == "refused"
        assert "a contract probe's permit outside a contract probe" in (got.failure or "")
        # a probe of an item the org does not serve
        other_id = probe_workflow_id("city-minato", uuid.uuid4().hex[:12])
        got = await _probe_by_hand(
            client, pool, settings, "city-minato", other_id,
            ProbeStep(step="pension-benefit.held", info="pension-benefit",
                      subject=probe_code("city-minato")),
        )  # fmt: skip
        assert got.failure_kind == "refused"
        assert "which city-minato neither serves nor carries out" in (got.failure or "")
    refused = await pool.fetch(
        "SELECT workflow_id, outcome, reason FROM records.contract_probes"
        " WHERE workflow_id = ANY($1::text[])",
        [probe_id, other_id],
    )
    assert {r["outcome"] for r in refused} == {"denied"} and len(refused) == 2
    assert all(real not in r["reason"] for r in refused)
    # the refusal in a flow of the real kind is kept as any refused request is: in the org's chain
    kept = await pool.fetch(
        "SELECT outcome, reason FROM records.access_records WHERE workflow_id = $1", flow_id
    )
    assert [r["outcome"] for r in kept] == ["denied"]
    assert await _real_records_of_probes(pool) == 0


async def test_an_orgs_worker_on_its_own_database_role_records_its_probes_and_no_others(
    client: Client,
    pool: asyncpg.Pool,
    base_settings: Settings,
    settings: Settings,
    catalog,
    live_whitelist: LiveWhitelist,
) -> None:
    """The worker's database login is the org's own role (as deployed): it appends its own
    probes, reads no other org's, and cannot write one in another org's name nor change one."""
    from renkei.kernel.db import create_pool, party_role
    from workers.agency import agency_worker

    assert base_settings.database_url
    own = await create_pool(base_settings.database_url, max_size=4, role=party_role("jps"))
    try:
        assert await own.fetchval("SELECT current_user") == "renkei_org_jps"
        async with agency_worker(client, own, settings, catalog, "jps", live_whitelist):
            done = await _contract(client, pool, settings, catalog, "jps")
        assert done.passed, _failed(done.checks)
        seen = await own.fetch("SELECT DISTINCT org FROM records.contract_probes")
        assert [r["org"] for r in seen] == ["jps"]
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="row-level security"):
            await own.execute(
                "INSERT INTO records.contract_probes (org, workflow_id, run_id, step, info,"
                " outcome, reason, decided_at) VALUES ('city-minato', 'contract-probe/hub/x',"
                " 'r', 's', 'local-tax', 'allowed', 'contract probe', now())"
            )
        with pytest.raises(asyncpg.PostgresError):
            await own.execute("UPDATE records.contract_probes SET outcome = 'denied'")
    finally:
        await own.close()


async def test_each_answer_is_checked_against_the_key_its_permit_was_issued_with(
    client: Client,
    pool: asyncpg.Pool,
    settings: Settings,
    catalog,
    live_whitelist: LiveWhitelist,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The org's keys may rotate while a probe runs: each answer is checked against the signing
    key read with the sealing key of its own permit, not the registry as it is at the end, so a
    rotation does not fail the contract, and an answer is never checked against a key its
    permit was not issued with."""
    other = keys.load(settings).signer().public_key()  # the hub's: a key that is not jps's
    not_jps = base64.b64encode(keys.public_raw(other)).decode()

    async def rotated(self: PermitIssuer, org: str) -> str:
        return not_jps  # the registry, read again after the permits: another key now

    monkeypatch.setattr(PermitIssuer, "signing_key_of", rotated)
    async with workers(
        client, pool, settings, catalog, live_whitelist, agencies=("jps",), control=False
    ):
        done = await _contract(client, pool, settings, catalog, "jps")
        assert done.passed, _failed(done.checks)
        # and the key the judge uses is the permit's: had it been issued with another key, the
        # answers signed by jps do not verify against it
        issue = PermitIssuer.issue_probe

        async def issued_with_another(self: PermitIssuer, **kw: object) -> object:
            permit, sealed, _ = await issue(self, **kw)  # type: ignore[arg-type]
            return permit, sealed, not_jps

        monkeypatch.setattr(PermitIssuer, "issue_probe", issued_with_another)
        done = await _contract(client, pool, settings, catalog, "jps")
    assert not done.passed
    failed = _failed(done.checks)
    assert failed[("pension-benefit", "its probe subject: an answer that fits")] == (
        "the answer is not signed with jps's registered key"
    )
