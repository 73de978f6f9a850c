"""Guarantees that hold when a participant is hostile: each test plays the attacker.

(The threat model's rows are in docs/trust.md; each names the test here that proves it.)
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import uuid
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import asyncpg
import pytest
from annotated_types import MaxLen
from pydantic import BaseModel
from temporalio import activity, workflow
from temporalio.client import Client, WorkflowFailureError
from temporalio.common import RawValue, RetryPolicy
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.exceptions import ActivityError, ChildWorkflowError
from temporalio.service import RPCError
from temporalio.worker import Worker

from activities.permits import subject_context
from renkei.app.client import ResponseRefused
from renkei.contracts.failures import Failure
from renkei.contracts.messages import FlowResult, LinkageRequest, Pin
from renkei.contracts.names import (
    DIRECT_LINKAGE,
    DIRECT_RESOLVE,
    agency_queue,
    control_queue,
    executor_of,
    hub_queue,
    query_activity,
    scan_workflow_id,
    workflow_id,
)
from renkei.kernel import attest, keys, parties, permits, records
from renkei.kernel.permits import SignedPermit
from renkei.kernel.sealing import SealError, open_sealed
from renkei.kernel.settings import Settings, get_settings
from whitelist.payloads import LocalTax, ResidentRecord
from workers.plugin import party_client
from workflows.interpreter import BpfInterpreter

from .helpers import (
    MARKER_KEYS,
    access_record,
    allowance_check,
    approved_hold,
    child_rearing,
    code,
    hub_key,
    hub_public,
    pick,
    pick_aside,
    register_fixture,
    said,
    sdk,
    start,
    through_queues,
    workers,
)


async def _kept_by(pool, wid: str, keeper: str) -> list[records.AccessRecord]:
    return [r for r in await records.query(pool, workflow_id=wid) if r.keeper == keeper]


async def test_a_city_cannot_read_another_citys_register_under_its_own_use_ordinance(
    client, pool, settings, catalog, live_whitelist
) -> None:
    """番号法第9条第2項 covers city-minato's use of its own register, not city-shibuya's."""
    await register_fixture(pool, "register-probe.yaml")
    asked: list[str] = []

    async def spy(req: LinkageRequest) -> ResidentRecord:
        asked.append(req.subject)
        raise AssertionError("city-shibuya's register must not be read")

    spying = {"city-shibuya": {"resident-record": spy}}
    rc = sdk(client, settings)
    h = pick(settings, lambda h: h.municipality == "city-minato")
    subject = code(settings, "city-minato", h.members[0])
    async with workers(client, pool, settings, catalog, live_whitelist, providers=spying):
        other = await rc.start(
            start("register-probe", "city-minato", subject, inputs={"register": "city-shibuya"})
        )
        with pytest.raises(WorkflowFailureError) as failure:
            await other.result()
        own = await rc.start(
            start("register-probe", "city-minato", subject, inputs={"register": "city-minato"})
        )
        assert (await own.result()).outcome == "completed"
    assert Failure.LINKAGE_DENIED.caused(failure.value.cause)
    assert "its own records only" in str(failure.value.cause)
    assert asked == []  # city-shibuya's code was never handed out, its provider never ran
    assert await _kept_by(pool, other.id, "city-shibuya") == []
    for keeper in ("city-minato", records.HUB):
        [rec] = await _kept_by(pool, other.id, keeper)
        assert rec.outcome == "denied" and rec.provider == "city-shibuya"
    [kept] = await _kept_by(pool, own.id, "city-minato")
    assert kept.outcome == "allowed" and kept.whitelist_row == (
        "local-city-minato/一/municipal-board-of-education/school-entry-notice"
        "/municipal-board-of-education/resident-record/-/-"
    )
    # cited in city-minato's own ordinance's form
    assert kept.legal_reference == (
        "港区行政手続における特定の個人を識別するための番号の利用等に関する条例（サンプル）"
        "別表第一 一の項"
    )


# -- forged, replayed and unsealed requests: what a process that reaches Temporal can try -------


@workflow.defn(name="attacker.forge", sandboxed=False)
class Forge:
    """An attacker's own workflow: sends one linkage request straight to a provider's queue.

    With ``wait_for_permit`` it first waits for a permit (the test, playing a hub that was
    fooled or whose permit leaked, signs one for this very run) before sending.
    """

    def __init__(self) -> None:
        self._permit: SignedPermit | None = None

    @workflow.signal(name="permit")
    def permit(self, signed: SignedPermit) -> None:
        self._permit = signed

    @workflow.run
    async def run(self, queue: str, req: LinkageRequest, wait_for_permit: bool) -> str:
        if wait_for_permit:
            await workflow.wait_condition(lambda: self._permit is not None)
            req = req.model_copy(update={"permit": self._permit})
        try:
            answer = await workflow.execute_activity(
                query_activity(req.info),
                req,
                task_queue=queue,
                activity_id="tax",
                start_to_close_timeout=timedelta(seconds=10),
                retry_policy=RetryPolicy(maximum_attempts=1),
                result_type=dict,
            )
        except ActivityError as err:
            return said(err)
        return f"answered {sorted(answer)}"


def _forged(settings, person, **changes) -> LinkageRequest:
    """A request as a rogue would write it: pref-tokyo asking city-shibuya for local tax, with
    city-shibuya's own code for the person (learnt somehow)."""
    fields = {
        "requester": "pref-tokyo",
        "provider": "city-shibuya",
        "task": "child-rearing-allowance",
        "info": "local-tax",
        "subject": code(settings, "city-shibuya", person),
        "bpf": "child-rearing-allowance-income-check",
        "bpf_version": 1,
        "content_hash": "sha256:0",
        "step": "tax",
    }
    return LinkageRequest(**{**fields, **changes})


@contextlib.asynccontextmanager
async def _attacker(client, settings, spy_calls: list[str], pool, catalog, live_whitelist):
    """city-shibuya's real worker (with a spy provider) and the attacker's worker."""

    async def spy(req: LinkageRequest) -> LocalTax:
        spy_calls.append(req.subject)
        return LocalTax(fiscal_year=2025, taxable_income=1, municipal_tax=0, dependents=0)

    queue = f"{settings.task_queue_prefix}.attacker"
    async with (
        workers(
            client,
            pool,
            settings,
            catalog,
            live_whitelist,
            agencies=("city-shibuya",),
            providers={"city-shibuya": {"local-tax": spy}},
            control=False,
        ),
        Worker(rogue_client(client, settings), task_queue=queue, workflows=[Forge, ForgeRaw]),
    ):
        yield queue


def rogue_client(client, settings, party: str = "pref-tokyo"):
    """A client holding one agency's own keys, and nothing else: what an agency's worker has."""
    return party_client(client, settings, [party])


async def _forge(client, queue: str, settings, req: LinkageRequest, wait: bool = False):
    # A workflow id naming the rogue agency as executor: its payloads to city-shibuya are
    # sealed between the two, so city-shibuya's gate reads the request and judges it.
    return await rogue_client(client, settings).start_workflow(
        Forge.run,
        args=[agency_queue(settings.task_queue_prefix, "city-shibuya"), req, wait],
        id=workflow_id(
            "child-rearing-allowance-income-check", "pref-tokyo", f"attack-{uuid.uuid4().hex[:8]}"
        ),
        task_queue=queue,
    )


async def test_a_forged_request_without_a_hub_permit_is_refused_and_recorded(
    client, pool, settings, catalog, live_whitelist
) -> None:
    """An agency's worker holds its own keys, so the provider can read its request; it has no
    hub permit. city-shibuya refuses it before any provider code, and records the claim."""
    calls: list[str] = []
    person = pick(settings, lambda h: h.municipality == "city-shibuya").members[0]
    async with _attacker(client, settings, calls, pool, catalog, live_whitelist) as queue:
        handle = await _forge(client, queue, settings, _forged(settings, person))
        outcome = await handle.result()
    assert outcome.startswith("LinkageRefused") and "no permit" in outcome
    assert calls == []  # city-shibuya's provider never ran
    [kept] = await _kept_by(pool, handle.id, "city-shibuya")
    assert kept.outcome == "denied" and kept.reason.startswith("refused: no permit")
    assert kept.requester == "pref-tokyo"  # the claim, recorded as claimed
    # The hub never brokered it, so no one else kept a record the citizen would read as lawful.
    assert await _kept_by(pool, handle.id, records.HUB) == []
    assert await _kept_by(pool, handle.id, "pref-tokyo") == []


async def test_a_request_without_a_permit_under_the_migration_switch_sends_nothing_beside_it(
    client, pool, settings, catalog, live_whitelist
) -> None:
    """``RENKEI_ACCEPT_UNPERMITTED_LINKAGES`` lets a run from before permits reach a provider
    without one: such a run sent its query alone. A forged request riding the switch with data
    of its own beside the query (fields to send, parameters) is refused before the provider's
    code runs; the query alone is answered, as the switch means."""
    settings = settings.model_copy(update={"accept_unpermitted_linkages": True})
    calls: list[str] = []
    person = pick(settings, lambda h: h.municipality == "city-shibuya").members[0]
    data = {"birth_date": "1980-01-01"}
    async with _attacker(client, settings, calls, pool, catalog, live_whitelist) as queue:
        handles = [
            await _forge(client, queue, settings, _forged(settings, person, **extra))
            for extra in ({"send": data}, {"params": data}, {})
        ]
        sends, params, alone = [await h.result() for h in handles]
    for outcome in (sends, params):
        assert outcome.startswith("LinkageRefused") and "sends nothing beside" in outcome
        assert "1980" not in outcome
    assert alone.startswith("answered"), alone
    assert len(calls) == 1  # the query alone reached city-shibuya's provider


@workflow.defn(name="attacker.forge-raw", sandboxed=False)
class ForgeRaw:
    """An attacker's own workflow sending a provider's queue whatever JSON it likes as a
    linkage request: no model of the attacker's side checks it."""

    @workflow.run
    async def run(self, queue: str, activity_type: str, req: dict[str, Any]) -> str:
        try:
            await workflow.execute_activity(
                activity_type,
                req,
                task_queue=queue,
                start_to_close_timeout=timedelta(seconds=10),
                retry_policy=RetryPolicy(maximum_attempts=1),
                result_type=dict,
            )
        except ActivityError as err:
            return said(err)
        return "answered"


def _bounded_fields(model: type[BaseModel]) -> dict[str, int]:
    """Each text field of ``model`` with a bound on its length, and the bound."""
    return {
        name: limit
        for name, f in model.model_fields.items()
        for limit in [next((m.max_length for m in f.metadata if isinstance(m, MaxLen)), None)]
        if limit is not None and f.annotation is str
    }


async def test_a_request_naming_more_than_a_record_holds_is_refused_unrecorded(
    client, pool, settings, catalog, live_whitelist
) -> None:
    """A provider records a refused request as it was claimed, so what a request names is
    bounded where the provider reads it: for each text field (each the model bounds, and it
    must bound every one a record keeps), a request one character past its bound is refused
    before the gate judges it. The provider's code never runs and its chain keeps nothing of
    it: no party can make another's chain, its chainer or a citizen's page carry megabytes."""
    bounded = _bounded_fields(LinkageRequest)
    kept_fields = {"requester", "provider", "task", "info", "subject", "bpf", "content_hash"}
    assert bounded.keys() >= kept_fields | {"step", "trigger"}, bounded
    calls: list[str] = []
    person = pick(settings, lambda h: h.municipality == "city-shibuya").members[0]
    req = _forged(settings, person).model_dump(mode="json")
    rogue = rogue_client(client, settings)
    async with _attacker(client, settings, calls, pool, catalog, live_whitelist) as queue:
        handles = [
            await rogue.start_workflow(
                ForgeRaw.run,
                args=[
                    agency_queue(settings.task_queue_prefix, "city-shibuya"),
                    query_activity("local-tax"),
                    {**req, field: "x" * (limit + 1)},
                ],
                id=workflow_id(
                    "child-rearing-allowance-income-check",
                    "pref-tokyo",
                    f"big-{n}-{uuid.uuid4().hex[:8]}",
                ),
                task_queue=queue,
            )
            for n, (field, limit) in enumerate(bounded.items())
        ]
        # the same request within its bounds is read, judged and recorded (it has no permit)
        within = await _forge(client, queue, settings, _forged(settings, person))
        outcomes = [await h.result() for h in handles]
        assert (await within.result()).startswith("LinkageRefused")
    for field, outcome in zip(bounded, outcomes, strict=True):
        assert outcome.startswith("MalformedLinkage"), (field, outcome)
    assert calls == []
    assert len(await _kept_by(pool, within.id, "city-shibuya")) == 1
    for h in handles:
        assert await _kept_by(pool, h.id, "city-shibuya") == []


