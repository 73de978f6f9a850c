"""Helpers shared by the integration tests: sample subjects, workers, starts."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from typing import Any

import asyncpg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from temporalio.client import Client, WorkflowHandle
from temporalio.worker import Worker
from typer.testing import CliRunner

from activities.agencies import SAMPLE_AGENCIES
from activities.agencies.synthetic import Household, Person, generate
from activities.linkage import Provider
from renkei.app.client import RenkeiClient
from renkei.bpf import registry
from renkei.contracts.messages import (
    BrokerRequest,
    DisclosureHold,
    ResolvedRun,
    ResolveRequest,
    StartFlow,
)
from renkei.kernel import keys, records
from renkei.kernel.pseudonyms import derive_code
from renkei.kernel.records import AccessRecord
from renkei.kernel.settings import Settings
from whitelist.models import Catalog, WhitelistRow
from whitelist.orgs import NewOrg
from whitelist.store import LiveWhitelist
from workers.assembly import running_workers

# How a linkage decided after 2024-05-27 cites the 2015 table, which stands in for the ordinance
# under Article 19(8) until that is loaded (docs/whitelist.md, "Sources").
STAND_IN = " (2015年時点の表: 現行の命令が読み込まれていないため代用)"


def households(settings: Settings) -> list[Household]:
    return generate(settings.sample_residents)


def pick(settings: Settings, test: Callable[[Household], bool]) -> Household:
    return next(h for h in households(settings) if test(h))


async def approved_hold(
    pool: asyncpg.Pool,
    executor: str,
    bpf: str,
    case_ref: str,
    subject: str,
    *,
    days: int = 30,
) -> DisclosureHold:
    """An investigation hold over one case about one person, requested by its executor and
    approved by a platform operator: what a start names to carry it."""
    from renkei.kernel import holds

    until = dt.datetime.now(dt.UTC) + dt.timedelta(days=days)
    asked = await holds.request(
        pool, executor, bpf, case_ref, "investigation", until, executor, subject=subject
    )
    await holds.approve(pool, asked.id, "operator-alice", hub=hub_key())
    return DisclosureHold(until=until, reason="investigation", approval=asked.id)


def pick_aside(settings: Settings, test: Callable[[Household], bool]) -> Household:
    """A household from the second half of the sample: for a test leaving records the citizen
    cannot see yet (a disclosure hold), away from those other tests pick (the first that pass)."""
    found = households(settings)
    return next(h for h in found[len(found) // 2 :] if test(h))


def code(settings: Settings, org: str, person: Person) -> str:
    return derive_code(keys.load(settings).hub_key, org, person.subject_id)


# The hub's key of the tests' settings (set once per session by conftest): it seals each change
# of the whitelist and the org registry (whitelist.seal).
HUB: list[Ed25519PrivateKey] = []


def hub_key() -> Ed25519PrivateKey:
    return HUB[0]


def hub_public(settings: Settings) -> Ed25519PublicKey:
    """The hub's public signing key (what the citizen's view checks providers' keys by)."""
    return keys.load(settings).signer().public_key()


@contextlib.asynccontextmanager
async def undone_as_owner(pool: asyncpg.Pool) -> AsyncIterator[asyncpg.Connection]:
    """A connection as the database's owner (a superuser or administrator: the pool's role
    set aside) in a transaction rolled back after, whatever it changed, for the session's
    shared database to stay as it was."""
    async with pool.acquire() as conn:
        tx = conn.transaction()
        await tx.start()
        try:
            await conn.execute("SET LOCAL ROLE NONE")
            yield conn
        finally:
            await tx.rollback()


@contextlib.asynccontextmanager
async def workers(
    client: Client,
    pool: asyncpg.Pool,
    settings: Settings,
    catalog: Catalog,
    whitelist: LiveWhitelist,
    *,
    agencies: tuple[str, ...] = SAMPLE_AGENCIES,
    providers: dict[str, dict[str, Provider]] | None = None,
    control: bool = True,
) -> AsyncIterator[list[Worker]]:
    """The project's worker set, with some agencies' providers replaced.

    The sets a test runs at once (its task-queue prefix) share their direct-channel endpoints,
    as the sets of several processes do through their settings: one set's executors reach the
    agencies another serves."""
    async with running_workers(
        client,
        pool,
        settings,
        catalog,
        whitelist,
        control=control,
        agencies=agencies,
        providers=(providers or {}).get,
        endpoints=endpoints_of(settings),
    ) as ws:
        yield ws


