""" "Provided" rests on the provider's signed receipt, not the executor's word (attacker tests).

A hostile executor runs a workflow of its own (city-minato's key file only, as the flow
``child-allowance-check`` under its own id), brokers a real linkage with the hub, and then
reports what it likes: ``provided`` for an attempt the provider never answered (with no receipt,
with one signed by another org's key, with a genuine receipt of another attempt), or a failure,
or nothing, for one the provider answered. The hub records ``provided`` only on the provider's
receipt for this very attempt; the provider's own receipts show every answered exchange the
executor hid, to a reconciliation and to the citizen.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import uuid
from collections.abc import Sequence
from datetime import timedelta
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import BaseModel
from temporalio import workflow
from temporalio.common import RawValue, RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError
from temporalio.worker import Worker

from activities.attempts import attempt_key, attempt_record
from renkei.app.citizen import records_for_subject
from renkei.bpf import registry
from renkei.contracts.messages import (
    AttemptOutcomeReport,
    Brokered,
    BrokerRequest,
    LinkageRequest,
)
from renkei.contracts.names import agency_queue, hub_queue, query_activity, workflow_id
from renkei.kernel import attest, keys, parties, permits, records
from renkei.kernel.db import create_pool, party_role
from renkei.kernel.permits import AnswerReceipt
from renkei.kernel.settings import Settings
from whitelist.decide import Decision
from workers.plugin import party_client

from .helpers import as_resolved, code, run, shibuya_family, wait_for_outcomes, workers

EXECUTOR = "city-minato"
BPF = "child-allowance-check"
# The hostile flow's forging keys, by org (the worker runs in this process, unsandboxed).
FORGERS: dict[str, Ed25519PrivateKey] = {}


class Plan(BaseModel):
    prefix: str
    broker: dict[str, Any]  # a BrokerRequest's fields (the hub takes the ids from Temporal)
    ask: bool  # ask the provider (it answers and signs)
    report: Literal["provided", "failed"] | None  # None: report nothing
    report_first: bool = False  # report before asking (ahead of the hub's collector)
    hold: bool = False  # after asking, report only once signalled ("go")
    receipt: Literal["none", "genuine", "foreign", "given"] = "none"
    forger: str = "kyokai-kenpo"
    given: dict[str, Any] | None = None


@workflow.defn(dynamic=True, sandboxed=False)
class HostileExecutor:
    """Brokers one linkage, maybe asks the provider, and reports as planned."""

    def __init__(self) -> None:
        self._go = False

    @workflow.signal(name="go")
    def go(self) -> None:
        self._go = True

    @workflow.run
    async def run(self, args: Sequence[RawValue]) -> dict[str, Any]:
        plan = workflow.payload_converter().from_payload(args[0].payload, Plan)
        once = {
            "start_to_close_timeout": timedelta(seconds=20),
            "retry_policy": RetryPolicy(maximum_attempts=1),
        }
        info = workflow.info()
        # First resolved by the hub, as a flow is (its linkage requests carry the ticket).
        req = await as_resolved(
            hub_queue(plan.prefix),
            BrokerRequest.model_validate(
                {**plan.broker, "workflow_id": info.workflow_id, "run_id": info.run_id}
            ),
            {"previous_municipality": "city-shibuya"},
        )
        brokered = await workflow.execute_activity(
            "hub.broker", req, task_queue=hub_queue(plan.prefix), result_type=Brokered, **once
        )
        assert brokered.allowed and brokered.permit is not None
        out: dict[str, Any] = {"receipt": None, "reported": None}
        receipt = None
        if plan.report_first and plan.report is not None:
            out["reported"] = await self._report(plan, req.step, None)
        if plan.ask:
            request = LinkageRequest(
                **req.model_dump(
                    include=set(LinkageRequest.model_fields),
                    exclude={"subject", "permit", "sealed_subject"},
                ),
                subject="",
                permit=brokered.permit,
                sealed_subject=brokered.sealed_subject,
            )
            signed = await workflow.execute_activity(
                query_activity(req.info),
                request,
                task_queue=agency_queue(plan.prefix, req.provider),
                activity_id=req.step,
                result_type=dict,
                **once,
            )
            genuine = AnswerReceipt(
                permit=brokered.permit,
                digest=attest.answer_digest(signed["answer"]),
                signature=signed["signature"],
            )
            out["receipt"] = genuine.model_dump(mode="json")
            if plan.hold:
                await workflow.wait_condition(lambda: self._go)
            if plan.receipt == "genuine":
                receipt = genuine
        if plan.receipt == "foreign":  # another org's key, over an answer of its making
            made_up = {"benefits": []}
            receipt = AnswerReceipt(
                permit=brokered.permit,
                digest=attest.answer_digest(made_up),
                signature=attest.signed_answer(
                    FORGERS[plan.forger], brokered.permit.signature, made_up
                )["signature"],
            )
        elif plan.receipt == "given":
            receipt = AnswerReceipt.model_validate(plan.given)
        if plan.report is not None and not plan.report_first:
            out["reported"] = await self._report(plan, req.step, receipt)
        return out

    @staticmethod
    async def _report(plan: Plan, step: str, receipt: AnswerReceipt | None) -> str:
        assert plan.report is not None
        try:
            await workflow.execute_activity(
                "hub.outcome",
                AttemptOutcomeReport(step=step, outcome=plan.report, receipt=receipt),
                task_queue=hub_queue(plan.prefix),
                start_to_close_timeout=timedelta(seconds=20),
                retry_policy=RetryPolicy(maximum_attempts=1),
            )
        except ActivityError as err:
            cause = err.cause
            return cause.type if isinstance(cause, ApplicationError) else str(cause)
        return "taken"


async def _pension_linkage(pool: asyncpg.Pool, settings: Settings, index: int) -> dict[str, Any]:
    """The fields of child-allowance-check's pension linkage, for a Shibuya parent."""
    found = await registry.fetch(pool, BPF)
    assert found is not None
    person = shibuya_family(settings, index).members[0]
    return {
        "requester": EXECUTOR,
        "provider": "jps",
        "task": found.definition.task,
        "info": "pension-benefit",
        "bpf": BPF,
        "bpf_version": found.definition.version,
        "content_hash": found.content_hash,
        "step": "pension",
        "subject": code(settings, EXECUTOR, person),
        "workflow_id": "",
        "run_id": "",
    }