async def _hub_permit(settings, *, workflow_id: str, run_id: str, **changes) -> SignedPermit:
    """A permit signed with the hub's real key (the test plays the hub)."""
    hub = keys.load(settings)
    now = dt.datetime.now(dt.UTC)
    fields = {
        "workflow_id": workflow_id,
        "run_id": run_id,
        "step": "tax",
        "requester": "pref-tokyo",
        "provider": "city-shibuya",
        "task": "child-rearing-allowance",
        "info": "local-tax",
        "whitelist_row": "annex2-2015/57",
        "legal_reference": "番号法別表第二 五十七項",
        "bpf": "child-rearing-allowance-income-check",
        "bpf_version": 1,
        "content_hash": "sha256:0",
        "subject_seal": permits.seal_digest(None),
        "issued_at": now,
        "expires_at": now + dt.timedelta(minutes=10),
        "key_id": keys.key_id(keys.public_raw(hub.signer().public_key())),
    }
    return permits.sign(permits.Permit(**{**fields, **changes}), hub.signer())


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("replayed", "another attempt (replayed)"),
        ("expired", "expired"),
        ("altered", "not the hub's"),
        ("other-provider", "not city-shibuya"),
        ("other-claim", "differs from its permit"),
        ("swapped-code", "sealed subject code is not the one permitted"),
        # a query's permit, this very attempt's, names nothing to send: the executor sends the
        # provider data of its own beside it
        ("sends", "sends fields its permit does not name: birth_date, note"),
        ("params", "only a scan of an org's own register takes them"),
    ],
)
async def test_a_permit_that_does_not_hold_for_this_attempt_is_refused(
    client, pool, settings, catalog, live_whitelist, case: str, expected: str
) -> None:
    calls: list[str] = []
    person = pick(settings, lambda h: h.municipality == "city-shibuya").members[0]
    req = _forged(settings, person)
    if case == "sends":
        req = req.model_copy(update={"send": {"note": "x", "birth_date": "1980-01-01"}})
    if case == "params":
        req = req.model_copy(update={"params": {"birth_date": "1980-01-01"}})
    async with _attacker(client, settings, calls, pool, catalog, live_whitelist) as queue:
        handle = await _forge(client, queue, settings, req, wait=True)
        run_id = handle.result_run_id or ""
        own = {"workflow_id": handle.id, "run_id": run_id}
        signed = {
            "replayed": lambda: _hub_permit(settings, workflow_id="someone-else", run_id=run_id),
            "expired": lambda: _hub_permit(
                settings, **own, expires_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
            ),
            "other-provider": lambda: _hub_permit(settings, **own, provider="city-minato"),
            "other-claim": lambda: _hub_permit(settings, **own, info="resident-record"),
            "swapped-code": lambda: _hub_permit(settings, **own, subject_seal="0" * 64),
            "sends": lambda: _hub_permit(settings, **own),
            "params": lambda: _hub_permit(settings, **own),
        }
        if case == "altered":  # a real permit for this run, one field changed after signing
            real = await _hub_permit(settings, **own, requester="city-minato")
            permit = real.model_copy(
                update={"permit": real.permit.model_copy(update={"requester": "pref-tokyo"})}
            )
        else:
            permit = await signed[case]()
        await handle.signal(Forge.permit, permit)
        outcome = await handle.result()
    assert outcome.startswith("LinkageRefused") and expected in outcome, outcome
    assert calls == []
    [kept] = await _kept_by(pool, handle.id, "city-shibuya")
    assert kept.outcome == "denied" and expected in kept.reason
    assert "1980" not in kept.reason


async def test_a_request_written_without_the_payload_ring_is_not_even_read(
    temporal_env, client, pool, settings, catalog, live_whitelist
) -> None:
    """A process that reaches Temporal with no keys at all (the default converter): its request
    reaches city-shibuya's worker as an unencrypted payload, which the worker refuses to read."""
    calls: list[str] = []
    person = pick(settings, lambda h: h.municipality == "city-shibuya").members[0]
    target = temporal_env.client.service_client.config.target_host
    # No codec: payloads in clear (pydantic JSON, as any Temporal client would write them).
    plain = await Client.connect(
        target, namespace=client.namespace, data_converter=pydantic_data_converter
    )
    queue = f"{settings.task_queue_prefix}.plain-attacker"
    async with (
        _attacker(client, settings, calls, pool, catalog, live_whitelist),
        Worker(plain, task_queue=queue, workflows=[Forge]),
    ):
        handle = await plain.start_workflow(
            Forge.run,
            args=[
                agency_queue(settings.task_queue_prefix, "city-shibuya"),
                _forged(settings, person),
                False,
            ],
            id=f"plain-attacker-{uuid.uuid4().hex[:8]}",
            task_queue=queue,
        )
        outcome = await handle.result()
    assert not outcome.startswith("answered"), outcome
    assert calls == []
    assert [
        r for r in await _kept_by(pool, handle.id, "city-shibuya") if r.outcome == "allowed"
    ] == []


async def test_a_rogue_worker_on_a_providers_queue_cannot_read_the_code_nor_forge_the_answer(
    client, pool, settings, catalog, live_whitelist
) -> None:
    """A rogue worker (it holds the payload ring, as any agency's worker does) polls
    city-shibuya's queue and takes a real linkage: the request names no subject in clear, and
    the sealed code opens only with city-shibuya's own key. (Through the provider's queue: over
    the direct channel no worker takes a linkage off a queue.)"""
    settings = through_queues(settings)
    taken: list[LinkageRequest] = []

    @activity.defn(dynamic=True)
    async def rogue(args: Sequence[RawValue]) -> dict[str, object]:
        taken.append(activity.payload_converter().from_payload(args[0].payload, LinkageRequest))
        # Made-up data, as a rogue would answer (it has no key of city-shibuya's to sign with).
        made_up = LocalTax(fiscal_year=2025, taxable_income=1, municipal_tax=0, dependents=0)
        return {"answer": made_up.model_dump(mode="json"), "signature": "Zm9yZ2Vk"}

    await register_fixture(pool, "retry-probe.yaml")
    h = pick(settings, lambda h: h.municipality == "city-shibuya")
    rc = sdk(client, settings)
    async with (
        workers(client, pool, settings, catalog, live_whitelist, agencies=()),
        Worker(
            client,
            task_queue=agency_queue(settings.task_queue_prefix, "city-shibuya"),
            activities=[rogue],
        ),
    ):
        handle = await rc.start(
            start("retry-probe", "city-minato", code(settings, "city-minato", h.members[0]))
        )
        with pytest.raises(WorkflowFailureError) as failure:
            await handle.result()
    # Its made-up answer is not city-shibuya's: the flow does not take it.
    assert Failure.FORGED_ANSWER.caused(
        failure.value.cause.__cause__
    ) or "not city-shibuya's" in str(failure.value.cause)
    assert taken
    req = taken[0]
    shibuya_code = code(settings, "city-shibuya", h.members[0])
    assert req.subject == "" and req.sealed_subject is not None and req.permit is not None
    assert shibuya_code not in req.model_dump_json()
    context = subject_context(handle.id, req.permit.permit.run_id, "tax", "city-shibuya")
    with pytest.raises(SealError):  # another agency's key does not open it
        open_sealed(keys.load_org(settings, "city-minato").opener(), req.sealed_subject, context)
    opened = open_sealed(
        keys.load_org(settings, "city-shibuya").opener(), req.sealed_subject, context
    )
    assert opened.decode() == shibuya_code


def test_an_agencys_key_file_holds_no_secret_that_derives_codes(settings) -> None:
    """city-minato's key file: its own keys, the payload ring, the hub's public key. Nothing in
    it derives city-shibuya's code for anyone (the hub's subject-code secret is not there)."""
    hub_secret = keys.load(settings).hub_key
    text = keys.org_keys_path(settings, "city-minato").read_text()
    assert hub_secret not in text
    own = keys.load_org(settings, "city-minato")
    assert not hasattr(own, "hub_key")
    assert set(own.model_dump()) == {
        "org",
        "signing_key",
        "sealing_key",
        "former_sealing_keys",
        "codec",
        "hub_signing",
    }


# -- purpose: a child flow serves its caller's task --------------------------------------------


async def test_a_child_flow_of_another_purpose_is_refused_at_run_time(
    client, pool, settings, catalog, live_whitelist
) -> None:
    """A definer with database access registers a flow that validation refuses (school-entry
    notice calling vaccination relief, which fetches medical benefits): the hub refuses the
    child at its start, and the insurer is never asked."""
    from pathlib import Path

    from renkei.bpf import registry
    from renkei.bpf.loader import load_file

    await registry.register(
        pool, load_file(Path(__file__).parent / "definitions" / "laundering-probe.yaml")
    )
    asked: list[str] = []

    async def spy(req: LinkageRequest):
        asked.append(req.info)
        raise AssertionError("the insurer must not be asked")

    h = pick(settings, lambda h: h.municipality == "city-minato")
    subject = code(settings, "city-minato", h.members[0])
    spying = {"kyokai-kenpo": {"medical-benefit": spy}}
    async with workers(client, pool, settings, catalog, live_whitelist, providers=spying):
        handle = await sdk(client, settings).start(
            start("laundering-probe", "city-minato", subject)
        )
        with pytest.raises(WorkflowFailureError) as failure:
            await handle.result()
    message = str(failure.value.cause)
    assert "vaccination-relief-medical-check" in message and "school-entry-notice" in message
    assert asked == []
    found = await records.query(pool, workflow_id=f"{handle.id}.medical")
    assert [r for r in found if r.info == "medical-benefit"] == []


async def test_a_child_flows_records_name_the_flow_it_served(
    client, pool, settings, catalog, live_whitelist
) -> None:
    await register_fixture(pool, "one-stop-probe.yaml")
    # Moved from city-shibuya, which keeps last year's local tax.
    h = pick(settings, lambda h: h.municipality == "city-shibuya" and h.kind == "family")
    subject = code(settings, "city-minato", h.members[0])
    async with workers(client, pool, settings, catalog, live_whitelist):
        handle = await sdk(client, settings).start(start("one-stop-probe", "city-minato", subject))
        await handle.result()
    own = await records.query(pool, workflow_id=handle.id)
    assert own and all(r.parent_workflow_id is None for r in own)
    child = [  # asked by the parent's id with its children (not among a session's newest)
        r
        for r in await records.query(pool, workflow_id=handle.id, with_children=True)
        if r.workflow_id.startswith("child-allowance-check/") and r.parent_workflow_id == handle.id
    ]
    assert child and all(
        r.parent_bpf == "one-stop-probe" and r.purpose_task == "child-allowance" for r in child
    )
    # The citizen sees the procedure they applied for (its title) and that application, not
    # the part of it that made the linkage.
    from renkei.app.citizen import RecordFilter, records_for_subject

    [about] = {r.subject_code for r in child if r.keeper == records.HUB}
    seen = [
        r
        for r in await records_for_subject(
            pool, catalog, uuid.UUID(about), RecordFilter(limit=5000), hub=hub_public(settings)
        )
        if r.bpf == "child-allowance-check" and r.application == handle.id
    ]
    assert seen and all(
        r.procedure.id == "one-stop-probe" and r.procedure.en == "One-stop probe" for r in seen
    )


# -- records no one else can forge ---------------------------------------------------------------


async def _party(pool, settings, name: str) -> records.RecordSigner:
    """A party of its own (a probe org) with keys the hub registered."""
    own = keys.OrgKeys(
        org=name,
        signing_key=keys.new_keys().signing_key,
        codec=keys.load(settings).codec,
        hub_signing="",
    )
    await parties.register(pool, keys.load(settings).signer(), own.public(name))
    return records.RecordSigner(name, own.signer())


async def _signed_chain(pool, signer: records.RecordSigner, n: int = 5) -> str:
    for i in range(1, n + 1):
        await records.write(
            pool, access_record(signer.party, i, attempt_key=f"{uuid.uuid4()}"), signer=signer
        )
    return signer.party


async def _as_superuser(pool, sql: str, *args: object) -> None:
    """Change tables behind the application's back, as a database superuser could."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SET LOCAL ROLE NONE")
        await conn.execute("SET LOCAL session_replication_role = replica")  # triggers off
        await conn.execute(sql, *args)


async def _breaks(pool, settings, keeper: str, **kw) -> list[str]:
    found = await records.verify(pool, keys.load(settings).signer().public_key(), [keeper], **kw)
    return [b.problem for b in found.breaks]


async def test_a_record_appended_without_its_writers_key_is_caught(pool, settings) -> None:
    """Any process with the application's database role can insert rows with a correct hash
    chain; without the writer's key it cannot sign them."""
    writer = await _party(pool, settings, f"probe-{uuid.uuid4().hex[:8]}")
    keeper = await _signed_chain(pool, writer, 3)
    assert await _breaks(pool, settings, keeper) == []
    await records.write(pool, access_record(keeper, 4, attempt_key="forged"))  # no key
    assert await _breaks(pool, settings, keeper) == [
        "unsigned, after signed records (written without a key)"
    ]


async def test_a_record_signed_by_a_party_not_entitled_to_that_chain_is_caught(
    pool, settings
) -> None:
    """city-minato holds a real key, but may not write into another org's chain."""
    victim = await _party(pool, settings, f"probe-{uuid.uuid4().hex[:8]}")
    keeper = await _signed_chain(pool, victim, 2)
    intruder = await _party(pool, settings, f"probe-{uuid.uuid4().hex[:8]}")
    with pytest.raises(PermissionError):
        await records.write(pool, access_record(keeper, 3, attempt_key="x"), signer=intruder)
    # Past the client-side check, straight into the table: the chain still shows it.
    async with pool.acquire() as conn, conn.transaction():
        await records.append(
            conn,
            [access_record(keeper, 3, attempt_key="y")],
            records.RecordSigner(keeper, intruder.key),
        )
    problems = await _breaks(pool, settings, keeper)
    assert problems == [f"its signature is not {keeper}'s"]