# The direct-channel endpoints of each test's worker sets (by task-queue prefix).
_ENDPOINTS: dict[str, dict[str, str]] = {}


def endpoints_of(settings: Settings) -> dict[str, str]:
    """The direct-channel endpoints the worker sets of ``settings``' test share (its task-queue
    prefix): the settings' own, and those its sets serve, for a worker of the test's own."""
    return _ENDPOINTS.setdefault(settings.task_queue_prefix, dict(settings.linkage_endpoints))


def through_queues(settings: Settings) -> Settings:
    """``settings`` with every linkage an activity on its provider's queue, whatever the suite's
    transport: for a test of that path itself (a rogue worker on a provider's queue). The
    direct channel's own attacker tests are in tests/test_direct.py."""
    return settings.model_copy(update={"linkage_transport": "queue"})


def start(bpf: str, executor: str, subject: str, **kw: Any) -> StartFlow:
    return StartFlow(
        bpf=bpf, executor=executor, subject=subject, case_ref=f"case-{uuid.uuid4().hex[:10]}", **kw
    )


def child_rearing(
    settings: Settings,
    applicant: Person,
    spouse: Person | None = None,
    municipality: str = "city-minato",
    **kw: Any,
) -> StartFlow:
    """The child-rearing allowance income check, run by Tokyo for ``applicant``."""
    inputs: dict[str, str] = {"municipality": municipality}
    if spouse is not None:
        inputs["spouse"] = code(settings, "pref-tokyo", spouse)
    return start(
        "child-rearing-allowance-income-check",
        "pref-tokyo",
        code(settings, "pref-tokyo", applicant),
        inputs=inputs,
        **kw,
    )


async def register_fixture(pool: asyncpg.Pool, name: str) -> None:
    """Register ``tests/definitions/NAME`` as a draft, after checking it has no error."""
    from pathlib import Path

    from renkei.bpf import registry
    from renkei.bpf.loader import load_file
    from renkei.bpf.validation import validate
    from whitelist import store
    from whitelist.catalog import default_catalog

    loaded = load_file(Path(__file__).parent / "definitions" / name)
    found = validate(loaded, default_catalog(), await store.load_index(pool))
    errors = [i for i in found if i.severity == "error"]
    assert not errors, errors
    await registry.register(pool, loaded)


def access_record(keeper: str, n: int, **changes: Any) -> AccessRecord:
    """A synthetic access record of attempt ``n`` kept by ``keeper`` (fields overridable)."""
    return AccessRecord(
        keeper=keeper,
        attempt_key=f"wf-{n}/run/step",
        decided_at=dt.datetime.now(dt.UTC),
        requester="pref-tokyo",
        provider="city-minato",
        task="child-rearing-allowance",
        info="local-tax",
        legal_reference="番号法別表第二 五十七項",
        whitelist_row=None,
        subject_code=f"CODE{n:016d}",
        bpf="probe",
        bpf_version=1,
        content_hash="sha256:0",
        workflow_id=f"wf-{n}",
        run_id="run",
        step="step",
        outcome="allowed",
        reason="ok",
    ).model_copy(update=changes)


async def records_by_party(
    pool: asyncpg.Pool, workflow_id: str
) -> dict[tuple[str, str], list[AccessRecord]]:
    """A run's access records by (party, step); party is requester, provider or hub."""
    found: dict[tuple[str, str], list[AccessRecord]] = {}
    for r in await records.query(pool, workflow_id=workflow_id):
        party = (
            "hub" if r.keeper == "hub" else "provider" if r.keeper == r.provider else "requester"
        )
        found.setdefault((party, r.step), []).append(r)
    return found


def shibuya_family(settings: Settings, index: int = 0) -> Household:
    """The ``index``-th family of Shibuya (cycling through them)."""
    families = [
        h for h in households(settings) if h.municipality == "city-shibuya" and h.kind == "family"
    ]
    return families[index % len(families)]