async def _hostile(client, settings: Settings, plans: list[Plan]) -> list[tuple[str, dict]]:
    """Run each plan as its own flow of the hostile executor: (workflow id, what it returned)."""
    rogue = party_client(client, settings, [EXECUTOR])  # the executor's own key file only
    queue = f"{settings.task_queue_prefix}.hostile-executor"
    out = []
    async with Worker(rogue, task_queue=queue, workflows=[HostileExecutor]):
        for plan in plans:
            wid = workflow_id(BPF, EXECUTOR, f"h-{uuid.uuid4().hex[:8]}")
            handle = await rogue.start_workflow(
                BPF, plan, id=wid, task_queue=queue, result_type=dict
            )
            out.append((wid, await handle.result()))
    return out


async def _hub_record(pool: asyncpg.Pool, wid: str) -> records.AccessRecord:
    [found] = [r for r in await records.query(pool, workflow_id=wid) if r.keeper == records.HUB]
    return found


async def _outcome(pool: asyncpg.Pool, wid: str) -> str | None:
    key = (await _hub_record(pool, wid)).attempt_key
    found = (await records.outcomes(pool, [key])).get(key)
    return found.outcome if found else None


async def _citizen_sees(
    pool: asyncpg.Pool, catalog, settings: Settings, wid: str
) -> tuple[str, str | None]:
    hub = await _hub_record(pool, wid)
    public = keys.load(settings).signer().public_key()
    [seen] = [
        r
        for r in await records_for_subject(pool, catalog, uuid.UUID(hub.subject_code), hub=public)
        if r.application == wid
    ]
    return seen.exchange, seen.provided_per