async def test_a_chain_rewritten_with_its_own_writers_key_is_caught_by_the_witness(
    pool, settings
) -> None:
    """The org (its key, and superuser on the database) rewrites its own chain from record 2
    on and re-signs every record: the hub's witness signature over the old head still differs."""
    writer = await _party(pool, settings, f"probe-{uuid.uuid4().hex[:8]}")
    keeper = await _signed_chain(pool, writer, 4)
    await records.checkpoint(pool, keys.load(settings).signer())  # the hub witnesses
    rows = await records.query(pool, keeper=keeper)
    await _as_superuser(
        pool, "DELETE FROM records.access_records WHERE keeper = $1 AND chain_seq >= 2", keeper
    )
    # Re-append records 2..4 with other content, hashed and signed properly.
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SET LOCAL ROLE NONE")
        await records.append(
            conn,
            [
                r.model_copy(update={"outcome": "denied", "chain_seq": None, "record_hash": None})
                for r in rows[1:]
            ],
            writer,
        )
    problems = await _breaks(pool, settings, keeper)
    assert problems == ["differs from the checkpoint hub signed (rewritten)"]


async def test_a_chain_deleted_whole_is_caught(pool, settings) -> None:
    writer = await _party(pool, settings, f"probe-{uuid.uuid4().hex[:8]}")
    keeper = await _signed_chain(pool, writer, 3)
    exported = await records.heads(pool)
    await records.checkpoint(pool, keys.load(settings).signer())
    for table in ("access_records", "checkpoints"):
        await _as_superuser(pool, f"DELETE FROM records.{table} WHERE keeper = $1", keeper)
    [problem] = await _breaks(pool, settings, keeper)
    assert problem.startswith("the chain vanished")
    # Deleted from the keeper registry too: the heads kept elsewhere still show it.
    await _as_superuser(pool, "DELETE FROM records.keepers WHERE keeper = $1", keeper)
    assert await _breaks(pool, settings, keeper) == []
    mine = [h for h in exported if h.keeper == keeper]
    assert await _breaks(pool, settings, keeper, against=mine) == [
        "the chain ends at 0 but the exported head is at 3"
    ]


def test_a_witness_keeps_its_own_copy_that_a_database_superuser_cannot_reach(
    cli, base_settings, tmp_path
) -> None:
    """`records checkpoint --keep FILE`: the witness appends what it signed to a file of its own.
    A superuser deletes a chain's last record and every checkpoint over it: the database alone
    then looks intact; `verify --against` the witness's copy finds the chain cut short."""
    import asyncpg

    from renkei.app.cli import app

    async def setup() -> str:
        pool = await asyncpg.create_pool(base_settings.database_url, min_size=1, max_size=2)
        try:
            writer = await _party(pool, base_settings, f"probe-{uuid.uuid4().hex[:8]}")
            return await _signed_chain(pool, writer, 3)
        finally:
            await pool.close()

    async def cut(keeper: str) -> None:
        pool = await asyncpg.create_pool(base_settings.database_url, min_size=1, max_size=2)
        try:
            await _as_superuser(
                pool,
                "DELETE FROM records.access_records WHERE keeper = $1 AND chain_seq = 3",
                keeper,
            )
            await _as_superuser(pool, "DELETE FROM records.checkpoints WHERE keeper = $1", keeper)
        finally:
            await pool.close()

    keeper = asyncio.run(setup())
    copy = tmp_path / "witness" / "hub-checkpoints.jsonl"
    done = cli.invoke(app, ["records", "checkpoint", "--keep", str(copy)])
    assert done.exit_code == 0, done.output
    assert any(f'"keeper":"{keeper}"' in line for line in copy.read_text().splitlines())
    asyncio.run(cut(keeper))
    alone = cli.invoke(app, ["records", "verify", "--keeper", keeper])
    assert alone.exit_code == 0, alone.output  # nothing left in the database to contradict it
    kept = cli.invoke(app, ["records", "verify", "--keeper", keeper, "--against", str(copy)])
    assert kept.exit_code == 1
    assert "the chain ends at 2 but the exported head is at 3" in kept.output


async def test_a_requester_record_removed_behind_the_hubs_back_is_caught(pool, settings) -> None:
    """The hub writes the requester's record and its own in one transaction; the requester's
    chain losing its side shows against the hub's."""
    requester = await _party(pool, settings, f"probe-{uuid.uuid4().hex[:8]}")
    hub = records.RecordSigner(records.HUB, keys.load(settings).signer())
    attempt = f"wf-{uuid.uuid4()}/run/step"
    await _signed_chain(pool, requester, 2)
    await records.write(
        pool,
        access_record(requester.party, 9, attempt_key=attempt, requester=requester.party),
        access_record(records.HUB, 9, attempt_key=attempt, requester=requester.party),
        signer=hub,
    )
    assert await _breaks(pool, settings, requester.party) == []
    await _as_superuser(
        pool,
        "DELETE FROM records.access_records WHERE keeper = $1 AND attempt_key = $2",
        requester.party,
        attempt,
    )
    [problem] = await _breaks(pool, settings, requester.party)
    assert problem.startswith("lacks its record of the attempt in the hub's record")


@pytest.mark.parametrize("how", ["group", "deferred", "inline"])
async def test_an_org_cannot_set_down_the_record_the_hub_writes_for_it_as_its_own_asking(
    pool, settings, base_settings, how: str
) -> None:
    """An org's role may write records naming itself as provider only. It knows its own next
    attempt's key (workflow, run, step) and commits, under that key, a record of its own making
    saying it asked itself (and was refused). The hub's write of that linkage, to another
    provider, must refuse it and write nothing, by whichever way it writes; and were the org's
    record left there beside the hub's, `verify` names it."""
    from renkei.kernel.db import create_pool, party_role

    org = "city-minato"
    hub = records.RecordSigner(records.HUB, keys.load(settings).signer())
    minato = records.RecordSigner(org, keys.load_org(settings, org).signer())
    wid = f"wf-{uuid.uuid4()}"
    key = f"{wid}/run/step"
    agency = await create_pool(base_settings.database_url, max_size=1, role=party_role(org))
    try:
        own = access_record(
            org, 1, attempt_key=key, requester=org, provider=org, outcome="denied", workflow_id=wid
        )
        await records.write(agency, own, signer=minato, deferred=True)
    finally:
        await agency.close()
    asked = access_record(
        records.HUB, 1, attempt_key=key, requester=org, provider="jps", workflow_id=wid
    )
    theirs = asked.model_copy(update={"keeper": org})
    with pytest.raises(PermissionError, match="not the hub"):
        if how == "group":
            await records.GroupWriter(pool).write(theirs, asked, signer=hub)
        else:
            await records.write(pool, theirs, asked, signer=hub, deferred=how == "deferred")
    assert not await records.query(pool, keeper=records.HUB, workflow_id=asked.workflow_id)
    await records.Chainer(pool, minato).run_once()  # the org's own record, linked by the org
    if how != "group":
        return
    # The hub's own side written anyway, beside a record of the org's own making (as a hub
    # before this check did): the requester's chain holds a record of the attempt that is not
    # the hub's writing. Played on a probe org's chain: a break left in a shared org's chain
    # would show to every later test verifying it.
    probe = await _party(pool, settings, f"probe-{uuid.uuid4().hex[:8]}")
    wid = f"wf-{uuid.uuid4()}"
    key = f"{wid}/run/step"
    await records.write(
        pool,
        access_record(
            probe.party,
            1,
            attempt_key=key,
            requester=probe.party,
            provider=probe.party,
            outcome="denied",
            workflow_id=wid,
        ),
        signer=probe,
        deferred=True,
    )
    await records.write(
        pool,
        access_record(
            records.HUB, 1, attempt_key=key, requester=probe.party, provider="jps", workflow_id=wid
        ),
        signer=hub,
        deferred=True,
    )
    found = await records.verify(pool, keys.load(settings).signer(), [probe.party])
    assert any(
        b.keeper == probe.party and "not the hub's writing" in b.problem for b in found.breaks
    ), found.breaks


async def test_a_requester_chain_deleted_whole_with_its_traces_is_caught(pool, settings) -> None:
    """A superuser deletes a requester's whole chain, its checkpoints and its entry in the
    keeper registry: verifying every chain still finds it, from the hub's records naming it."""
    requester = await _party(pool, settings, f"probe-{uuid.uuid4().hex[:8]}")
    hub = records.RecordSigner(records.HUB, keys.load(settings).signer())
    attempt = f"wf-{uuid.uuid4()}/run/step"
    await records.write(
        pool,
        access_record(requester.party, 9, attempt_key=attempt, requester=requester.party),
        access_record(records.HUB, 9, attempt_key=attempt, requester=requester.party),
        signer=hub,
    )
    await records.checkpoint(pool, keys.load(settings).signer())
    for table in ("access_records", "checkpoints", "keepers"):
        await _as_superuser(pool, f"DELETE FROM records.{table} WHERE keeper = $1", requester.party)
    found = await records.verify(pool, keys.load(settings).signer().public_key())
    mine = [b.problem for b in found.breaks if b.keeper == requester.party]
    assert len(mine) == 1 and mine[0].startswith("lacks its record of the attempt"), mine


async def _refused_straight_from_temporal(
    client, pool, settings, workflow: str, arg, wid: str, expected: str
) -> None:
    """Start ``workflow`` past the SDK's own checks, as any ring holder could; it must end
    refused with ``expected`` in the reason, and no party may hold a record of it."""
    handle = await client.start_workflow(
        workflow,
        arg,
        id=wid,
        task_queue=control_queue(settings.task_queue_prefix, executor_of(wid)),
    )
    with pytest.raises(WorkflowFailureError) as failure:
        await handle.result()
    assert expected in str(failure.value.cause), failure.value.cause
    assert await records.query(pool, workflow_id=handle.id) == []


# -- who may say what: the citizen's word, the platform's triggers -------------------------------


async def _until_waiting(rc, wid: str) -> None:
    for _ in range(200):
        if await rc.waiting(wid):
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the flow never waited")


async def _waiting_portal_flow(rc, settings, bpf: str, person):
    """city-minato's portal flow ``bpf`` about ``person``, once it waits for an answer."""
    handle = await rc.start(
        start(bpf, "city-minato", code(settings, "city-minato", person), trigger="portal")
    )
    await _until_waiting(rc, handle.id)
    return handle


async def test_an_agency_cannot_answer_as_the_citizen(
    client, pool, settings, catalog, live_whitelist
) -> None:
    """Consent is the citizen's: an agency claiming it (HTTP API, SDK, a signature of its own)
    is refused and the flow keeps waiting; the citizen's own portal session is accepted."""
    import httpx

    from renkei.app.web import serving
    from renkei.app.web.api import issue_token
    from renkei.kernel.pseudonyms import PORTAL, derive_code

    await register_fixture(pool, "consent-probe.yaml")
    slow = settings.model_copy(update={"test_time_scale": 1e-4})
    rc = sdk(client, slow)
    h = pick(settings, lambda h: h.municipality == "city-shibuya")
    person = h.members[0]
    token = await issue_token(pool, "city-minato")
    agency = {"Authorization": f"Bearer {token}"}
    async with (
        workers(client, pool, slow, catalog, live_whitelist),
        serving(slow, pool, client) as base,
        httpx.AsyncClient(base_url=base, timeout=30) as http,
    ):
        handle = await _waiting_portal_flow(rc, settings, "consent-probe", person)
        said = {"step": "consent", "payload": {"agree": True}}
        api = await http.post(
            f"/api/flows/{handle.id}/respond", json={**said, "by": "citizen"}, headers=agency
        )
        assert api.status_code == 403 and "own portal session" in api.json()["detail"]
        with pytest.raises(ResponseRefused, match="citizen's own portal session"):
            await rc.respond(handle.id, "consent", {"agree": True}, by="citizen")
        forged = attest.citizen_response(
            keys.load_org(settings, "city-minato").signer(),
            handle.id,
            handle.result_run_id or "",
            "consent",
            {"agree": True},
            code(settings, "city-minato", person),
        )
        with pytest.raises(ResponseRefused, match="citizen's own portal session"):
            await rc.respond(
                handle.id, "consent", {"agree": True}, by="citizen", attestation=forged
            )
        # Someone else's portal code finds no such flow; the citizen's own is heard.
        other = pick(settings, lambda o: o.members[0].subject_id != person.subject_id).members[0]
        for who, expected in ((other, 404), (person, 200)):
            citizen = {
                "Authorization": f"Bearer {derive_code(keys.load(settings).hub_key, PORTAL, who.subject_id)}"
            }
            answered = await http.post(
                f"/api/citizen/flows/{handle.id}/respond", json=said, headers=citizen
            )
            assert answered.status_code == expected, answered.text
        assert (await handle.result()).outcome == "completed"