def allowance_check(settings: Settings, index: int = 0) -> StartFlow:
    """Minato's child-allowance check (two parallel linkages: Shibuya's local tax, the JPS's
    pensions) for a Shibuya family's parent."""
    h = shibuya_family(settings, index)
    return start(
        "child-allowance-check",
        "city-minato",
        code(settings, "city-minato", h.members[0]),
        inputs={"previous_municipality": "city-shibuya"},
    )


def sdk(client: Client, settings: Settings) -> RenkeiClient:
    return RenkeiClient(client, settings)


def run(
    cli: CliRunner, *args: str, input: str | None = None, token: str | None = None
) -> tuple[int, str]:
    """Invoke the renkei command; (exit code, stdout and stderr). With ``token``, signed in as
    that operator (``""``: signed in as no one)."""
    from renkei.app.actors import TOKEN_VARIABLE
    from renkei.app.cli import app

    env = None if token is None else {TOKEN_VARIABLE: token}
    result = cli.invoke(app, list(args), input=input, env=env)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        # what a terminal would show: the runner keeps an uncaught exception apart
        import traceback

        return result.exit_code, result.output + "".join(
            traceback.format_exception(result.exception)
        )
    return result.exit_code, result.output


def operator_token(cli: CliRunner, name: str, *options: str) -> str:
    """A new operator ``name`` (``renkei operators add NAME OPTIONS``): its token."""
    code, out = run(cli, "operators", "add", name, *options)
    assert code == 0, out
    return out.splitlines()[0]


# -- arranging orgs, PIAs and versions in operation ---------------------------------------------


async def caught_up(pool: asyncpg.Pool, live: LiveWhitelist) -> None:
    """Wait until ``live`` (the running workers' view) holds every change made so far: the
    PIAs and suspensions, the whitelist rows and the org registry."""
    from whitelist import controls_store

    await live.controls.wait_for_version(await controls_store.current_version(pool))
    await live.wait_for_version(await pool.fetchval("SELECT version FROM whitelist.version"))


async def give_pias(
    pool: asyncpg.Pool,
    live: LiveWhitelist,
    catalog: Catalog | None = None,
    rows: list[WhitelistRow] | None = None,
    on: dt.date | None = None,
) -> None:
    """Give each party of ``rows`` (default: the shipped ones) its PIA for the row's task
    (特定個人情報保護評価: a new org records its own before it takes part; here, as the samples'
    are), its roles read from ``catalog`` (default: the org registry as it is now), then wait
    until ``live`` holds every change made so far. A (org, task) with a PIA history keeps it."""
    from whitelist import controls_store, orgs
    from whitelist.catalog import default_catalog
    from whitelist.controls import sample_pias
    from whitelist.decide import JST
    from whitelist.local import all_rows

    shipped = default_catalog()
    if catalog is None:
        catalog = shipped.model_copy(update={"orgs": await orgs.load_orgs(pool)})
    today = on or dt.datetime.now(JST).date()
    found = all_rows(shipped) if rows is None else rows
    await controls_store.seed_pias(
        pool, sample_pias(catalog, found, today), recorded_by="test", hub=hub_key()
    )
    await caught_up(pool, live)


async def onboard_org(
    pool: asyncpg.Pool,
    settings: Settings,
    catalog: Catalog,
    new: NewOrg,
    providers: Mapping[str, Provider],
) -> None:
    """Add ``new`` and make it active the way the CLI does: its providers' contract test,
    its certificate, activation."""
    from renkei.app import onboarding
    from whitelist import orgs, store

    await orgs.add(pool, catalog, new, "test", "platform-operator", hub=hub_key())
    live = catalog.model_copy(update={"orgs": await orgs.load_orgs(pool)})
    run = await onboarding.contract_test(
        pool, live, await store.load_index(pool), new.id, providers, {}, "test", hub=hub_key()
    )
    assert run.passed, run.checks
    await onboarding.certify(pool, settings, new.id)
    await orgs.transition(pool, new.id, "active", "test", "platform-operator", hub=hub_key())