async def test_provided_without_the_providers_receipt_for_this_attempt_is_not_recorded(
    client, pool, settings, catalog, live_whitelist
) -> None:
    """The executor reports ``provided`` for an attempt the provider never answered: with no
    receipt, with a receipt signed by another org's key, with the provider's genuine receipt of
    another attempt. Each is refused and recorded as unreceipted; the citizen sees no answer.
    A genuine receipt of the attempt itself is taken (the same hostile flow, honest once)."""
    FORGERS["kyokai-kenpo"] = keys.load_org(settings, "kyokai-kenpo").signer()
    linkage = await _pension_linkage(pool, settings, 0)
    prefix = settings.task_queue_prefix
    async with workers(client, pool, settings, catalog, live_whitelist):
        [(honest, got)] = await _hostile(
            client,
            settings,
            [Plan(prefix=prefix, broker=linkage, ask=True, report="provided", receipt="genuine")],
        )
        assert got["reported"] == "taken" and got["receipt"] is not None
        ran = await _hostile(
            client,
            settings,
            [
                Plan(prefix=prefix, broker=linkage, ask=False, report="provided"),
                Plan(
                    prefix=prefix, broker=linkage, ask=False, report="provided", receipt="foreign"
                ),
                Plan(
                    prefix=prefix,
                    broker=linkage,
                    ask=False,
                    report="provided",
                    receipt="given",
                    given=got["receipt"],
                ),
            ],
        )
    assert await _outcome(pool, honest) == "provided"
    assert await _citizen_sees(pool, catalog, settings, honest) == ("provided", "hub")
    for wid, said in ran:
        assert said["reported"] == "LinkageRefused", said
        assert await _outcome(pool, wid) == "unreceipted"
        assert await _citizen_sees(pool, catalog, settings, wid) == ("unreceipted", None)
    # The provider answered the honest one only, and says so: nothing to reconcile there.
    hub = keys.load(settings).signer().public_key()
    flagged = {m.attempt_key for m in await records.reconcile(pool, hub, providers=["jps"])}
    keys_ = {(await _hub_record(pool, w)).attempt_key for w in [honest, *(w for w, _ in ran)]}
    assert not flagged & keys_
    # The outcome chain, with the receipt it keeps, verifies.
    async with pool.acquire() as conn, conn.transaction():
        assert await records.verify_outcomes(conn, await records.keyring(conn, hub)) is None


async def test_an_executor_hiding_an_answered_exchange_is_caught_by_the_providers_receipts(
    client, pool, settings, catalog, live_whitelist, cli
) -> None:
    """The provider answers; the executor reports nothing, or a failure (told before it asks,
    so ahead of the hub's collector). Silence hides nothing any more: the hub collects the
    provider's receipt and records provided. The failure is the executor's word, but the
    provider kept its receipt: the reconciliation lists that attempt, and the citizen sees both
    exchanges as provided (on the hub's record, on the provider's own)."""
    linkage = await _pension_linkage(pool, settings, 1)
    prefix = settings.task_queue_prefix
    async with workers(client, pool, settings, catalog, live_whitelist):
        ran = await _hostile(
            client,
            settings,
            [
                Plan(prefix=prefix, broker=linkage, ask=True, report="failed", report_first=True),
                Plan(prefix=prefix, broker=linkage, ask=True, report=None),
            ],
        )
        (failed, said_failed), (silent, said_nothing) = ran
        silent_key = (await _hub_record(pool, silent)).attempt_key
        collected = await wait_for_outcomes(pool, [silent_key])
    assert said_failed["reported"] == "taken" and said_nothing["reported"] is None
    assert await _outcome(pool, failed) == "failed"
    assert collected[silent_key].outcome == "provided"
    assert collected[silent_key].receipt == said_nothing["receipt"]["signature"]
    hub = keys.load(settings).signer().public_key()
    found = {m.attempt_key: m for m in await records.reconcile(pool, hub, providers=["jps"])}
    failed_key = (await _hub_record(pool, failed)).attempt_key
    assert found[failed_key].problem == "the provider answered; the executor reported it as failed"
    assert found[failed_key].requester == EXECUTOR and found[failed_key].reported == "failed"
    assert silent_key not in found
    assert await _citizen_sees(pool, catalog, settings, failed) == ("provided", "provider")
    assert await _citizen_sees(pool, catalog, settings, silent) == ("provided", "hub")
    # The operator's command says the same, and fails (it found a disagreement).
    status, out = await asyncio.to_thread(
        run, cli, "records", "reconcile", "--provider", "jps", "--settled", "0"
    )
    assert status == 1 and failed_key in out and silent_key not in out, out