async def test_an_agency_cannot_claim_a_life_event_or_notification_start(
    client, pool, settings, catalog, live_whitelist
) -> None:
    """Only the platform's scan and notification path start such flows: an agency's claim is
    refused at its API and, made straight to Temporal, by the hub before any linkage."""
    import httpx

    from renkei.app.web import serving
    from renkei.app.web.api import issue_token

    h = pick(settings, lambda h: h.municipality == "city-minato")
    subject = code(settings, "city-minato", h.members[0])
    token = await issue_token(pool, "city-minato")
    claim = start(
        "allowance-stop-on-death",
        "city-minato",
        subject,
        trigger="notification",
        inputs={"occurred_on": "2026-11-01"},
    )
    async with (
        workers(client, pool, settings, catalog, live_whitelist),
        serving(settings, pool, client) as base,
        httpx.AsyncClient(base_url=base, timeout=30) as http,
    ):
        api = await http.post(
            "/api/flows",
            json=claim.model_dump(mode="json", exclude_none=True),
            headers={"Authorization": f"Bearer {token}"},
        )
        assert api.status_code == 403 and "only from the platform" in api.json()["detail"]
        handle = await sdk(client, settings).start(claim)
        with pytest.raises(WorkflowFailureError) as failure:
            await handle.result()
    assert "comes only from the platform's notification path" in str(failure.value.cause)
    assert await records.query(pool, workflow_id=handle.id) == []


async def test_a_scan_the_platform_did_not_schedule_asks_no_register(
    client, pool, settings, catalog, live_whitelist
) -> None:
    from renkei.contracts.messages import ScanRequest
    from renkei.contracts.names import LIFE_EVENT_SCAN

    async with workers(client, pool, settings, catalog, live_whitelist):
        await _refused_straight_from_temporal(
            client,
            pool,
            settings,
            LIFE_EVENT_SCAN,
            ScanRequest(
                bpf="coming-of-age-pension-notice", executor="city-minato", age=20, on="birthday"
            ),
            scan_workflow_id(
                "coming-of-age-pension-notice", "city-minato", f"rogue-{uuid.uuid4().hex[:8]}"
            ),
            "only from the platform's schedules",
        )


# -- disclosure holds: lawful, approved by a second party, time-limited, seen as withheld ---------


async def test_a_hold_without_a_second_partys_approval_is_refused(
    client, pool, settings, catalog, live_whitelist
) -> None:
    """An executor hiding its look-ups from the citizen: for ever, for a reason of its own, or
    without anyone's approval. Each is refused before the flow's first linkage."""
    import httpx

    from renkei.app.web import serving
    from renkei.app.web.api import issue_token
    from renkei.contracts.messages import DisclosureHold
    from renkei.kernel import holds

    soon = dt.datetime.now(dt.UTC) + dt.timedelta(days=30)
    case = f"case-{uuid.uuid4().hex[:10]}"
    h = pick(settings, lambda h: h.municipality == "city-minato")
    subject = code(settings, "city-minato", h.members[0])
    for reason, until, expected in (
        ("investigation", dt.datetime(9999, 12, 31, tzinfo=dt.UTC), "within 365 days"),
        ("curiosity", soon, "no hold reason"),
    ):
        with pytest.raises(holds.HoldNotApproved, match=expected):
            await holds.request(
                pool,
                "city-minato",
                "register-probe",
                case,
                reason,
                until,
                "city-minato",
                subject=subject,
            )
    pending = await holds.request(
        pool,
        "city-minato",
        "register-probe",
        case,
        "investigation",
        soon,
        "city-minato",
        subject=subject,
    )
    naive = {"bpf": "register-probe", "case_ref": case, "reason": "investigation"}
    naive |= {"subject": subject, "until": soon.replace(tzinfo=None).isoformat()}
    with pytest.raises(holds.HoldNotApproved):  # nobody approves their own request
        await holds.approve(pool, pending.id, "city-minato", hub=hub_key())

    token = await issue_token(pool, "city-minato")
    unapproved = DisclosureHold(until=soon, reason="investigation", approval=pending.id)
    bare = DisclosureHold(until=soon, reason="investigation")
    await register_fixture(pool, "register-probe.yaml")
    async with (
        workers(client, pool, settings, catalog, live_whitelist),
        serving(settings, pool, client) as base,
        httpx.AsyncClient(base_url=base, timeout=30) as http,
    ):
        asked = await http.post(
            "/api/holds", json=naive, headers={"Authorization": f"Bearer {token}"}
        )
        assert asked.status_code == 422, asked.text  # a moment without its time zone
        for hold in (bare, unapproved):
            flow = start(
                "register-probe",
                "city-minato",
                subject,
                inputs={"register": "city-minato"},
                hold=hold,
            )
            api = await http.post(
                "/api/flows",
                json=flow.model_dump(mode="json", exclude_none=True),
                headers={"Authorization": f"Bearer {token}"},
            )
            assert api.status_code == 403, api.text
            handle = await sdk(client, settings).start(flow)  # straight to Temporal
            with pytest.raises(WorkflowFailureError) as failure:
                await handle.result()
            assert "HoldNotApproved" in repr(failure.value.cause) or "approv" in str(
                failure.value.cause
            )
            assert await records.query(pool, workflow_id=handle.id) == []
        # Approved by a platform operator: that one case runs, and its records carry the hold;
        # the approval covers no other case.
        await holds.approve(pool, pending.id, "operator-alice", hub=hub_key())
        other = await sdk(client, settings).start(
            start(
                "register-probe",
                "city-minato",
                subject,
                inputs={"register": "city-minato"},
                hold=unapproved,
            )
        )
        with pytest.raises(WorkflowFailureError) as failure:
            await other.result()
        assert "covers another case" in str(failure.value.cause)
        handle = await sdk(client, settings).start(
            start(
                "register-probe",
                "city-minato",
                subject,
                inputs={"register": "city-minato"},
                hold=unapproved,
            ).model_copy(update={"case_ref": case})
        )
        await handle.result()
    kept = await records.query(pool, workflow_id=handle.id)
    assert kept and all(r.hold_reason == "investigation" for r in kept)


async def test_a_hold_row_added_approved_dated_back_or_beyond_its_reason_is_not_taken(
    pool: asyncpg.Pool,
) -> None:
    """The request and its approval are rows: whoever adds rows (the application's role) could
    add one already approved, dated back, or asking beyond its reason's longest duration, or
    approve one itself. The database adds a request unapproved and dates it itself; the hub
    takes a hold only within its reason's longest duration from that date, and only with the
    hub's signature on its approval."""
    from renkei.kernel import holds

    case = f"case-{uuid.uuid4().hex[:10]}"
    wid = f"register-probe/city-minato/{case}"
    long_ago = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
    for_ever = dt.datetime(9999, 12, 31, tzinfo=dt.UTC)

    async def add(until: dt.datetime, **approved: object) -> uuid.UUID:
        hold = uuid.uuid4()
        columns = ", ".join(
            [
                "id",
                "executor",
                "bpf",
                "case_ref",
                "reason",
                "until",
                "requested_by",
                "requested_at",
                "subject",
                *approved,
            ]
        )
        values = ", ".join(f"${n}" for n in range(1, 10 + len(approved)))
        await pool.execute(
            f"INSERT INTO hub.holds ({columns}) VALUES ({values})",
            hold, "city-minato", "register-probe", case, "investigation", until,
            "city-minato", long_ago, "A" * 20, *approved.values(),
        )  # fmt: skip
        return hold

    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="added unapproved"):
        await add(for_ever, approved_by="operator-mallory", approved_at=long_ago)
    beyond = await add(for_ever)
    assert await pool.fetchval(
        "SELECT requested_at > now() - interval '1 minute' FROM hub.holds WHERE id = $1", beyond
    )  # dated by the database, not the row
    await holds.approve(
        pool, beyond, "operator-mallory", hub=hub_key()
    )  # the role can approve: a second party
    with pytest.raises(holds.HoldNotApproved, match="more than its reason allows"):
        await holds.check(
            pool, "city-minato", beyond, "investigation", for_ever, wid, hub=hub_key().public_key()
        )
    soon = dt.datetime.now(dt.UTC) + dt.timedelta(days=30)
    within = await add(soon)
    await holds.approve(pool, within, "operator-mallory", hub=hub_key())
    assert (
        await holds.check(
            pool, "city-minato", within, "investigation", soon, wid, hub=hub_key().public_key()
        )
    ).id == within
    # Approved by the role itself, the columns set as an operator's approval sets them (it is
    # the role operators approve through), dated back, or with another approval's signature:
    # not the platform's approval; nor does the hub sign it as one made before signing.
    forged = await add(soon)
    signed = await pool.fetchval("SELECT approval_signature FROM hub.holds WHERE id = $1", within)
    await pool.execute(
        "UPDATE hub.holds SET approved_by = 'operator-mallory', approved_at = '2000-01-01',"
        " approval_signature = $2 WHERE id = $1",
        forged,
        signed,
    )
    assert await pool.fetchval(
        "SELECT approved_at > now() - interval '1 minute' FROM hub.holds WHERE id = $1", forged
    )  # dated by the database
    with pytest.raises(holds.HoldNotApproved, match="not the platform's"):
        await holds.check(
            pool, "city-minato", forged, "investigation", soon, wid, hub=hub_key().public_key()
        )
    unsigned = await add(soon)
    await pool.execute(
        "UPDATE hub.holds SET approved_by = 'operator-mallory', approved_at = now() WHERE id = $1",
        unsigned,
    )
    assert await holds.sign_before(pool, hub_key()) == 0
    with pytest.raises(holds.HoldNotApproved, match="not the platform's"):
        await holds.check(
            pool, "city-minato", unsigned, "investigation", soon, wid, hub=hub_key().public_key()
        )


# -- an agency's database role -----------------------------------------------------------------


async def test_an_agencys_database_role_reads_nothing_of_the_hubs_and_writes_only_its_own_chain(
    base_settings, pool, settings
) -> None:
    import asyncpg

    from renkei.kernel.db import create_pool, party_role

    own = keys.load_org(settings, "city-minato")
    signer = records.RecordSigner("city-minato", own.signer())
    hub = records.RecordSigner(records.HUB, keys.load(settings).signer())
    # A hub record of a requester of its own: one naming a shared org with no record of that
    # org beside it would show as that org's break to every later test verifying its chain.
    await records.write(
        pool,
        access_record(
            records.HUB, 1, attempt_key=f"{uuid.uuid4()}", requester=f"probe-{uuid.uuid4().hex[:8]}"
        ),
        signer=hub,
    )
    agency = await create_pool(
        base_settings.database_url, max_size=2, role=party_role("city-minato")
    )
    try:
        assert await agency.fetchval("SELECT current_user") == "renkei_org_city_minato"
        for table in ("hub.subject_codes", "hub.individuals", "hub.holds", "agency_jps.pensions"):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await agency.fetch(f"SELECT * FROM {table} LIMIT 1")
        # The hub's chain (everyone's linkages) is out of sight, though its head can be witnessed.
        assert (
            await agency.fetchval(
                "SELECT count(*) FROM records.access_records WHERE keeper = 'hub'"
            )
            == 0
        )
        assert (
            await agency.fetchval("SELECT count(*) FROM records.chain_heads() WHERE keeper = 'hub'")
            == 1
        )
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="row-level security"):
            await records.write(
                agency,
                access_record(records.HUB, 1, attempt_key=f"forged/{uuid.uuid4()}"),
                signer=records.RecordSigner(records.HUB, own.signer()),
            )
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="row-level security"):
            await records.write(
                agency, access_record("city-shibuya", 1, attempt_key=f"x/{uuid.uuid4()}")
            )
        [mine] = await records.write(
            agency,
            access_record("city-minato", 1, attempt_key=f"own/{uuid.uuid4()}"),
            signer=signer,
        )
        assert mine.signer == "city-minato"
        # It witnesses the hub's chain and its own, as its own party only.
        made = await records.checkpoint(agency, signer)
        assert {c.keeper for c in made} <= {records.HUB, "city-minato"} and made
    finally:
        await agency.close()


async def test_records_signed_with_a_revoked_key_after_its_revocation_are_reported(
    pool, settings
) -> None:
    """An org's key is lost: the platform revokes it. What was signed before stands; what the
    thief signs after the revocation does not."""
    writer = await _party(pool, settings, f"probe-{uuid.uuid4().hex[:8]}")
    keeper = await _signed_chain(pool, writer, 2)
    assert await parties.revoke(pool, keys.load(settings).signer(), keeper, reason="key lost")
    assert await _breaks(pool, settings, keeper) == []
    await records.write(
        pool, access_record(keeper, 3, attempt_key=f"{uuid.uuid4()}"), signer=writer
    )
    assert await _breaks(pool, settings, keeper) == [
        f"signed with {keeper}'s key after it was revoked"
    ]


async def test_a_revoked_keys_holder_cannot_date_its_records_before_the_revocation(
    pool, settings
) -> None:
    """The thief of a revoked key appends a record with the application's role, dated an hour
    before the revocation (the time is the writer's own field, under its signature, chained
    and hashed correctly): the database stamps when it stored the row, and verify goes by that."""
    from renkei.kernel.records._chain import _COLUMNS, _record_message

    writer = await _party(pool, settings, f"probe-{uuid.uuid4().hex[:8]}")
    keeper = await _signed_chain(pool, writer, 2)
    assert await parties.revoke(pool, keys.load(settings).signer(), keeper, reason="key lost")
    head = await pool.fetchrow(
        "SELECT chain_seq, record_hash FROM records.access_records WHERE keeper = $1"
        " ORDER BY chain_seq DESC LIMIT 1",
        keeper,
    )
    forged = access_record(
        keeper,
        3,
        attempt_key=f"{uuid.uuid4()}",
        chain_seq=head["chain_seq"] + 1,
        prev_hash=head["record_hash"],
        recorded_at=dt.datetime.now(dt.UTC) - dt.timedelta(hours=1),
    )
    digest = records.record_hash(forged)
    forged = forged.model_copy(
        update={
            "record_hash": digest,
            "signer": writer.party,
            "signature": base64.b64encode(
                writer.key.sign(_record_message(keeper, forged.chain_seq or 0, digest))
            ).decode(),
        }
    )
    await pool.execute(
        f"INSERT INTO records.access_records ({', '.join(_COLUMNS)})"
        f" VALUES ({', '.join(f'${i}' for i in range(1, len(_COLUMNS) + 1))})",
        *(getattr(forged, c) for c in _COLUMNS),
    )
    [problem] = await _breaks(pool, settings, keeper)
    assert "by its writer, but stored" in problem