async def operating_for(
    pool: asyncpg.Pool, executor: str, bpf: str | None = None, version: int | None = None
) -> None:
    """Arrangement, not a subject (the lifecycle has its own tests): every registered version
    not retired (or ``bpf``'s, or ``bpf`` ``version``) operating, for ``executor``."""
    where = " WHERE ($1::text IS NULL OR bpf = $1) AND ($2::int IS NULL OR version = $2)"
    await pool.execute(  # a retired version stays retired (migration 0056)
        f"UPDATE registry.bpf_versions SET state = 'operating'{where} AND state <> 'retired'",
        bpf,
        version,
    )
    await pool.execute(
        "INSERT INTO registry.operated_by (bpf, version, executor)"
        f" SELECT bpf, version, $3 FROM registry.bpf_versions{where} ON CONFLICT DO NOTHING",
        bpf,
        version,
        executor,
    )


async def transition(
    pool: asyncpg.Pool,
    bpf: str,
    version: int,
    action: registry.Action,
    actor: str,
    *,
    roles_from: Catalog | None = None,
    conformance_body: str = "digital-agency",
    signed_in: Settings | None = None,
    **kw: Any,
) -> registry.Transition:
    """One lifecycle transition by ``actor``, in its roles of ``roles_from`` (none given: no
    roles); ``kw`` as :func:`renkei.bpf.registry.transition` takes them. ``signed_in``: an
    approval is signed with the conformance body's key of these settings, as ``renkei bpf
    approve`` signs it, and an ``operate`` with the executor's, as ``renkei bpf operate`` does
    (a hub in operation runs a version only so approved, and only for executors that signed)."""
    roles = roles_from.org_roles(actor) if roles_from is not None else frozenset()
    if action in ("approve", "operate") and signed_in is not None:
        from renkei.app import approvals

        if action == "approve":
            kw.setdefault("approval_signer", approvals.signer(signed_in))
        else:
            kw.setdefault("operation_signer", approvals.operation_signer(signed_in))
    return await registry.transition(
        pool,
        bpf,
        version,
        action,
        actor,
        conformance_body=conformance_body,
        actor_roles=roles,
        **kw,
    )


async def wait_for_outcomes(
    pool: asyncpg.Pool, attempt_keys: Iterable[str], *, within: float = 120.0
) -> dict[str, records.AttemptOutcome]:
    """The recorded outcome of each of ``attempt_keys``, once every one has its own: the hub
    collects a ``provided`` from the provider's receipt a moment after the answer (the flow may
    have ended by then). Polls; fails naming how many are still missing after ``within``
    seconds (a bound for a loaded machine, not a measure)."""
    wanted = set(attempt_keys)
    deadline = asyncio.get_running_loop().time() + within
    while True:
        found = await records.outcomes(pool, list(wanted))
        if set(found) == wanted:
            return found
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(
                f"{len(wanted - set(found))} of {len(wanted)} attempts have no outcome yet"
            )
        await asyncio.sleep(0.05)


async def all_chained(
    pool: asyncpg.Pool, keepers: Iterable[str] | None = None, *, within: float = 60.0
) -> None:
    """Once no record of ``keepers`` (every keeper's when ``None``) waits for its place in its
    chain: with deferred chaining, the default, each keeper's chainer links a record within a
    second of its write (billing, checkpoints and chain ranges count linked records only). Polls;
    fails naming the keepers still waiting after ``within`` seconds (a bound for a loaded
    machine, not a measure)."""
    only = sorted(keepers) if keepers is not None else None
    deadline = asyncio.get_running_loop().time() + within
    while True:
        waiting = [
            r["keeper"]
            for r in await pool.fetch(
                "SELECT DISTINCT keeper FROM records.access_records WHERE chain_seq IS NULL"
                " AND ($1::text[] IS NULL OR keeper = ANY($1))",
                only,
            )
        ]
        if not waiting:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"records of {', '.join(waiting)} still unchained")
        await asyncio.sleep(0.05)


async def flow_outcomes(
    pool: asyncpg.Pool, workflow_id: str, *, within: float = 120.0
) -> dict[str, str]:
    """Each attempt of the flow ``workflow_id`` the hub allowed, by step, with its outcome, once
    every one has its own (:func:`wait_for_outcomes`)."""
    allowed = [
        r
        for r in await records.query(pool, workflow_id=workflow_id, keeper=records.HUB)
        if r.outcome == "allowed"
    ]
    found = await wait_for_outcomes(pool, [r.attempt_key for r in allowed], within=within)
    return {r.step: found[r.attempt_key].outcome for r in allowed}