async def _probe_attempt(
    pool: asyncpg.Pool,
    hub: records.RecordSigner,
    provider: str,
    *,
    allowed: bool = True,
    subject: str = "code",
) -> tuple[str, permits.SignedPermit]:
    """An attempt the hub permitted (its records, its signed permit) with ``provider``
    (``allowed=False``: one it denied; the permit is then one it never issued)."""
    wid, run_id, step = f"{BPF}/{EXECUTOR}/probe-{uuid.uuid4().hex[:8]}", "run", "pension"
    key = attempt_key(wid, run_id, step)
    req = LinkageRequest(
        requester=EXECUTOR,
        provider=provider,
        task="child-allowance",
        info="pension-benefit",
        subject="code",
        bpf=BPF,
        bpf_version=1,
        content_hash="sha256:x",
        step=step,
    )
    await records.write(
        pool,
        *(
            attempt_record(
                keeper=keeper,
                subject_code=subject,
                req=req,
                decision=Decision(allowed=allowed, reason="test"),
                decided_at=dt.datetime.now(dt.UTC),
                workflow_id=wid,
                run_id=run_id,
                key=key,
            )
            for keeper in (EXECUTOR, records.HUB)
        ),
        signer=hub,
    )
    now = dt.datetime.now(dt.UTC)
    permit = permits.Permit(
        workflow_id=wid,
        run_id=run_id,
        step=step,
        requester=EXECUTOR,
        provider=provider,
        task=req.task,
        info=req.info,
        whitelist_row="probe",
        legal_reference="probe",
        bpf=BPF,
        bpf_version=1,
        content_hash="sha256:x",
        subject_seal="none",
        issued_at=now,
        expires_at=now + dt.timedelta(minutes=5),
        key_id="probe",
    )
    return key, permits.sign(permit, hub.key)


def _receipt(provider: Ed25519PrivateKey, permit: permits.SignedPermit) -> AnswerReceipt:
    answer = {"benefits": []}
    signed = attest.signed_answer(provider, permit.signature, answer)
    return AnswerReceipt(
        permit=permit, digest=attest.answer_digest(answer), signature=signed["signature"]
    )


async def test_a_receipt_under_a_revoked_key_or_a_permit_not_the_hubs_is_refused(
    pool, settings
) -> None:
    """A provider's receipt counts while its key is registered and not revoked; once revoked
    (the key lost, say), a receipt made with it is the executor's word alone. A receipt of a
    permit the hub did not sign is refused too."""
    hub = records.RecordSigner(records.HUB, keys.load(settings).signer())
    name = f"probe-{uuid.uuid4().hex[:8]}"
    own = keys.OrgKeys(
        org=name,
        signing_key=keys.new_keys().signing_key,
        codec=keys.load(settings).codec,
        hub_signing="",
    )
    await parties.register(pool, hub.key, own.public(name))
    before, permit = await _probe_attempt(pool, hub, name)
    [taken] = await records.record_outcomes(
        pool, [(before, "provided", _receipt(own.signer(), permit))], hub
    )
    assert isinstance(taken, records.AttemptOutcome) and taken.outcome == "provided"
    assert taken.receipt is not None
    # A permit of the executor's making (not the hub's signature), receipted by the provider.
    forged_at, real = await _probe_attempt(pool, hub, name)
    forged = permits.sign(real.permit, Ed25519PrivateKey.generate())
    [refused] = await records.record_outcomes(
        pool, [(forged_at, "provided", _receipt(own.signer(), forged))], hub
    )
    assert isinstance(refused, records.AttemptOutcome) and refused.outcome == "unreceipted"
    assert await parties.revoke(pool, hub.key, name, reason="key lost")
    after, permit = await _probe_attempt(pool, hub, name)
    [late] = await records.record_outcomes(
        pool, [(after, "provided", _receipt(own.signer(), permit))], hub
    )
    assert isinstance(late, records.AttemptOutcome) and late.outcome == "unreceipted"
    assert late.receipt is None