async def test_a_revocation_can_be_neither_undone_nor_moved_nor_forged(pool, settings) -> None:
    """With the application's database role: clearing or moving a key's revocation, deleting
    the hub's statement, or deleting the key's entry is refused; a revocation statement the hub
    did not sign counts for nothing (it cannot take a party's signatures away either)."""
    writer = await _party(pool, settings, f"probe-{uuid.uuid4().hex[:8]}")
    keeper = await _signed_chain(pool, writer, 1)
    assert await parties.revoke(pool, keys.load(settings).signer(), keeper, reason="key lost")
    for sql in (
        "UPDATE trust.parties SET revoked_at = NULL WHERE party = $1",
        "UPDATE trust.parties SET revoked_at = revoked_at + interval '1 year' WHERE party = $1",
        "DELETE FROM trust.parties WHERE party = $1",
        "DELETE FROM trust.revocations WHERE party = $1",
        "UPDATE trust.revocations SET revoked_at = revoked_at + interval '1 year' WHERE party = $1",
    ):
        with pytest.raises(asyncpg.PostgresError):
            await pool.execute(sql, keeper)
    # A victim with a current key, and a statement revoking it a day ago in nobody's name.
    victim = await _party(pool, settings, f"probe-{uuid.uuid4().hex[:8]}")
    other = await _signed_chain(pool, victim, 2)
    await pool.execute(
        "INSERT INTO trust.revocations (party, signing_id, revoked_at, reason, hub_signature)"
        " SELECT party, signing_id, now() - interval '1 day', 'forged', $2 FROM trust.parties"
        " WHERE party = $1",
        other,
        base64.b64encode(b"\0" * 64).decode(),
    )
    assert await _breaks(pool, settings, other) == []


async def test_a_start_cannot_borrow_a_callers_purpose_hold_or_trigger(
    client, pool, settings, catalog, live_whitelist
) -> None:
    """Straight to Temporal: a counter start of a flow only life events start; a top-level start
    claiming a caller (to skip the hold's approval); each is refused before any linkage."""
    from renkei.contracts.messages import DisclosureHold, ParentFlow

    h = pick(settings, lambda h: h.municipality == "city-minato")
    subject = code(settings, "city-minato", h.members[0])
    forever = DisclosureHold(until=dt.datetime(9999, 12, 31, tzinfo=dt.UTC), reason="anything")
    claims = [
        (
            start("coming-of-age-pension-notice", "city-minato", subject),
            "cannot be started by trigger counter",
        ),
        (
            start(
                "register-probe",
                "city-minato",
                subject,
                inputs={"register": "city-minato"},
                hold=forever,
                parent=ParentFlow(workflow_id="x", bpf="x", task="school-entry-notice"),
            ),
            "no other flow started claims a caller",
        ),
    ]
    await register_fixture(pool, "register-probe.yaml")
    async with workers(client, pool, settings, catalog, live_whitelist):
        for flow, expected in claims:
            await _refused_straight_from_temporal(
                client,
                pool,
                settings,
                flow.bpf,
                flow,
                f"{flow.bpf}/{flow.executor}/{flow.case_ref}",
                expected,
            )


@workflow.defn(name="attacker.adopt", sandboxed=False)
class Adopt:
    """A rogue's workflow: starts a flow as its child, the child's start claiming another case
    as its caller (to carry that case's approved hold)."""

    @workflow.run
    async def run(self, bpf: str, wid: str, queue: str, flow: dict[str, Any]) -> None:
        await workflow.execute_child_workflow(bpf, flow, id=wid, task_queue=queue)


async def test_a_child_cannot_claim_a_caller_that_did_not_start_it(
    client, pool, settings, catalog, live_whitelist
) -> None:
    """A child runs under its caller's purpose, trigger and hold. A flow that another
    workflow really started, but that claims as its caller a case with an approved hold (to
    keep a different person's records from their view under it), is refused: the caller must be
    the flow Temporal says started it."""
    from renkei.contracts.messages import ParentFlow

    h = pick(settings, lambda h: h.municipality == "city-minato" and len(h.members) > 1)
    subject = code(settings, "city-minato", h.members[1])
    held = f"case-{uuid.uuid4().hex[:10]}"  # the case the operator approved a hold for
    hold = await approved_hold(pool, "city-minato", "register-probe", held, subject)
    flow = start(
        "register-probe",
        "city-minato",
        subject,
        inputs={"register": "city-minato"},
        hold=hold,
        parent=ParentFlow(
            workflow_id=f"register-probe/city-minato/{held}",
            bpf="register-probe",
            task="school-entry-notice",
        ),
    )
    wid = f"register-probe/city-minato/{flow.case_ref}"
    queue = f"rogue-{uuid.uuid4().hex[:8]}"
    await register_fixture(pool, "register-probe.yaml")
    async with (
        workers(client, pool, settings, catalog, live_whitelist),
        Worker(client, task_queue=queue, workflows=[Adopt]),
    ):
        await client.start_workflow(
            Adopt.run,
            args=[
                "register-probe",
                wid,
                control_queue(settings.task_queue_prefix, "city-minato"),
                flow.model_dump(mode="json"),
            ],
            id=f"rogue-{uuid.uuid4().hex[:8]}",
            task_queue=queue,
        )
        child = client.get_workflow_handle(wid)
        for _ in range(200):  # until the rogue has started it
            with contextlib.suppress(RPCError):
                await child.describe()
                break
            await asyncio.sleep(0.05)
        with pytest.raises(WorkflowFailureError) as failure:
            await child.result()
    assert "is not the one that started it" in str(failure.value.cause), failure.value.cause
    assert await records.query(pool, workflow_id=wid) == []


@workflow.defn(name="held-call-probe")
class Smuggle:
    """A rogue's code running a held case itself (the executor's own worker, hostile): it has
    the hub resolve the case about someone else, then about its person, and calls the flow the
    case calls about both under the case's hold, with the case's own ticket."""

    @workflow.run
    async def run(
        self, hub: str, resolves: list[dict[str, Any]], queue: str, calls: list[dict[str, Any]]
    ) -> list[str]:
        out = []
        ticket = None
        for resolve in resolves:
            try:
                resolved = await workflow.execute_activity(
                    "hub.resolve",
                    resolve,
                    result_type=dict,
                    task_queue=hub,
                    start_to_close_timeout=timedelta(seconds=30),
                    retry_policy=RetryPolicy(maximum_attempts=1),
                )
                ticket = resolved["ticket"]
                out.append("resolved")
            except ActivityError as err:
                out.append(str(err.cause))
        for call in calls:
            call = {**call, "caller_ticket": ticket}
            wid = f"{call['bpf']}/{call['executor']}/{call['case_ref']}"
            try:
                await workflow.execute_child_workflow(call["bpf"], call, id=wid, task_queue=queue)
                out.append("completed")
            except ChildWorkflowError as err:
                out.append(str(err.cause))
        return out


async def test_a_held_case_is_held_only_about_the_person_its_request_names(
    client, pool, settings, catalog, live_whitelist
) -> None:
    """A case's approved hold keeps its records from the citizen's view for a while. The
    executor's worker runs the case's code and writes its start, its calls' starts and its
    linkage requests: it could carry the hold into records about anyone. The request names its
    person, the operator approves it for them, and the hub takes the hold for them only: the
    case started about someone else, or a call about someone else carrying the hold, is
    refused (a linkage about someone else in a held case is recorded without it:
    test_a_linkage_about_someone_else_in_a_held_case_is_not_held)."""
    from renkei.contracts.messages import ParentFlow

    h = pick_aside(settings, lambda h: h.municipality == "city-minato" and len(h.members) > 1)
    own, other = (code(settings, "city-minato", m) for m in h.members[:2])
    held = f"case-{uuid.uuid4().hex[:10]}"
    hold = await approved_hold(pool, "city-minato", "held-call-probe", held, own)
    case = f"held-call-probe/city-minato/{held}"
    parent = ParentFlow(workflow_id=case, bpf="held-call-probe", task="school-entry-notice")

    def call(subject: str) -> dict[str, Any]:
        return start(
            "register-probe",
            "city-minato",
            subject,
            inputs={"register": "city-minato"},
            hold=hold,
            parent=parent,
        ).model_dump(mode="json")

    def resolve(subject: str) -> dict[str, Any]:
        return {
            "bpf": "held-call-probe",
            "version": None,
            "executor": "city-minato",
            "subject": subject,
            "inputs": {},
            "trigger": "counter",
            "hold": hold.model_dump(mode="json"),
        }

    calls = [call(other), call(own)]
    queue = f"rogue-{uuid.uuid4().hex[:8]}"
    await register_fixture(pool, "register-probe.yaml")
    await register_fixture(pool, "held-call-probe.yaml")
    async with (
        workers(client, pool, settings, catalog, live_whitelist),
        Worker(client, task_queue=queue, workflows=[Smuggle]),
    ):
        said = await client.execute_workflow(
            Smuggle.run,
            args=[
                hub_queue(settings.task_queue_prefix),
                [resolve(other), resolve(own)],
                control_queue(settings.task_queue_prefix, "city-minato"),
                calls,
            ],
            id=case,
            task_queue=queue,
        )
    assert "is about another person" in said[0], said
    assert said[1] == "resolved", said
    # a call is about its caller's person (the caller's ticket names them), hold or no hold
    assert "about its person" in said[2], said
    assert said[3] == "completed", said
    smuggled, honest = (f"register-probe/city-minato/{c['case_ref']}" for c in calls)
    assert await records.query(pool, workflow_id=smuggled) == []
    kept = await records.query(pool, workflow_id=honest)
    assert kept and all(r.hold_reason == "investigation" for r in kept)
    # The request's person is kept as made: not even the application's role changes it.
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="kept as made"):
        await pool.execute("UPDATE hub.holds SET subject = $2 WHERE id = $1", hold.approval, other)
    with pytest.raises(asyncpg.NotNullViolationError, match="names the person"):
        await pool.execute(
            "INSERT INTO hub.holds (id, executor, bpf, case_ref, reason, until, requested_by)"
            " VALUES ($1, 'city-minato', 'register-probe', 'case-x', 'investigation', $2,"
            " 'city-minato')",
            uuid.uuid4(),
            hold.until,
        )


async def test_a_linkage_about_someone_else_in_a_held_case_is_not_held(
    env, pool: asyncpg.Pool, settings: Settings
) -> None:
    """The child-rearing allowance's income check asks for the applicant's spouse's income too
    (``about``). Held for the applicant, its records about the applicant are withheld from
    them; those about the spouse are not withheld from the spouse."""

    couple = pick_aside(settings, lambda h: h.kind == "family" and h.municipality == "city-minato")
    applicant, spouse = couple.members[0], couple.members[1]
    flow = child_rearing(settings, applicant, spouse)
    hold = await approved_hold(pool, "pref-tokyo", flow.bpf, flow.case_ref, flow.subject)
    handle = await env.start(flow.model_copy(update={"hold": hold}))
    await handle.result()
    kept = await records.query(pool, workflow_id=handle.id, keeper=records.HUB)
    about = {str(applicant.subject_id): "applicant", str(spouse.subject_id): "spouse"}
    held = {(about[r.subject_code], r.hold_reason) for r in kept}
    assert held == {("applicant", "investigation"), ("spouse", None)}, held


async def test_a_forged_continuation_is_refused(
    client, pool, settings, catalog, live_whitelist
) -> None:
    """A ring holder starts a flow as if it continued from an earlier run: its own definition,
    steps already 'passed', answers already 'given'. The hub did not sign that state."""
    from renkei.bpf.loader import load_file
    from renkei.contracts.messages import Pin, ResolvedRun, Resume, SignedResume
    from tests.paths import SAMPLES_DIR

    d = load_file(SAMPLES_DIR / "child-allowance-portal.yaml").definition
    h = pick(settings, lambda h: h.municipality == "city-minato")
    forged = start(
        d.bpf, "city-minato", code(settings, "city-minato", h.members[0]), trigger="portal"
    ).model_copy(
        update={
            "resume": Resume(
                run=ResolvedRun(
                    pin=Pin(bpf=d.bpf, version=d.version, content_hash="sha256:forged"),
                    definition=d,
                    info_schemas={},
                    inputs={},
                    task_queue_prefix=settings.task_queue_prefix,
                    executor_roles=["municipal-mayor"],
                ),
                next_step=len(d.steps) - 1,  # the consent "already given"
                outputs={"consent": {"agree": True}},
                linkages=[],
            )
        }
    )
    # the same state as the exact text the hub signs, signed by the ring holder itself
    assert forged.resume is not None
    text = forged.resume.model_dump_json(by_alias=True)
    as_text = forged.model_copy(
        update={
            "case_ref": f"{forged.case_ref}-t",
            "resume": None,
            "signed_resume": SignedResume(
                text=text,
                signature=attest.resume_state(
                    keys.load_org(settings, "city-minato").signer(),
                    f"{d.bpf}/city-minato/{forged.case_ref}-t",
                    text,
                    text=True,
                ),
            ),
        }
    )
    async with workers(client, pool, settings, catalog, live_whitelist):
        for each in (forged, as_text):
            await _refused_straight_from_temporal(
                client,
                pool,
                settings,
                d.bpf,
                each,
                f"{d.bpf}/city-minato/{each.case_ref}",
                "not the hub's (a forged resume)",
            )