def cli_joins(monkeypatch: Any, client: Client, settings: Settings) -> None:
    """The renkei command (the ``cli`` fixture) on this test's Temporal server and task queues:
    what it starts or asks reaches the test's own workers. ``monkeypatch`` undoes it after."""
    from renkei.kernel.settings import get_settings

    monkeypatch.setenv("RENKEI_TEMPORAL_ADDRESS", client.service_client.config.target_host)
    monkeypatch.setenv("RENKEI_TASK_QUEUE_PREFIX", settings.task_queue_prefix)
    get_settings.cache_clear()


async def hub_calls(handle: WorkflowHandle[Any, Any]) -> list[str]:
    """The calls a flow made to the hub, in order, as its history says: on the hub's queue, or
    (``hub.resolve``) over the hub's endpoint, a local activity's marker."""
    return [name for name, _ in calls_to_the_hub(await handle.fetch_history())]


def calls_to_the_hub(history: Any) -> list[tuple[str, bool]]:
    """Each call to the hub in ``history``, in order: its activity's name, and whether it was
    asked over the hub's endpoint (a ``renkei.direct-resolve`` marker, failed or not) rather
    than on the hub's queue."""
    import json

    from renkei.contracts.names import DIRECT_RESOLVE

    calls = []
    for e in history.events:
        if e.HasField("activity_task_scheduled_event_attributes"):
            name = e.activity_task_scheduled_event_attributes.activity_type.name
            if name.startswith("hub."):
                calls.append((name, False))
        elif (
            e.HasField("marker_recorded_event_attributes")
            and e.marker_recorded_event_attributes.marker_name == "core_local_activity"
        ):
            data = e.marker_recorded_event_attributes.details["data"].payloads[0].data
            if json.loads(data)["activity_type"] == DIRECT_RESOLVE:
                calls.append(("hub.resolve", True))
    return calls


# What the SDK writes in clear in a marker's details (a patch's, or a local activity's account of
# itself: never the request or the answer, which are sealed).
MARKER_KEYS = frozenset(
    {
        "id",
        "deprecated",
        "seq",
        "attempt",
        "activity_id",
        "activity_type",
        "complete_time",
        "backoff",
        "original_schedule_time",
        "activation_index",
    }
)


def said(err: BaseException) -> str:
    """What an activity's failure says, as a hostile executor's workflow reports it to its test:
    the failure's type and message (``"LinkageRefused: linkage refused: …"``)."""
    cause = getattr(err, "cause", None)
    return f"{getattr(cause, 'type', None)}: {getattr(cause, 'message', err)}"


def ask_hub(queue: str, name: str, arg: Any, result_type: Any = None) -> Any:
    """In a workflow (a hostile executor's own, in a test): ask the hub's activity ``name`` on
    the hub's queue ``queue`` once, as a flow does (no retry: what it becomes is the test's)."""
    from datetime import timedelta

    from temporalio import workflow
    from temporalio.common import RetryPolicy

    return workflow.execute_activity(
        name,
        arg,
        task_queue=queue,
        start_to_close_timeout=timedelta(seconds=30),
        retry_policy=RetryPolicy(maximum_attempts=1),
        result_type=result_type,
    )


async def as_resolved(hub: str, req: BrokerRequest, inputs: Mapping[str, Any]) -> BrokerRequest:
    """``req`` as the calling workflow (a hostile executor's own, in a test) asks it once it has
    resolved its run with the hub on queue ``hub`` as a flow does: carrying the run's ticket."""
    run = await ask_hub(
        hub,
        "hub.resolve",
        ResolveRequest(
            bpf=req.bpf,
            version=req.bpf_version,
            executor=req.requester,
            subject=req.subject,
            inputs=dict(inputs),
            trigger=req.trigger,
            reads_signed_tickets=True,
        ),
        ResolvedRun,
    )
    return req.model_copy(update={"ticket": run.ticket})