async def test_a_provided_outcome_whose_kept_receipt_the_provider_did_not_sign_breaks_verify(
    pool, settings
) -> None:
    """Someone with the hub's key and the database appends a ``provided`` outcome whose kept
    receipt is not the provider's signature (hash and hub signature in order): verify names it.
    (In a transaction rolled back: the shared chain is left as it was.)"""
    hub = records.RecordSigner(records.HUB, keys.load(settings).signer())
    key, permit = await _probe_attempt(pool, hub, "jps")
    stranger = _receipt(Ed25519PrivateKey.generate(), permit)
    async with pool.acquire() as conn:
        ring = await records.keyring(conn, hub.key.public_key())
        forging = conn.transaction()
        await forging.start()
        try:
            await records.lock_platform(conn, records.OUTCOMES_LOCK)  # the writers' lock
            last = await conn.fetchrow(
                "SELECT chain_seq, outcome_hash FROM records.attempt_outcomes"
                " ORDER BY chain_seq DESC LIMIT 1"
            )
            record_hash = await conn.fetchval(
                "SELECT record_hash FROM records.access_records WHERE keeper = 'hub'"
                " AND attempt_key = $1",
                key,
            )
            seq = (last["chain_seq"] if last else 0) + 1
            o = records.AttemptOutcome(
                attempt_key=key,
                outcome="provided",
                record_hash=record_hash,
                chain_seq=seq,
                prev_hash=last["outcome_hash"] if last else records.GENESIS,
                recorded_at=dt.datetime.now(dt.UTC),
                answer_digest=stranger.digest,
                permit_signature=permit.signature,
                receipt=stranger.signature,
            )
            digest = records.outcome_hash(o)
            signature = base64.b64encode(
                hub.key.sign(f"renkei/outcome/v1|{seq}|{digest}".encode())
            ).decode()
            await conn.execute(
                "INSERT INTO records.attempt_outcomes (attempt_key, outcome, record_hash,"
                " chain_seq, prev_hash, outcome_hash, recorded_at, signer, signature,"
                " answer_digest, permit_signature, receipt)"
                " VALUES ($1, 'provided', $2, $3, $4, $5, $6, 'hub', $7, $8, $9, $10)",
                key,
                record_hash,
                seq,
                o.prev_hash,
                digest,
                o.recorded_at,
                signature,
                o.answer_digest,
                o.permit_signature,
                o.receipt,
            )
            found = await records.verify_outcomes(conn, ring)
        finally:
            await forging.rollback()
    assert found is not None and found.chain_seq == seq
    assert found.problem == "its provider's receipt is not signed with the provider's key"


async def test_a_receipt_no_permit_stands_behind_shows_the_citizen_no_exchange(
    pool, settings, base_settings, catalog
) -> None:
    """Two receipts that stand for no answer: the provider, on its own database role and with
    its own key, keeps one for an attempt the hub denied (no permit was issued: it signs a
    permit signature of its own making); the application's role keeps one in the provider's
    name for a permitted attempt, signed with a key of its own. The citizen sees neither
    exchange as provided, and the reconciliation names the first as the provider's receipt of
    a denied attempt, not as an executor hiding an answer."""
    hub = records.RecordSigner(records.HUB, keys.load(settings).signer())
    subject = uuid.uuid4()
    denied, _ = await _probe_attempt(pool, hub, "jps", allowed=False, subject=str(subject))
    permitted, permit = await _probe_attempt(pool, hub, "jps", subject=str(subject))
    made_up = base64.b64encode(uuid.uuid4().bytes * 4).decode()
    jps = keys.load_org(settings, "jps").signer()
    framed = _receipt(jps, permit)
    own = await create_pool(base_settings.database_url, max_size=1, role=party_role("jps"))
    try:
        assert await own.fetchval("SELECT current_user") == party_role("jps")
        signature = attest.signed_answer(
            keys.load_org(settings, "jps").signer(), made_up, {"benefits": []}
        )["signature"]
        await records.keep_receipt(
            own,
            records.ProviderReceipt(
                keeper="jps",
                attempt_key=denied,
                answer_digest=framed.digest,
                permit_signature=made_up,
                signature=signature,
                answered_at=dt.datetime.now(dt.UTC),
            ),
        )
    finally:
        await own.close()
    stranger = _receipt(Ed25519PrivateKey.generate(), permit)
    await records.keep_receipt(  # the application's role, in the provider's name
        pool,
        records.ProviderReceipt(
            keeper="jps",
            attempt_key=permitted,
            answer_digest=stranger.digest,
            permit_signature=permit.signature,
            signature=stranger.signature,
            answered_at=dt.datetime.now(dt.UTC),
        ),
    )
    # And the provider's own receipt of an exchange between two others (the hub brokered it
    # with another provider): it blames that exchange's requester for nothing.
    elsewhere, kenpo = await _probe_attempt(pool, hub, "kyokai-kenpo", subject=str(subject))
    own = await create_pool(base_settings.database_url, max_size=1, role=party_role("jps"))
    try:
        await records.keep_receipt(own, _kept("jps", elsewhere, _receipt(jps, kenpo)))
    finally:
        await own.close()
    seen = {
        r.application: (r.exchange, r.provided_per)
        for r in await records_for_subject(pool, catalog, subject, hub=hub.key.public_key())
    }
    assert seen == {
        denied.rsplit("/", 2)[0]: ("denied", None),
        permitted.rsplit("/", 2)[0]: ("pending", None),
        elsewhere.rsplit("/", 2)[0]: ("pending", None),
    }
    found = {
        m.attempt_key: m.problem
        for m in await records.reconcile(pool, hub.key.public_key(), providers=["jps"])
    }
    assert found[denied] == "the provider kept a receipt of an attempt the hub denied"
    assert found[permitted] == "a receipt its keeper's registered key did not sign"
    assert found[elsewhere] == "the hub brokered this attempt with another provider"