async def test_a_party_cannot_frame_a_chain_it_does_not_witness(
    base_settings, pool, settings
) -> None:
    """city-minato signs a 'checkpoint' of another org's chain with a made-up head: its word
    about a chain it does not witness counts for nothing, and its database role cannot even
    store it."""
    import base64

    import asyncpg

    from renkei.kernel.db import create_pool, party_role

    victim = await _party(pool, settings, f"probe-{uuid.uuid4().hex[:8]}")
    keeper = await _signed_chain(pool, victim, 2)
    framer = keys.load_org(settings, "city-minato").signer()
    at = dt.datetime.now(dt.UTC)
    bogus = "f" * 64
    row = (
        keeper,
        99,
        bogus,
        at,
        records.key_id(framer),
        base64.b64encode(
            framer.sign(
                f"renkei/checkpoint/v1|{keeper}|99|{bogus}|{at.isoformat(timespec='microseconds')}".encode()
            )
        ).decode(),
        "city-minato",
    )
    insert = (
        "INSERT INTO records.checkpoints"
        " (keeper, chain_seq, record_hash, signed_at, key_id, signature, signer)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7)"
    )
    agency = await create_pool(
        base_settings.database_url, max_size=1, role=party_role("city-minato")
    )
    try:  # not its chain to witness, and no such record either
        with pytest.raises(asyncpg.PostgresError, match=r"row-level security|names a record"):
            await agency.execute(insert, *row)
    finally:
        await agency.close()
    # Past the role, as the application's role could: a checkpoint names a record that is there.
    with pytest.raises(asyncpg.PostgresError, match="names a record"):
        await pool.execute(insert, *row)
    assert await _breaks(pool, settings, keeper) == []


async def _a_workflow_task_ran_after_the_signal(client: Client, wid: str) -> None:
    """Until the flow's history shows a workflow task completed after its last signal: the flow
    has seen the signal (a fixed pause would only guess it had)."""
    async with asyncio.timeout(30):
        while True:
            events = (await client.get_workflow_handle(wid).fetch_history()).events
            signalled = [
                i
                for i, e in enumerate(events)
                if e.HasField("workflow_execution_signaled_event_attributes")
            ]
            if signalled and any(
                e.HasField("workflow_task_completed_event_attributes")
                for e in events[signalled[-1] :]
            ):
                return
            await asyncio.sleep(0.05)


async def test_an_unencrypted_signal_is_dropped_and_the_flow_goes_on(
    temporal_env, client, pool, settings, catalog, live_whitelist
) -> None:
    """A process with no keys signals a waiting flow in clear: the flow neither reads it nor
    freezes (its workflow task does not fail), and answers through renkei still reach it."""
    from renkei.contracts.messages import Response

    await register_fixture(pool, "consent-probe.yaml")
    slow = settings.model_copy(update={"test_time_scale": 1e-4})
    rc = sdk(client, slow)
    h = pick(settings, lambda h: h.municipality == "city-shibuya")
    target = temporal_env.client.service_client.config.target_host
    plain = await Client.connect(
        target, namespace=client.namespace, data_converter=pydantic_data_converter
    )
    async with workers(client, pool, slow, catalog, live_whitelist):
        handle = await _waiting_portal_flow(rc, settings, "consent-probe", h.members[0])
        await plain.get_workflow_handle(handle.id).signal(
            "renkei.respond", Response(step="consent", payload={"agree": True})
        )
        await _a_workflow_task_ran_after_the_signal(client, handle.id)
        assert await rc.waiting(handle.id)  # still waiting: the clear signal was not taken
        await rc.respond(handle.id, "consent", {"agree": True})
        assert (await handle.result()).outcome == "completed"


# -- payloads sealed between two parties: who can read a flow in Temporal's history ------------


async def _payloads(client, wid: str) -> list:
    """Every payload of a run's history, as Temporal stores it."""
    from google.protobuf.message import Message
    from temporalio.api.common.v1 import Payload

    found: list[Payload] = []

    def walk(node: object) -> None:
        if isinstance(node, Payload):
            found.append(node)
        elif isinstance(node, Message):
            for _, value in node.ListFields():
                walk(value)
        elif hasattr(node, "values") and callable(node.values):  # a map field
            for v in node.values():
                walk(v)
        elif not isinstance(node, str | bytes) and hasattr(node, "__len__"):  # repeated
            for i in range(len(node)):  # type: ignore[arg-type]
                walk(node[i])  # type: ignore[index]

    async for event in client.get_workflow_handle(wid).fetch_history_events():
        walk(event)
    return found


async def test_each_party_reads_only_what_was_exchanged_with_it(
    client, pool, settings, catalog, live_whitelist
) -> None:
    """A finished flow of city-minato (city-shibuya's local tax, the JPS's pensions): in
    Temporal's history, city-shibuya reads only what it exchanged with city-minato, the JPS
    only its own exchange, and the hub only what city-minato asked it; an uninvolved agency
    (kyokai-kenpo) and the platform's operator read no answer at all."""
    from renkei.kernel.channels import channel_parties
    from renkei.kernel.codec import UNENCRYPTED
    from tests.helpers import allowance_check
    from workers.plugin import channel_codec

    async with workers(client, pool, settings, catalog, live_whitelist):
        handle = await sdk(client, settings).start(allowance_check(settings))
        assert (await handle.result()).outcome == "completed"
    stored = [
        p
        for p in await _payloads(client, handle.id)
        if p.data and "type" not in p.metadata  # search attributes are indexed, in clear
    ]
    direct = settings.linkage_transport == "direct"
    clear = [p for p in stored if p.metadata["encoding"] != b"binary/renkei-channel"]
    # only patch markers' ids, and (the direct channel, the hub's endpoint) the SDK's own account
    # of each local activity: its step's id, its type, when, which attempt
    local = {DIRECT_LINKAGE} if direct else set()
    if settings.hub_transport == "direct":
        local.add(DIRECT_RESOLVE)
    assert all(
        p.data.startswith(b'{"id"') or _local_activity_marker(p.data, local) for p in clear
    ), clear
    readable: dict[str, set[frozenset[str]]] = {}
    for party in ("city-minato", "city-shibuya", "jps", "hub", "kyokai-kenpo"):
        codec = channel_codec(settings, [party], legacy_ring=False)
        opened = await codec.decode(stored)
        readable[party] = {
            frozenset(channel_parties(p) or ())
            for p in opened
            if p.metadata.get("encoding") != UNENCRYPTED
        }
    # Over the direct channel the providers' exchanges never pass through Temporal: the answer
    # is in the history as the executor's own local activity's result, for the executor alone.
    providers = set() if direct else {"city-shibuya", "jps"}
    assert readable["city-minato"] == {
        frozenset({"city-minato"}),
        frozenset({"city-minato", "hub"}),
        *(frozenset({"city-minato", p}) for p in providers),
    }
    for provider in ("city-shibuya", "jps"):
        assert readable[provider] == (
            {frozenset({"city-minato", provider})} if provider in providers else set()
        )
    assert readable["hub"] == {frozenset({"city-minato", "hub"})}
    assert readable["kyokai-kenpo"] == set()


def _local_activity_marker(data: bytes, kinds: set[str]) -> bool:
    """Whether ``data`` is the SDK's account of a local activity of one of ``kinds`` (a direct
    linkage, a run resolved at the hub's endpoint), in a marker (nothing of the request or the
    answer: those are sealed)."""
    import json

    try:
        found = json.loads(data)
    except ValueError:
        return False
    return (
        isinstance(found, dict)
        and set(found) <= MARKER_KEYS
        and found.get("activity_type") in kinds
    )


async def test_a_start_written_by_another_agency_is_refused(
    client, pool, settings, catalog, live_whitelist
) -> None:
    """city-shibuya, holding its own keys only, starts a flow as city-minato straight on
    city-minato's queue: city-minato's worker reads it, sees who wrote it, and refuses it before
    anything is resolved or asked."""
    from temporalio.common import SearchAttributePair, TypedSearchAttributes

    from renkei.kernel import search_attributes as sa
    from tests.helpers import allowance_check

    forged = allowance_check(settings)
    rogue = rogue_client(client, settings, "city-shibuya")
    async with workers(client, pool, settings, catalog, live_whitelist):
        handle = await rogue.start_workflow(
            forged.bpf,
            forged,
            id=workflow_id(forged.bpf, forged.executor, forged.case_ref),
            task_queue=control_queue(settings.task_queue_prefix, forged.executor),
            search_attributes=TypedSearchAttributes(
                [SearchAttributePair(sa.EXECUTOR, forged.executor)]
            ),
        )
        with pytest.raises(WorkflowFailureError) as failure:
            await client.get_workflow_handle(handle.id).result()
    assert "another party than the executor" in str(failure.value.cause)
    assert await records.query(pool, workflow_id=handle.id) == []


async def test_an_answer_written_by_another_agency_is_refused(
    client, pool, settings, catalog, live_whitelist
) -> None:
    """city-shibuya, holding its own keys only, answers city-minato's waiting flow: its payload
    is sealed between the two, so city-minato's worker reads it, sees who wrote it, and refuses
    it, by update (a reason comes back) and by signal (dropped); the flow keeps waiting, and
    the executor's own answer completes it."""
    from temporalio.client import WorkflowUpdateFailedError

    from renkei.contracts.messages import Response

    await register_fixture(pool, "consent-probe.yaml")
    slow = settings.model_copy(update={"test_time_scale": 1e-4})
    rc = sdk(client, slow)
    person = pick(settings, lambda h: h.municipality == "city-shibuya").members[0]
    rogue = rogue_client(client, settings, "city-shibuya")
    async with workers(client, pool, slow, catalog, live_whitelist):
        handle = await _waiting_portal_flow(rc, settings, "consent-probe", person)
        forged = rogue.get_workflow_handle(handle.id)
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await forged.execute_update(
                "renkei.respond", Response(step="consent", payload={"agree": False})
            )
        # Refused as an invalid answer; the reason itself is sealed for the executor alone.
        assert str(refused.value.cause).startswith("InvalidResponse")
        await forged.signal("renkei.respond", Response(step="consent", payload={"agree": False}))
        # The signal is taken (or dropped) before the next update in the same history: answer
        # as the executor and the flow completes with the executor's "agree", not the rogue's.
        assert await rc.waiting(handle.id)
        await rc.respond(handle.id, "consent", {"agree": True})
        assert (await handle.result()).outcome == "completed"


# -- an org's private keys are made on its own side ---------------------------------------------


def test_an_org_makes_its_own_keys_and_the_hub_only_signs_the_public_part(
    cli, fresh_database, tmp_path, monkeypatch
) -> None:
    """`renkei keys request` on the org's side, `renkei keys register` on the hub's: the hub's
    keys folder never holds the org's private keys, the registry holds its public ones, and what
    the hub seals to the org opens with the org's own file only. (A platform of its own: the
    org's earlier keys are revoked for good.)"""
    import asyncio

    import asyncpg

    from renkei.app.cli import app
    from renkei.kernel.sealing import seal

    base_settings = Settings(database_url=fresh_database, keys_file=tmp_path / "hub" / "keys.json")
    monkeypatch.setenv("RENKEI_DATABASE_URL", fresh_database)
    monkeypatch.setenv("RENKEI_KEYS_FILE", str(base_settings.keys_file))
    get_settings.cache_clear()
    done = cli.invoke(app, ["keys", "issue", "mhlw"])  # what the platform made for it before
    assert done.exit_code == 0, done.output

    hub_public = tmp_path / "hub-public.json"
    done = cli.invoke(app, ["keys", "hub-public"])
    assert done.exit_code == 0, done.output
    hub_public.write_text(done.stdout)
    org_side = tmp_path / "org-side" / "mhlw.json"
    done = cli.invoke(
        app, ["keys", "request", "mhlw", "--hub-public", str(hub_public), "--out", str(org_side)]
    )
    assert done.exit_code == 0, done.output
    sent = tmp_path / "mhlw.public.json"
    sent.write_text(done.stdout)
    made = keys.OrgKeys.model_validate_json(org_side.read_text())
    assert made.codec is None and made.hub_signing == keys.load(base_settings).public("hub").signing

    async def registry() -> dict:
        pool = await asyncpg.create_pool(base_settings.database_url, min_size=1, max_size=1)
        try:
            return await parties.current(pool, keys.load(base_settings).signer().public_key())
        finally:
            await pool.close()

    assert asyncio.run(registry())["mhlw"] != made.public("mhlw")
    done = cli.invoke(app, ["keys", "register", "mhlw", "--public", str(sent)])
    assert done.exit_code == 0, done.output
    now = asyncio.run(registry())["mhlw"]
    assert now == made.public("mhlw")
    for path in keys.keys_path(base_settings).parent.rglob("*.json"):
        assert made.signing_key not in path.read_text(), path
        assert made.sealing_key not in path.read_text(), path
    sealed = seal(now.sealer(), now.sealing_id, b"for mhlw only", "ctx")
    assert open_sealed(made.opener(), sealed, "ctx") == b"for mhlw only"
    wrong = cli.invoke(app, ["keys", "register", "jps", "--public", str(sent)])
    assert wrong.exit_code == 2 and "not jps's" in wrong.output


def test_a_lost_key_is_revoked_from_the_command_line_for_good(
    cli, fresh_database, tmp_path, monkeypatch
) -> None:
    """`renkei keys revoke ORG --reason ...`: the org has no current key after it, a second
    revocation finds none, and a moment without its offset is refused."""
    from renkei.app.cli import app

    monkeypatch.setenv("RENKEI_DATABASE_URL", fresh_database)
    monkeypatch.setenv("RENKEI_KEYS_FILE", str(tmp_path / "keys.json"))
    get_settings.cache_clear()
    assert cli.invoke(app, ["keys", "issue", "jps"]).exit_code == 0
    naive = cli.invoke(app, ["keys", "revoke", "jps", "--reason", "lost", "--since", "2026-11-27"])
    assert naive.exit_code == 2 and "UTC offset" in naive.output
    done = cli.invoke(app, ["keys", "revoke", "jps", "--reason", "laptop stolen"])
    assert done.exit_code == 0, done.output
    again = cli.invoke(app, ["keys", "revoke", "jps", "--reason", "laptop stolen"])
    assert again.exit_code == 2 and "no current keys" in again.output
    # a rotation's own reason is not anyone's to give (its key's approvals would count)
    rotation = cli.invoke(app, ["keys", "revoke", "jps", "--reason", "replaced by new keys"])
    assert rotation.exit_code == 2 and "said by a rotation only" in rotation.output
    # a key replaced in a rotation, found lost later, is revoked for cause by its id
    assert cli.invoke(app, ["keys", "issue", "mhlw"]).exit_code == 0
    first = keys.load_org(get_settings(), "mhlw").public("mhlw").signing_id
    assert cli.invoke(app, ["keys", "issue", "mhlw", "--rotate"]).exit_code == 0
    found = cli.invoke(app, ["keys", "revoke", "mhlw", "--reason", "found copied", "--key", first])
    assert found.exit_code == 0, found.output
    unknown = cli.invoke(app, ["keys", "revoke", "mhlw", "--reason", "lost", "--key", "k-none"])
    assert unknown.exit_code == 2 and "no key k-none" in unknown.output


async def test_a_wait_for_the_citizens_answer_takes_no_one_elses(
    client, pool, settings, catalog, live_whitelist
) -> None:
    """A wait step with `by: citizen`: the executing agency's own answer (not claiming to be the
    citizen) is refused and the flow keeps waiting; the citizen's attested answer completes it."""
    await register_fixture(pool, "citizen-consent-probe.yaml")
    slow = settings.model_copy(update={"test_time_scale": 1e-4})
    rc = sdk(client, slow)
    person = pick(settings, lambda h: h.municipality == "city-shibuya").members[0]
    async with workers(client, pool, slow, catalog, live_whitelist):
        handle = await _waiting_portal_flow(rc, settings, "citizen-consent-probe", person)
        for by in ("agency", "operator"):
            with pytest.raises(ResponseRefused, match="awaits the citizen's own answer"):
                await rc.respond(handle.id, "consent", {"agree": True}, by=by)
        assert await rc.waiting(handle.id)
        word = attest.citizen_response(
            keys.load(settings).signer(),
            handle.id,
            handle.result_run_id or "",
            "consent",
            {"agree": True},
            code(settings, "city-minato", person),
        )
        await rc.respond(handle.id, "consent", {"agree": True}, by="citizen", attestation=word)
        assert (await handle.result()).outcome == "completed"


async def test_the_portal_samples_consent_is_the_citizens_alone(
    client, pool, settings, catalog, live_whitelist
) -> None:
    """The shipped portal application (version 2, `by: citizen`): the executing agency's own
    answer to the consent, through its HTTP API and its SDK, is refused and the flow keeps
    waiting; the citizen's answer in their own portal session is taken and the flow completes."""
    import httpx

    from renkei.app.web import serving
    from renkei.app.web.api import issue_token
    from renkei.kernel.pseudonyms import PORTAL, derive_code

    bpf = "child-allowance-portal-application"
    slow = settings.model_copy(update={"test_time_scale": 1e-4})
    rc = sdk(client, slow)
    person = pick(settings, lambda h: h.municipality == "city-shibuya").members[0]
    agency = {"Authorization": f"Bearer {await issue_token(pool, 'city-minato')}"}
    said = {"step": "consent", "payload": {"agree": True}}
    async with (
        workers(client, pool, slow, catalog, live_whitelist),
        serving(slow, pool, client) as base,
        httpx.AsyncClient(base_url=base, timeout=30) as http,
    ):
        handle = await rc.start(
            start(
                bpf,
                "city-minato",
                code(settings, "city-minato", person),
                inputs={"previous_municipality": "city-shibuya"},
                trigger="portal",
            )
        )
        await _until_waiting(rc, handle.id)
        api = await http.post(f"/api/flows/{handle.id}/respond", json=said, headers=agency)
        assert api.status_code == 422 and "citizen's own answer" in api.json()["detail"]
        for by in ("agency", "operator"):
            with pytest.raises(ResponseRefused, match="awaits the citizen's own answer"):
                await rc.respond(handle.id, "consent", {"agree": True}, by=by)
        assert [w.step for w in await rc.waiting(handle.id)] == ["consent"]
        citizen = {
            "Authorization": f"Bearer {derive_code(keys.load(settings).hub_key, PORTAL, person.subject_id)}"
        }
        answered = await http.post(
            f"/api/citizen/flows/{handle.id}/respond", json=said, headers=citizen
        )
        assert answered.status_code == 200, answered.text
        result = await handle.result()
        assert result.outcome == "completed" and result.pin.version == 2


async def test_a_held_case_waiting_for_its_person_is_not_theirs_to_find(
    client, pool, settings, catalog, live_whitelist
) -> None:
    """A case under an approved disclosure hold that waits for its person's own answer: the
    person, naming it in their portal session (they may guess a workflow id: its BPF and
    executor are public, case numbers run in sequence), gets the answer a flow that does not
    exist gets. Any other answer (the step it waits at, a refusal) would tell them that the
    held case exists, where, and under which procedure: what the hold keeps from them."""
    import httpx

    from renkei.app.web import serving
    from renkei.kernel.pseudonyms import PORTAL, derive_code

    bpf = "child-allowance-portal-application"
    slow = settings.model_copy(update={"test_time_scale": 1e-4})
    rc = sdk(client, slow)
    person = pick_aside(settings, lambda h: h.municipality == "city-shibuya").members[0]
    subject = code(settings, "city-minato", person)
    flow = start(
        bpf,
        "city-minato",
        subject,
        inputs={"previous_municipality": "city-shibuya"},
        trigger="portal",
    )
    hold = await approved_hold(pool, "city-minato", bpf, flow.case_ref, subject)
    citizen = {
        "Authorization": f"Bearer {derive_code(keys.load(settings).hub_key, PORTAL, person.subject_id)}"
    }
    said = {"step": "consent", "payload": {"agree": True}}
    async with (
        workers(client, pool, slow, catalog, live_whitelist),
        serving(slow, pool, client) as base,
        httpx.AsyncClient(base_url=base, timeout=30) as http,
    ):
        handle = await rc.start(flow.model_copy(update={"hold": hold}))
        try:
            await _until_waiting(rc, handle.id)
            nowhere = handle.id.rsplit("/", 1)[0] + "/case-none"
            for step in ("consent", "no-such-step"):
                asked = await http.post(
                    f"/api/citizen/flows/{handle.id}/respond",
                    json={**said, "step": step},
                    headers=citizen,
                )
                none = await http.post(
                    f"/api/citizen/flows/{nowhere}/respond",
                    json={**said, "step": step},
                    headers=citizen,
                )
                assert (asked.status_code, asked.json()) == (none.status_code, none.json())
                assert asked.status_code == 404
            # and the case goes on waiting, untouched
            assert [w.step for w in await rc.waiting(handle.id)] == ["consent"]
        finally:
            await handle.terminate("test over")


# -- a worker of another party polling a queue that is not its own --------------------------------


@workflow.defn(dynamic=True, sandboxed=False)
class _Impostor:
    """A rogue's workflow on an executor's control queue: it completes the flow at once."""

    @workflow.run
    async def run(self, args: Sequence[RawValue]) -> FlowResult:
        return FlowResult(
            outcome="completed",
            result={"eligible": True, "made_up_by": "kyokai-kenpo"},
            pin=Pin(bpf=workflow.info().workflow_type, version=1, content_hash="sha256:x"),
        )


async def test_a_result_written_by_a_rogue_on_the_executors_queue_is_not_believed(
    client, pool, settings
) -> None:
    """kyokai-kenpo, with its own keys only, polls city-minato's control queue and completes a
    flow with a result of its making, on its own pair with city-minato: city-minato's SDK does
    not read it as the flow's result."""
    rogue = party_client(client, settings, ["kyokai-kenpo"])
    async with Worker(
        rogue,
        task_queue=control_queue(settings.task_queue_prefix, "city-minato"),
        workflows=[_Impostor],
    ):
        handle = await sdk(client, settings).start(allowance_check(settings))
        with pytest.raises(Exception) as unread:
            await asyncio.wait_for(handle.result(), 60)
    assert not isinstance(unread.value, TimeoutError)
    assert "made_up_by" not in str(unread.value)


def _answering_as_itself(client, settings, party: str):
    """A client with ``party``'s own keys whose codec takes every queue for its own: it answers
    any activity on its pair with the flow's executor (which the executor can open)."""
    from renkei.contracts import names
    from renkei.kernel.channels import (
        ChannelCodec,
        Directory,
        Identity,
        Routing,
        channel_converter,
    )

    directory = Directory()
    for other in ("city-minato", "city-shibuya", "jps"):  # public keys, as the registry has
        directory.add(other, keys.load_org(settings, other).opener().public_key())
    codec = ChannelCodec(
        Identity().add(party, *keys.load_org(settings, party).openers()),
        directory,
        Routing(executor_of=names.executor_of, party_of_queue=lambda _: party),
        primary=party,
    )
    return Client(
        client.service_client, namespace=client.namespace, data_converter=channel_converter(codec)
    )


async def test_a_rogue_answering_in_the_hubs_place_or_the_providers_fails_the_flow(
    client, pool, settings, catalog, live_whitelist
) -> None:
    """kyokai-kenpo, with its own keys only, polls the hub's queue (then a provider's) and
    answers on its own pair with the executor: the flow does not read the answer, and fails
    saying so, with no made-up data taken."""
    from renkei.contracts.messages import Brokered

    await register_fixture(pool, "retry-probe.yaml")
    seen: list[str] = []

    @activity.defn(dynamic=True)
    async def impostor(args: Sequence[RawValue]) -> object:
        kind = activity.info().activity_type
        seen.append(kind)
        if kind == "hub.broker":
            return Brokered(allowed=True, reason="ok", legal_reference="-")
        return {"fiscal_year": 2025, "taxable_income": 123, "municipal_tax": 0, "dependents": 9}

    rogue = _answering_as_itself(client, settings, "kyokai-kenpo")
    person = pick(settings, lambda h: h.municipality == "city-shibuya").members[0]
    prefix = settings.task_queue_prefix
    # Runs resolved on the hub's queue (the hub's endpoint: tests/test_hub_endpoint.py). The
    # hub's worker is down (or loses the race): the rogue alone polls the hub's queue.
    settings = settings.model_copy(update={"hub_transport": "queue"})
    async with (
        workers(client, pool, settings, catalog, live_whitelist, control=False),
        Worker(
            party_client(client, settings, ["city-minato"], legacy_ring=False),
            task_queue=control_queue(prefix, "city-minato"),
            workflows=[BpfInterpreter],
        ),
        Worker(rogue, task_queue=f"{prefix}.hub", activities=[impostor]),
    ):
        handle = await sdk(client, settings).start(
            start("retry-probe", "city-minato", code(settings, "city-minato", person))
        )
        with pytest.raises(WorkflowFailureError) as failed:
            await asyncio.wait_for(handle.result(), 60)
    assert Failure.FORGED_ANSWER.caused(failed.value.cause), failed.value.cause
    assert "not written by the hub" in str(failed.value.cause)
    assert seen == ["hub.resolve"]
    # The real hub, and a rogue on the provider's queue instead (the queue's path: over the
    # direct channel an impostor at the provider's endpoint is tests/test_direct.py's).
    queued = through_queues(settings)
    async with (
        workers(client, pool, queued, catalog, live_whitelist, agencies=("jps",)),
        Worker(rogue, task_queue=agency_queue(prefix, "city-shibuya"), activities=[impostor]),
    ):
        handle = await sdk(client, queued).start(
            start("retry-probe", "city-minato", code(settings, "city-minato", person))
        )
        with pytest.raises(WorkflowFailureError) as failed:
            await asyncio.wait_for(handle.result(), 60)
    cause = failed.value.cause
    while cause is not None and not Failure.FORGED_ANSWER.caused(cause):
        cause = cause.__cause__ or getattr(cause, "cause", None)
    assert cause is not None and "did not come from city-shibuya" in str(cause)