def _kept(keeper: str, key: str, receipt: AnswerReceipt) -> records.ProviderReceipt:
    return records.ProviderReceipt(
        keeper=keeper,
        attempt_key=key,
        answer_digest=receipt.digest,
        permit_signature=receipt.permit.signature,
        signature=receipt.signature,
        answered_at=dt.datetime.now(dt.UTC),
    )


async def test_an_orgs_own_database_login_keeps_and_reads_only_its_own_receipts(
    pool, settings
) -> None:
    """JPS on its own login (`renkei agencies db-login`), working as its role: it keeps a
    receipt in its own name; one in another provider's name is refused, it reads no other
    provider's receipts, changes none of its own, and without its role reads none at all."""
    from renkei.kernel.db import create_login

    hub = records.RecordSigner(records.HUB, keys.load(settings).signer())
    mine, _ = await _probe_attempt(pool, hub, "jps")
    theirs, kenpo = await _probe_attempt(pool, hub, "kyokai-kenpo")
    await records.keep_receipt(  # the platform's role: kyokai-kenpo's receipt is there
        pool,
        _kept(
            "kyokai-kenpo",
            theirs,
            _receipt(keys.load_org(settings, "kyokai-kenpo").signer(), kenpo),
        ),
    )
    password = uuid.uuid4().hex + uuid.uuid4().hex
    login = await create_login(pool, "jps", password)
    assert settings.database_url
    parts = urlsplit(settings.database_url)
    own = urlunsplit(parts._replace(netloc=f"{login}:{password}@{parts.netloc.rpartition('@')[2]}"))
    conn = await asyncpg.connect(own)
    try:
        await conn.execute(f"SET ROLE {party_role('jps')}")
        insert = (
            "INSERT INTO records.answer_receipts (keeper, attempt_key, answer_digest,"
            " permit_signature, signature, answered_at) VALUES ($1, $2, 'd', 'p', 's', now())"
        )
        await conn.execute(insert, "jps", mine)
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute(insert, "kyokai-kenpo", mine)
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute(insert, "city-minato", f"{mine}-x")
        seen = await conn.fetch("SELECT keeper, attempt_key FROM records.answer_receipts")
        assert seen and {r["keeper"] for r in seen} == {"jps"}
        assert theirs not in {r["attempt_key"] for r in seen}
        for change in (
            "UPDATE records.answer_receipts SET signature = 'x' WHERE keeper = 'jps'",
            "DELETE FROM records.answer_receipts WHERE keeper = 'jps'",
        ):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute(change)
        await conn.execute("RESET ROLE")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.fetch("SELECT 1 FROM records.answer_receipts LIMIT 1")
    finally:
        await conn.close()