async def test_a_case_reference_that_is_an_individual_number_is_refused_everywhere(
    client, pool, settings, catalog, live_whitelist
) -> None:
    """A person's individual number as the case reference would sit in clear in Temporal and in
    every record: the SDK refuses it, and a start straight to Temporal is refused by the hub
    before anything is asked or recorded."""
    from renkei.kernel.pseudonyms import synthetic_number

    person = pick(settings, lambda h: h.municipality == "city-shibuya").members[0]
    flow = allowance_check(settings).model_copy(
        update={"case_ref": synthetic_number(person.subject_id)}
    )
    with pytest.raises(ValueError, match="must name no one"):
        await sdk(client, settings).start(flow)
    async with workers(client, pool, settings, catalog, live_whitelist):
        handle = await client.start_workflow(
            flow.bpf,
            flow,
            id=workflow_id(flow.bpf, flow.executor, flow.case_ref),
            task_queue=control_queue(settings.task_queue_prefix, flow.executor),
        )
        with pytest.raises(WorkflowFailureError) as failure:
            await asyncio.wait_for(handle.result(), 60)
    assert "looks like an individual number" in str(failure.value.cause)
    assert await records.query(pool, workflow_id=handle.id) == []


async def test_a_requester_cannot_set_down_its_own_record_of_an_attempt_before_the_hub(
    base_settings, pool, settings
) -> None:
    """The requester's record of an attempt is the hub's to write. city-minato, with its own
    role, cannot append one (it writes only the attempts it answers); one appended past its
    role, in its own hand, is refused by the hub's write and reported by verify (shown on a
    probe org's chain: the session's shared chains stay intact for the other tests)."""
    import asyncpg

    from renkei.kernel.db import create_pool, party_role

    own = records.RecordSigner("city-minato", keys.load_org(settings, "city-minato").signer())
    forged = access_record(
        "city-minato",
        1,
        attempt_key=f"wf-{uuid.uuid4()}/run/tax",
        requester="city-minato",
        provider="city-shibuya",
        outcome="denied",
        reason="never asked",
    )
    agency = await create_pool(
        base_settings.database_url, max_size=1, role=party_role("city-minato")
    )
    try:
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="row-level security"):
            await records.write(agency, forged, signer=own)
    finally:
        await agency.close()
    # Past its role (the application's), a requester of its own writes first.
    probe = await _party(pool, settings, f"probe-{uuid.uuid4().hex[:8]}")
    attempt = f"wf-{uuid.uuid4()}/run/tax"

    def side(keeper: str, **changes: object) -> records.AccessRecord:
        return access_record(
            keeper,
            1,
            attempt_key=attempt,
            requester=probe.party,
            provider="city-shibuya",
            **changes,
        )

    await records.write(pool, side(probe.party, outcome="denied"), signer=probe)
    hub = records.RecordSigner(records.HUB, keys.load(settings).signer())
    with pytest.raises(PermissionError, match="not the hub"):
        await records.write(pool, side(probe.party), side(records.HUB), signer=hub)
    # Had the hub's own record gone in beforehand (another path), verify names the substitute.
    await records.write(pool, side(records.HUB), signer=hub)
    problems = await _breaks(pool, settings, probe.party)
    assert any("is not the hub's writing" in p for p in problems), problems


async def test_a_witness_cannot_sign_a_head_the_hubs_chain_never_had(
    base_settings, pool, settings
) -> None:
    """city-minato witnesses the hub's chain; a checkpoint of a head that is not there (which
    would make the chain look cut, for good) is refused."""
    import asyncpg

    from renkei.kernel.db import create_pool, party_role

    head = await pool.fetchval(
        "SELECT max(chain_seq) FROM records.access_records WHERE keeper = 'hub'"
    )
    framer = keys.load_org(settings, "city-minato").signer()
    at = dt.datetime.now(dt.UTC)
    seq, bogus = (head or 0) + 1000, "e" * 64
    message = f"renkei/checkpoint/v1|hub|{seq}|{bogus}|{at.isoformat(timespec='microseconds')}"
    agency = await create_pool(
        base_settings.database_url, max_size=1, role=party_role("city-minato")
    )
    try:
        with pytest.raises(asyncpg.PostgresError, match="names a record"):
            await agency.execute(
                "INSERT INTO records.checkpoints"
                " (keeper, chain_seq, record_hash, signed_at, key_id, signature, signer)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7)",
                "hub",
                seq,
                bogus,
                at,
                records.key_id(framer),
                base64.b64encode(framer.sign(message.encode())).decode(),
                "city-minato",
            )
    finally:
        await agency.close()


async def test_a_code_mapped_to_another_person_in_the_database_names_no_one(
    pool: asyncpg.Pool, settings: Settings
) -> None:
    """Whom a linkage is about is the subject the hub finds behind the executor's code. The
    table of codes is the database's (the application's role writes it): a row rewritten so
    that city-minato's code for one person names another would have the hub ask a provider
    about the other. The hub takes a row only if its key derives that very code for that
    subject at that org: the rewritten code names no one, and a row put back holds again."""
    from renkei.kernel.pseudonyms import Pseudonyms, UnknownSubject, derive_code

    hub_key = keys.load(settings).hub_key
    asker, victim = uuid.uuid4(), uuid.uuid4()
    await Pseudonyms(pool, hub_key).enroll([asker, victim], ["city-minato"])
    asked = derive_code(hub_key, "city-minato", asker)
    assert await Pseudonyms(pool, hub_key).subject_of("city-minato", asked) == asker
    async with pool.acquire() as conn, conn.transaction():  # the application's role
        await conn.execute(  # the victim's own row out of the way
            "UPDATE hub.subject_codes SET subject_id = $2"
            " WHERE subject_id = $1 AND org = 'city-minato'",
            victim,
            uuid.uuid4(),
        )
        await conn.execute(
            "UPDATE hub.subject_codes SET subject_id = $2 WHERE subject_id = $1"
            " AND org = 'city-minato'",
            asker,
            victim,
        )
    assert (
        await pool.fetchval(
            "SELECT subject_id FROM hub.subject_codes WHERE org = 'city-minato' AND code = $1",
            asked,
        )
        == victim
    )
    with pytest.raises(UnknownSubject) as refused:
        await Pseudonyms(pool, hub_key).subject_of("city-minato", asked)
    assert str(victim) not in str(refused.value) and asked not in str(refused.value)
    # The hub translates no code through the rewritten row either.
    with pytest.raises(UnknownSubject):
        await Pseudonyms(pool, hub_key).translate("city-minato", [asked], "city-shibuya")
    await pool.execute(
        "UPDATE hub.subject_codes SET subject_id = $1 WHERE code = $2 AND org = 'city-minato'",
        asker,
        asked,
    )
    assert await Pseudonyms(pool, hub_key).subject_of("city-minato", asked) == asker


async def test_an_individual_number_remapped_in_the_database_enrols_no_one(
    pool: asyncpg.Pool, settings: Settings
) -> None:
    """The hub finds the person behind an individual number by the number's keyed hash in
    ``hub.individuals``. Two people's rows swapped there would have the next enrolment by number
    give the executor the other person's code, and its flows fetch that person's data. The
    application's role may not change or remove a row, nor may the owner (a trigger); a row
    the owner swaps past the trigger fails the hub's binding, and the enrolment is refused
    with a message naming no one; put back, it holds again. A row added unbound and dated back
    is never bound as one from before bindings."""
    from renkei.kernel.pseudonyms import (
        IndividualAltered,
        Pseudonyms,
        number_hash,
        synthetic_number,
    )

    hub = Pseudonyms(pool, keys.load(settings).hub_key)
    one, other = synthetic_number(uuid.uuid4()), synthetic_number(uuid.uuid4())
    code = await hub.enroll_number(one, "city-minato")
    await hub.enroll_number(other, "city-minato")
    hub_key = keys.load(settings).hub_key
    h_one, h_other = number_hash(hub_key, one), number_hash(hub_key, other)
    subject = "SELECT subject_id FROM hub.individuals WHERE number_hash = $1"
    s_one, s_other = await pool.fetchval(subject, h_one), await pool.fetchval(subject, h_other)

    async def swap(conn: asyncpg.Connection, a: uuid.UUID, b: uuid.UUID) -> None:
        for hashed, subject in ((h_one, uuid.uuid4()), (h_other, a), (h_one, b)):
            await conn.execute(
                "UPDATE hub.individuals SET subject_id = $2 WHERE number_hash = $1", hashed, subject
            )

    for role in ("", "SET LOCAL ROLE NONE"):  # the application's role; the owner
        for change in (
            "UPDATE hub.individuals SET subject_id = gen_random_uuid() WHERE number_hash = $1",
            "DELETE FROM hub.individuals WHERE number_hash = $1",
        ):
            async with pool.acquire() as conn, conn.transaction():
                if role:
                    await conn.execute(role)
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    await conn.execute(change, h_one)
    # Nor its binding be taken away; a row added dated back, unbound (as if from before
    # bindings), is dated by the database and never bound by the hub.
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await pool.execute(
            "UPDATE hub.individuals SET binding = NULL WHERE number_hash = $1", h_one
        )
    junk = uuid.uuid4().hex
    await pool.execute(
        "INSERT INTO hub.individuals (number_hash, subject_id, enrolled_at)"
        " VALUES ($1, gen_random_uuid(), '2000-01-01')",
        junk,
    )
    assert await hub.bind_before() == 0
    assert await pool.fetchval(
        "SELECT enrolled_at > now() - interval '1 minute' AND binding IS NULL"
        " FROM hub.individuals WHERE number_hash = $1",
        junk,
    )
    # The owner turns the trigger off and swaps the two people's subjects.
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SET LOCAL ROLE NONE")
        await conn.execute("ALTER TABLE hub.individuals DISABLE TRIGGER fixed")
        await swap(conn, s_one, s_other)
        await conn.execute("ALTER TABLE hub.individuals ENABLE TRIGGER fixed")
    with pytest.raises(IndividualAltered) as refused:
        await Pseudonyms(pool, keys.load(settings).hub_key).enroll_number(one, "city-minato")
    for named in (one, str(s_one), str(s_other), h_one):
        assert named not in str(refused.value)
    async with pool.acquire() as conn, conn.transaction():  # put back
        await conn.execute("SET LOCAL ROLE NONE")
        await conn.execute("ALTER TABLE hub.individuals DISABLE TRIGGER fixed")
        await swap(conn, s_other, s_one)
        await conn.execute("ALTER TABLE hub.individuals ENABLE TRIGGER fixed")
    assert await hub.enroll_number(one, "city-minato") == code


async def test_a_citizen_answers_a_flow_its_executor_started_itself(
    client, pool, settings, catalog, live_whitelist
) -> None:
    """A counter start written by the executor's own client is sealed for the executor alone,
    so the hub's web process, holding only the hub's keys as deployed, cannot open it, nor the
    flow's acknowledgement or refusal of an answer. The citizen still answers the flow from
    their portal: the hub knows the flow's person from its own ticket for the run, and says
    why an answer does not fit from the definition it resolved the run to. Someone else's
    portal code still finds no such flow."""
    import httpx

    from renkei.app.client import RenkeiClient
    from renkei.app.web import serving
    from renkei.kernel.pseudonyms import PORTAL, derive_code
    from workers.plugin import party_client

    await register_fixture(pool, "counter-consent-probe.yaml")
    slow = settings.model_copy(update={"test_time_scale": 1e-4})
    minato = RenkeiClient(party_client(client, slow, ["city-minato"]), slow)
    hub_only = party_client(client, slow, [records.HUB])
    person = pick(settings, lambda h: h.municipality == "city-shibuya").members[0]
    other = pick(settings, lambda o: o.members[0].subject_id != person.subject_id).members[0]
    said = {"step": "consent", "payload": {"agree": True}}
    async with (
        workers(client, pool, slow, catalog, live_whitelist),
        serving(slow, pool, hub_only) as base,
        httpx.AsyncClient(base_url=base, timeout=30) as http,
    ):
        handle = await minato.start(
            start("counter-consent-probe", "city-minato", code(settings, "city-minato", person))
        )
        await _until_waiting(minato, handle.id)
        # The flow's own refusals are written for its executor alone: the portal says why an
        # answer does not fit the step, from the definition the hub resolved the run to.
        wrong = {"step": "consent", "payload": {"agree": "yes"}}
        elsewhere = {"step": "tax", "payload": {}}
        for who, answer, expected, why in (
            (other, said, 404, "no such flow about you"),
            (person, wrong, 422, "agree: must be of type boolean"),
            (person, elsewhere, 422, "awaits no answer of yours"),
            (person, said, 200, ""),
        ):
            portal_code = derive_code(keys.load(settings).hub_key, PORTAL, who.subject_id)
            answered = await http.post(
                f"/api/citizen/flows/{handle.id}/respond",
                json=answer,
                headers={"Authorization": f"Bearer {portal_code}"},
            )
            assert answered.status_code == expected, answered.text
            assert why in answered.text, answered.text
        assert (await handle.result()).outcome == "completed"
