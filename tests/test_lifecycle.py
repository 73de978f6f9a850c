"""The lifecycle of a BPF version, the conformance kit and provider contracts."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import uuid
from typing import Any

import asyncpg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from temporalio.client import Client, WorkflowFailureError
from temporalio.exceptions import ApplicationError

from activities import approved as approved_module
from activities.agencies import providers_for
from activities.agencies.seed import sample_subjects
from activities.approved import ApprovalCheck
from activities.claims import Claims
from renkei.app.kit import (
    SCENARIOS_DIR,
    Behaviour,
    Report,
    ScenarioSet,
    check_provider,
    run_scenarios,
    scenarios_for,
    store_report,
)
from renkei.app.kit.clock import read
from renkei.bpf import registry
from renkei.bpf.admission import StartRefused, admit
from renkei.bpf.loader import parse_text, stored_hash
from renkei.bpf.review import ALTERED, review_version, suspension
from renkei.contracts.failures import Failure
from renkei.contracts.messages import LinkageRequest
from renkei.kernel import attest, keys, parties
from renkei.kernel.pseudonyms import derive_code
from renkei.kernel.settings import Settings
from tests.paths import SAMPLES_DIR
from whitelist import store
from whitelist.decide import JST
from whitelist.payloads import ActionReceipt, LocalTax
from workflows.interpreter import KIT_CLOCK

from .helpers import households, hub_key, operating_for, run, sdk, start, transition, workers

SAMPLES = sorted(p.stem for p in SCENARIOS_DIR.glob("*.yaml"))


async def _kit(
    client, pool, settings, catalog, live_whitelist, bpf, version=None, scenario_set=None
) -> Report:
    return await run_scenarios(
        client,
        pool,
        settings,
        catalog,
        live_whitelist,
        bpf,
        version,
        scenario_set or scenarios_for(bpf),
    )


@pytest.mark.parametrize("bpf", SAMPLES)
async def test_every_sample_bpf_passes_its_scenario_set(
    client: Client, pool: asyncpg.Pool, settings: Settings, catalog, live_whitelist, bpf: str
) -> None:
    report = await _kit(client, pool, settings, catalog, live_whitelist, bpf)
    assert report.passed, report.summary()
    assert len(report.scenarios) >= 2
    assert report.digest().startswith("sha256:")


async def test_the_kit_answers_a_wait_the_flow_came_to_after_the_script_looked(
    client: Client,
    pool: asyncpg.Pool,
    settings: Settings,
    catalog,
    live_whitelist,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The kit's script reads where the flow waits, then looks for the first thing due; the
    flow may come to the wait in between (a busy machine). Quiet there, the wait's deadline
    was the first thing due, and the kit ended the wait it was about to answer (the consent
    never given, the flow rejected, a verdict that hung on the machine's load). Every script's
    first look here comes too early, as it would on the busiest machine: the verdicts stand."""
    from renkei.app.kit import runner

    looks: set[str] = set()

    async def too_early(client: Client, wid: str, clock: Any, query: str, result_type: Any):
        found = await read(client, wid, clock, query, result_type)
        if query == "renkei.waiting" and found and wid not in looks:
            looks.add(wid)
            return []  # as if read a moment before the flow came to its wait
        return found

    monkeypatch.setattr(runner, "read", too_early)
    report = await _kit(client, pool, settings, catalog, live_whitelist, "move-notice-electricity")
    assert report.passed, report.summary()
    scripted = [x for x in scenarios_for("move-notice-electricity").scenarios if x.responses]
    assert len(looks) == len(scripted) >= 2  # each script's first look came too early


async def test_the_kit_reports_a_wrong_expectation_and_a_bad_answer(
    client: Client, pool: asyncpg.Pool, settings: Settings, catalog, live_whitelist
) -> None:
    good = scenarios_for("vaccination-relief-medical-check")
    first = good.scenarios[0]
    wrong = first.model_copy(
        update={
            "name": "expects the wrong amount",
            "expect": first.expect.model_copy(update={"result": {"payable": 1}}),
        }
    )
    bad_answer = first.model_copy(
        update={
            "name": "answers outside the schema",
            "providers": {
                "kyokai-kenpo": {"medical-benefit": Behaviour(respond={"insured": "maybe"})}
            },
        }
    )
    broken = ScenarioSet.model_validate(
        {
            "bpf": good.bpf,
            "scenarios": [wrong.model_dump(by_alias=True), bad_answer.model_dump(by_alias=True)],
        }
    )
    report = await _kit(client, pool, settings, catalog, live_whitelist, good.bpf, None, broken)
    assert not report.passed
    problems = {s.name: " ".join(s.problems) for s in report.scenarios}
    assert "result.payable = 350000, expected 1" in problems["expects the wrong amount"]
    assert "does not fit the schema" in problems["answers outside the schema"]


def _variant(bpf: str, version: int = 1) -> tuple[str, object]:
    text = (SAMPLES_DIR / "vaccination-relief.yaml").read_text()
    text = text.replace("bpf: vaccination-relief-medical-check", f"bpf: {bpf}")
    text = text.replace("version: 1", f"version: {version}")
    if version > 1:
        text = text.replace(
            "already_paid: relief.already_paid",
            'already_paid: relief.already_paid\n  revised: "true"',
        )
    return text, parse_text(text, f"{bpf}-v{version}.yaml")


async def test_in_operation_a_version_runs_only_on_content_the_conformance_body_signed(
    pool: asyncpg.Pool, settings: Settings, catalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The registry's rows are the database's: a superuser who replaces a version's content and
    its content hash together passes every check of content against hash. In operation the hub
    also asks for the conformance body's signed approval of exactly that content, so no linkage
    of a run pinned to it is brokered (nor does a run start on it: ``hub.resolve`` asks the
    same). No approval row written by anyone else holds (another key named as the body's, the
    hub's own key), while one the body signed with a key it has since replaced in a rotation
    still does, until that key is revoked for cause. The migration switch runs a version with
    no approval kept at all on content the operator listed, never other content."""
    body = f"conformance-{uuid.uuid4().hex[:6]}"
    hub = keys.load(settings).signer()

    def public(key: Ed25519PrivateKey) -> keys.PublicKeys:
        sealing = X25519PrivateKey.generate().public_key()
        return keys.PublicKeys(
            party=body,
            signing=base64.b64encode(keys.public_raw(key.public_key())).decode(),
            sealing=base64.b64encode(keys.public_raw(sealing)).decode(),
        )

    first_key = Ed25519PrivateKey.generate()
    await parties.register(pool, hub, public(first_key))
    bpf = f"vaccination-approved-{uuid.uuid4().hex[:6]}"
    _, loaded = _variant(bpf)
    assert await registry.register(pool, loaded)  # type: ignore[arg-type]
    approved = loaded.content_hash  # type: ignore[attr-defined]

    async def approval(key: Ed25519PrivateKey, content_hash: str, signing_id: str) -> None:
        signature = attest.version_approval(key, bpf, 1, content_hash, "sha256:report")
        await pool.execute(  # the application's role may add one: it is the signature that counts
            "INSERT INTO registry.approvals (bpf, version, content_hash, report_hash, signer,"
            " signing_id, signature) VALUES ($1, 1, $2, 'sha256:report', $3, $4, $5)",
            bpf,
            content_hash,
            body,
            signing_id,
            signature,
        )

    def check(accept_unsigned: frozenset[str] = frozenset()) -> ApprovalCheck:
        return ApprovalCheck(pool, hub.public_key(), body, accept_unsigned=accept_unsigned)

    assert "has no approval signed by the conformance body" in (
        await check().why_not(bpf, 1, approved) or ""
    )
    await approval(first_key, approved, public(first_key).signing_id)
    assert await check().why_not(bpf, 1, approved) is None
    second_key = Ed25519PrivateKey.generate()
    await parties.register(pool, hub, public(second_key))  # the body's key replaced
    assert await check().why_not(bpf, 1, approved) is None  # what it approved before still holds

    # A superuser replaces the content and its hash together: every hash check passes.
    altered = loaded.definition.model_copy(update={"task": "an-unrelated-task"})  # type: ignore[attr-defined]
    dumped = altered.model_dump(mode="json", by_alias=True)
    replaced = stored_hash(dumped)
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SET LOCAL ROLE NONE")
        await conn.execute("SET LOCAL session_replication_role = replica")
        await conn.execute(
            "UPDATE registry.bpf_versions SET definition = $2, content_hash = $3 WHERE bpf = $1",
            bpf,
            dumped,
            replaced,
        )
    found = await registry.fetch(pool, bpf, 1, "test")
    assert found is not None and found.content_hash == replaced
    assert found.definition.task == "an-unrelated-task"
    # Approvals for it that no one but the body could sign: another key named as the body's
    # current one, the hub's own key named as its own.
    await approval(Ed25519PrivateKey.generate(), replaced, public(second_key).signing_id)
    hub_id = keys.key_id_of(base64.b64encode(keys.public_raw(hub.public_key())).decode())
    await approval(hub, replaced, hub_id)
    why = await check().why_not(bpf, 1, replaced)
    assert why is not None and "has no approval signed by the conformance body" in why
    with pytest.raises(ApplicationError) as refused:
        await Claims(pool, catalog, check()).definition(bpf, 1, replaced, "city-minato")
    assert Failure.LINKAGE_REFUSED.caused(refused.value)
    assert "has no approval signed by the conformance body" in str(refused.value)
    # The migration switch names the contents it lets run: never other content.
    assert await check(frozenset({approved})).why_not(bpf, 1, replaced) is not None
    # Rows naming keys the body never had (with ids before the real one's) are not looked at.
    for n in range(approved_module.ROWS_LOOKED_AT + 4):
        await pool.execute(
            "INSERT INTO registry.approvals (id, bpf, version, content_hash, report_hash, signer,"
            " signing_id, signature) VALUES ($1, $2, 1, $3, 'sha256:r', $4, $5, 'x')",
            -1 - n - uuid.uuid4().int % 10**9,
            bpf,
            approved,
            body,
            f"k-made-up-{n}",
        )
    long_lived = check()
    assert await long_lived.why_not(bpf, 1, approved) is None
    # The body signs the new content itself: then it runs (the approval is the body's word),
    # once the hub looks again: a refusal is remembered for a moment, so that runs of a version
    # not approved do not each make the hub read the key registry.
    hub_check = check()
    assert await hub_check.why_not(bpf, 1, replaced) is not None
    await approval(second_key, replaced, public(second_key).signing_id)
    monkeypatch.setattr(approved_module, "REFUSED_FOR", 3600.0)
    assert await hub_check.why_not(bpf, 1, replaced) is not None
    monkeypatch.setattr(approved_module, "REFUSED_FOR", 0.0)
    assert await hub_check.why_not(bpf, 1, replaced) is None
    assert await check().why_not(bpf, 1, replaced) is None
    # A version with no approval kept at all runs only under the migration switch, and only
    # on content the operator listed there (the versions operating before signed approvals).
    unsigned = f"vaccination-unsigned-{uuid.uuid4().hex[:6]}"
    _, other = _variant(unsigned)
    assert await registry.register(pool, other)  # type: ignore[arg-type]
    other_hash = other.content_hash  # type: ignore[attr-defined]
    assert await check().why_not(unsigned, 1, other_hash) is not None
    assert await check(frozenset({approved})).why_not(unsigned, 1, other_hash) is not None
    assert await check(frozenset({other_hash})).why_not(unsigned, 1, other_hash) is None
    # The body's replaced key found stolen: revoked for cause, nothing it approved counts,
    # in a hub already running too once it looks again (APPROVED_FOR).
    stolen = public(first_key).signing_id
    assert await parties.revoke(pool, hub, body, reason="stolen", signing_id=stolen) == [stolen]
    assert stolen not in await parties.signing_keys(pool, hub.public_key(), body)
    assert await check().why_not(bpf, 1, approved) is not None
    monkeypatch.setattr(approved_module, "APPROVED_FOR", 3600.0)
    assert await long_lived.why_not(bpf, 1, approved) is None  # not looked at again yet
    monkeypatch.setattr(approved_module, "APPROVED_FOR", 0.0)
    assert await long_lived.why_not(bpf, 1, approved) is not None
    assert await check().why_not(bpf, 1, replaced) is None  # what the current key signed
    # The current key's row marked revoked by the application's role (no statement): the
    # default revocation still finds it by the hub's word, and revokes it for cause.
    current = public(second_key).signing_id
    await pool.execute(
        "UPDATE trust.parties SET revoked_at = now() WHERE party = $1 AND signing_id = $2",
        body,
        current,
    )
    assert await parties.revoke(pool, hub, body, reason="stolen") == [current]
    assert await parties.signing_keys(pool, hub.public_key(), body) == {}
    assert await check().why_not(bpf, 1, replaced) is not None


async def test_in_operation_a_version_runs_for_an_executor_only_on_that_executors_signature(
    pool: asyncpg.Pool, settings: Settings, catalog
) -> None:
    """A row of ``registry.operated_by`` makes the platform start a version's flows for its
    executor. Anyone with the application's role can add one, for any executor: the hub in
    operation takes a version as operating for an executor only with that executor's own
    signature over the version, its content and its name, by a key the hub registered for it
    and did not revoke for cause. No row, a row without a signature, another party's real
    signature, the executor's signature over other content or under a key id it never had: each
    is refused, at a start as at each linkage. The application's role can rewrite a row's
    signature (an executor's ``operate`` signs its own row again), never its executor, nor mark
    a row as one from before operations were signed (the migration switch's rows); and a
    version retired stays retired, so no signature from before its retirement runs it again."""
    hub = keys.load(settings).signer()
    body = f"conformance-{uuid.uuid4().hex[:6]}"
    victim, other = f"city-{uuid.uuid4().hex[:6]}", f"city-{uuid.uuid4().hex[:6]}"

    def public(party: str, key: Ed25519PrivateKey) -> keys.PublicKeys:
        sealing = X25519PrivateKey.generate().public_key()
        return keys.PublicKeys(
            party=party,
            signing=base64.b64encode(keys.public_raw(key.public_key())).decode(),
            sealing=base64.b64encode(keys.public_raw(sealing)).decode(),
        )

    own = {p: Ed25519PrivateKey.generate() for p in (body, victim, other)}
    for party, key in own.items():
        await parties.register(pool, hub, public(party, key))
    bpf = f"vaccination-operated-{uuid.uuid4().hex[:6]}"
    _, loaded = _variant(bpf)
    assert await registry.register(pool, loaded)  # type: ignore[arg-type]
    content = loaded.content_hash  # type: ignore[attr-defined]
    await pool.execute(
        "INSERT INTO registry.approvals (bpf, version, content_hash, report_hash, signer,"
        " signing_id, signature) VALUES ($1, 1, $2, 'sha256:report', $3, $4, $5)",
        bpf,
        content,
        body,
        public(body, own[body]).signing_id,
        attest.version_approval(own[body], bpf, 1, content, "sha256:report"),
    )

    def check(accept_unsigned: frozenset[str] = frozenset()) -> ApprovalCheck:
        return ApprovalCheck(pool, hub.public_key(), body, accept_unsigned=accept_unsigned)

    assert await check().why_not(bpf, 1, content) is None  # approved: the content may run
    why = await check().why_not(bpf, 1, content, victim)
    assert why == f"{bpf} v1 is not in operation for {victim}"

    async def row(signing_id: str | None, signature: str | None) -> None:
        await pool.execute(  # the application's role: add a row, or rewrite its signature
            "INSERT INTO registry.operated_by (bpf, version, executor, signing_id, signature)"
            " VALUES ($1, 1, $2, $3, $4) ON CONFLICT (bpf, version, executor) DO UPDATE"
            " SET signing_id = excluded.signing_id, signature = excluded.signature",
            bpf,
            victim,
            signing_id,
            signature,
        )

    victim_id = public(victim, own[victim]).signing_id
    not_signed = "is not signed by " + victim
    for signing_id, signature, refusal in [
        (None, None, "without its signature"),
        # another party's real signature, under its own key id and under the victim's
        (
            public(other, own[other]).signing_id,
            attest.version_operation(own[other], bpf, 1, content, victim),
            not_signed,
        ),
        (victim_id, attest.version_operation(own[other], bpf, 1, content, victim), not_signed),
        # the victim's own signature, over other content, for another executor, another version
        (
            victim_id,
            attest.version_operation(own[victim], bpf, 1, "sha256:" + "0" * 64, victim),
            not_signed,
        ),
        (victim_id, attest.version_operation(own[victim], bpf, 1, content, other), not_signed),
        (victim_id, attest.version_operation(own[victim], bpf, 2, content, victim), not_signed),
        # the victim's key under a key id the registry does not hold for it
        ("k-made-up", attest.version_operation(own[victim], bpf, 1, content, victim), not_signed),
    ]:
        await row(signing_id, signature)
        why = await check().why_not(bpf, 1, content, victim)
        assert why is not None and refusal in why, (signing_id, why)
        with pytest.raises(ApplicationError) as refused:
            await Claims(pool, catalog, check()).definition(bpf, 1, content, victim)
        assert Failure.LINKAGE_REFUSED.caused(refused.value) and refusal in str(refused.value)
    # Content the operator listed at the upgrade runs without a signature only on a row from
    # before operations were signed (the migration marked them; the application's role cannot).
    await row(None, None)
    listed = check(frozenset({content}))
    why = await listed.why_not(bpf, 1, content, victim)
    assert why is not None and "without its signature" in why
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await pool.execute(
            "INSERT INTO registry.operated_by (bpf, version, executor, before_signing)"
            " VALUES ($1, 1, $2, true)",
            bpf,
            other,
        )
    async with pool.acquire() as conn, conn.transaction():  # as the migration marked them
        await conn.execute("SET LOCAL ROLE NONE")
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="only by its signature"):
            async with conn.transaction():  # the owner too, with the triggers on
                await conn.execute(
                    "UPDATE registry.operated_by SET before_signing = true WHERE bpf = $1", bpf
                )
        await conn.execute("SET LOCAL session_replication_role = replica")
        await conn.execute(
            "UPDATE registry.operated_by SET before_signing = true"
            " WHERE bpf = $1 AND executor = $2",
            bpf,
            victim,
        )
    assert await check(frozenset({content})).why_not(bpf, 1, content, victim) is None
    assert await check().why_not(bpf, 1, content, victim) is not None  # not listed
    for column in ("executor", "before_signing"):  # the application's role rewrites neither
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await pool.execute(
                f"UPDATE registry.operated_by SET {column} = $2 WHERE bpf = $1",
                bpf,
                other if column == "executor" else False,
            )
    # The victim's own word runs it; its key revoked for cause, nothing it signed does.
    await row(victim_id, attest.version_operation(own[victim], bpf, 1, content, victim))
    assert await check().why_not(bpf, 1, content, victim) is None
    assert (await Claims(pool, catalog, check()).definition(bpf, 1, content, victim)).bpf == bpf
    assert await parties.revoke(pool, hub, victim, reason="key lost") == [victim_id]
    why = await check().why_not(bpf, 1, content, victim)
    assert why is not None and not_signed in why
    # A retired version stays retired, whoever writes its state.
    await pool.execute("UPDATE registry.bpf_versions SET state = 'retired' WHERE bpf = $1", bpf)
    for who in ("the application's role", "the table's owner"):
        async with pool.acquire() as conn, conn.transaction():
            if who == "the table's owner":
                await conn.execute("SET LOCAL ROLE NONE")
            with pytest.raises(asyncpg.InsufficientPrivilegeError, match="stays retired"):
                await conn.execute(
                    "UPDATE registry.bpf_versions SET state = 'operating' WHERE bpf = $1", bpf
                )


async def test_an_operate_is_signed_only_with_the_executors_own_registered_key(
    pool: asyncpg.Pool, settings: Settings
) -> None:
    """An executor's ``operate`` is signed with its own key file as this installation holds it:
    one with none here is refused, and no key is made for it; one whose key the key registry
    does not hold as its current key is refused before anything is written (the hub would take
    no run on it)."""
    from renkei.app import approvals
    from whitelist.models import role_of

    bpf = f"vaccination-keyed-{uuid.uuid4().hex[:6]}"
    _, loaded = _variant(bpf)
    assert await registry.register(pool, loaded)  # type: ignore[arg-type]
    await pool.execute("UPDATE registry.bpf_versions SET state = 'approved' WHERE bpf = $1", bpf)
    role = role_of(loaded.definition.owners.executors[0])  # type: ignore[attr-defined]
    assert role is not None

    async def operate(org: str) -> registry.Transition:
        return await registry.transition(
            pool,
            bpf,
            1,
            "operate",
            org,
            conformance_body=settings.conformance_body,
            actor_roles=frozenset({role}),
            operation_signer=approvals.operation_signer(settings),
        )

    keyless = f"city-{uuid.uuid4().hex[:6]}"
    with pytest.raises(registry.TransitionRefused, match=f"none of {keyless}'s is here"):
        await operate(keyless)
    assert not keys.org_keys_path(settings, keyless).exists()
    unregistered = f"city-{uuid.uuid4().hex[:6]}"
    keys.issue(settings, unregistered)  # a key file, its key never registered
    with pytest.raises(registry.TransitionRefused, match="does not hold as its current key"):
        await operate(unregistered)
    assert await registry.operated_by(pool, bpf, 1) == []
    assert await registry.state_of(pool, bpf, 1) == "approved"


async def test_a_definition_read_once_is_kept_and_its_state_is_read_every_time(
    pool: asyncpg.Pool,
) -> None:
    """registry.fetch reads a version's definition once per process (by its content hash), and
    its state at every call: a version retired since, or a newer one registered, is seen at
    once."""
    bpf = f"vaccination-cache-{uuid.uuid4().hex[:6]}"
    _, first = _variant(bpf)
    assert await registry.register(pool, first)  # type: ignore[arg-type]
    one = await registry.fetch(pool, bpf)
    again = await registry.fetch(pool, bpf)
    assert one is not None and again is not None
    assert again.definition is one.definition and one.definition.version == 1
    _, second = _variant(bpf, 2)
    assert await registry.register(pool, second)  # type: ignore[arg-type]
    newest = await registry.fetch(pool, bpf)
    assert newest is not None and newest.definition.version == 2
    assert newest.content_hash != one.content_hash
    assert newest.definition.result != one.definition.result  # the second's own content

    async def retire(version: int) -> None:  # as the lifecycle's last move leaves it
        await pool.execute(
            "UPDATE registry.bpf_versions SET state = 'retired' WHERE bpf = $1 AND version = $2",
            bpf,
            version,
        )

    await retire(2)
    back = await registry.fetch(pool, bpf)
    assert back is not None and back.definition is one.definition  # v1, from the cache
    await retire(1)
    assert await registry.fetch(pool, bpf) is None and await registry.fetch(pool, bpf, 1) is None


async def test_a_definition_altered_in_the_database_under_its_hash_runs_nowhere(
    pool: asyncpg.Pool, catalog
) -> None:
    """A registered version's content is fixed: the application's role cannot change it, nor
    its hash with it, nor remove it. A database superuser who turns the table's triggers off
    and changes a definition's content, leaving its hash: a process reading it checks it
    against its hash, so no start is admitted on it and the hub refuses the linkages of a run
    pinned to it. A process that read and checked it before keeps the content it checked."""
    bpf = f"vaccination-altered-{uuid.uuid4().hex[:6]}"
    _, first = _variant(bpf)
    assert await registry.register(pool, first)  # type: ignore[arg-type]
    checked, pinned_hash = first.definition, first.content_hash  # type: ignore[attr-defined]
    kept = f"vaccination-kept-{uuid.uuid4().hex[:6]}"
    _, other = _variant(kept)
    assert await registry.register(pool, other)  # type: ignore[arg-type]
    before = await registry.fetch(pool, kept)  # read and checked before the change
    assert before is not None
    altered = first.definition.model_copy(update={"task": "an-unrelated-task"})  # type: ignore[attr-defined]
    for change, args in (
        ("SET definition = $2, content_hash = $3", (altered.model_dump(mode="json"), "sha256:x")),
        ("SET source_text = $2", ("task: an-unrelated-task",)),
    ):
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="content of a registered"):
            await pool.execute(f"UPDATE registry.bpf_versions {change} WHERE bpf = $1", bpf, *args)
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="never removed"):
        await pool.execute("DELETE FROM registry.bpf_versions WHERE bpf = $1", bpf)
    for name in (bpf, kept):
        async with pool.acquire() as conn, conn.transaction():  # a superuser, triggers off
            await conn.execute("SET LOCAL ROLE NONE")
            await conn.execute("SET LOCAL session_replication_role = replica")
            await conn.execute(
                "UPDATE registry.bpf_versions SET definition = jsonb_set(definition, '{task}',"
                " to_jsonb('an-unrelated-task'::text)) WHERE bpf = $1",
                name,
            )
    with pytest.raises(registry.DefinitionAltered, match="changed in the database"):
        await registry.fetch(pool, bpf)
    with pytest.raises(StartRefused) as refused:
        await admit(
            pool,
            catalog,
            "test",
            bpf=bpf,
            version=None,
            executor=checked.owners.executors[0],
            subject="A" * 20,
            inputs={},
            hub=hub_key().public_key(),
        )
    assert refused.value.kind == "UnknownBpf" and "content hash" in refused.value.reason
    with pytest.raises(ApplicationError) as denied:
        await Claims(pool, catalog).definition(bpf, 1, pinned_hash, "city-minato")
    assert Failure.LINKAGE_REFUSED.caused(denied.value)
    after = await registry.fetch(pool, kept)
    assert after is not None and after.definition is before.definition
    assert after.definition.task == other.definition.task != "an-unrelated-task"  # type: ignore[attr-defined]
    # Every other read of a definition checks it too: the changed version is listed nowhere as
    # runnable (the catalog page, schedules, notifications), no call may name it, and no
    # transition moves it (its owners, who may move it, come from its definition).
    assert not {bpf, kept} & {r.definition.bpf for r in await registry.runnable(pool, "test")}
    assert (await registry.known(pool)).versions(bpf) == []
    # Nor does any page or message show what was written into it: the citizen page's titles
    # and the outbox's "waits for" (versions_of) leave it out, `renkei bpf list` says so.
    shown = await registry.versions_of(pool, {bpf, kept, "child-allowance-check"})
    assert set(shown) == {"child-allowance-check"}
    listed = {(r.bpf, r.version): r for r in await registry.listing(pool)}
    assert listed[(bpf, 1)].title == registry.ALTERED and listed[(bpf, 1)].task == "?"
    assert listed[("child-allowance-check", 1)].title != registry.ALTERED
    with pytest.raises(registry.TransitionRefused, match="content hash"):
        await transition(
            pool,
            bpf,
            1,
            "submit",
            checked.owners.definer,
            roles_from=catalog,
            conformance_body="digital-agency",
        )
    assert await pool.fetchval("SELECT state FROM registry.bpf_versions WHERE bpf = $1", bpf) == (
        "draft"
    )
    # Operating when it was changed: no one can keep it running, but its recorded definers can
    # still retire it (who they are is not in its content), and no one else can.
    await operating_for(pool, checked.owners.executors[0], bpf)
    # Reviewed against the law, it conforms on no day (its earlier verdict does not stand in).
    reviewed = await review_version(pool, catalog, bpf, 1)
    assert reviewed is not None and reviewed.stops_on is not None, reviewed
    assert reviewed.problems == [ALTERED] and reviewed.definer == checked.owners.definer
    assert await suspension(pool, bpf, 1, reviewed.stops_on) is not None
    with pytest.raises(registry.TransitionRefused, match="is not"):
        await transition(
            pool, bpf, 1, "retire", "digital-agency", conformance_body="digital-agency"
        )
    retired = await transition(
        pool, bpf, 1, "retire", checked.owners.definer, conformance_body="digital-agency"
    )
    assert retired.to_state == "retired"


async def test_a_transition_validates_the_registered_content_not_a_changed_source_text(
    pool: asyncpg.Pool, catalog
) -> None:
    """The source text kept beside a version gives validation its line numbers only while it is
    still the text of the content registered: changed in the database (a superuser, triggers
    off) to another content, it is set aside and the registered content is what validates, so
    a text written to pass cannot carry a version that would not."""
    bpf = f"vaccination-text-{uuid.uuid4().hex[:6]}"
    text, loaded = _variant(bpf)
    assert await registry.register(pool, loaded)  # type: ignore[arg-type]
    other = text.replace("task: vaccination-health-damage-relief", "task: an-unrelated-task")
    assert other != text
    async with pool.acquire() as conn, conn.transaction():  # a superuser, triggers off
        await conn.execute("SET LOCAL ROLE NONE")
        await conn.execute("SET LOCAL session_replication_role = replica")
        await conn.execute(
            "UPDATE registry.bpf_versions SET source_text = $2 WHERE bpf = $1", bpf, other
        )
    # Past validation (the registered content passes it; the changed text names a task no row
    # knows), the submission stops only where any would without a conformance report.
    with pytest.raises(registry.TransitionRefused) as refused:
        await transition(
            pool,
            bpf,
            1,
            "submit",
            loaded.definition.owners.definer,  # type: ignore[attr-defined]
            roles_from=catalog,
            conformance_body="digital-agency",
        )
    assert "no passing conformance report" in str(refused.value), refused.value
    # The law-change review judges the registered content too, not the changed text.
    reviewed = await review_version(pool, catalog, bpf, 1)
    assert reviewed is not None and reviewed.stops_on is None, reviewed
    assert reviewed.definer == loaded.definition.owners.definer  # type: ignore[attr-defined]


async def test_a_definition_whose_numbers_the_database_writes_otherwise_still_runs(
    pool: asyncpg.Pool,
) -> None:
    """PostgreSQL gives a number back in its own notation (1e+16 as 10000000000000000): the
    stored JSON then hashes otherwise, but the definition it parses to is the one registered,
    and runs; the check refuses changed content, not the database's way of writing numbers."""
    bpf = f"vaccination-numbers-{uuid.uuid4().hex[:6]}"
    text, _ = _variant(bpf)
    text = text.replace(
        "claimed_amount: {type: integer, min: 0}",
        "claimed_amount: {type: integer, min: 0, max: 1e+16}",
    )
    loaded = parse_text(text, f"{bpf}.yaml")
    assert await registry.register(pool, loaded)
    stored = await pool.fetchval("SELECT definition FROM registry.bpf_versions WHERE bpf = $1", bpf)
    assert stored_hash(stored) != loaded.content_hash  # the database's notation, not ours
    found = await registry.fetch(pool, bpf)
    assert found is not None and found.definition == loaded.definition


async def test_a_definition_the_database_would_give_back_otherwise_is_not_registered(
    pool: asyncpg.Pool,
) -> None:
    """PostgreSQL keeps -0.0 as 0: the definition read back would have another hash than the
    one registered, and every start would be refused. It is refused at registration instead,
    with the reason, and nothing of it is kept."""
    bpf = f"vaccination-negzero-{uuid.uuid4().hex[:6]}"
    text, _ = _variant(bpf)
    text = text.replace(
        "claimed_amount: {type: integer, min: 0}", "claimed_amount: {type: integer, min: -0.0}"
    )
    with pytest.raises(registry.RegistryConflict, match="does not come back from the database"):
        await registry.register(pool, parse_text(text, f"{bpf}.yaml"))
    assert await registry.fetch(pool, bpf) is None
    assert not await pool.fetchval("SELECT count(*) FROM registry.bpf_versions WHERE bpf = $1", bpf)


async def test_a_version_goes_from_draft_to_operating_and_no_state_is_skipped(
    client: Client, pool: asyncpg.Pool, settings: Settings, catalog, live_whitelist
) -> None:
    bpf = f"vaccination-lc-{uuid.uuid4().hex[:6]}"
    _, loaded = _variant(bpf)
    assert await registry.register(pool, loaded)  # type: ignore[arg-type]
    body = settings.conformance_body

    async def move(action: registry.Action, actor: str, version: int = 1) -> registry.Transition:
        return await transition(
            pool,
            bpf,
            version,
            action,
            actor,
            roles_from=catalog,
            conformance_body=body,
            signed_in=settings,
        )

    # A hub in operation never resolves a run on the kit's clock, even if told to.
    operation = settings.model_copy(update={"mode": "operation", "kit_clock": True})
    person = next(
        p
        for h in households(settings)
        for p in h.members
        if h.municipality == "city-minato" and p.medical_payments
    )
    flow = start(
        bpf,
        "city-minato",
        derive_code(keys.load(settings).hub_key, "city-minato", person.subject_id),
        inputs={"insurer": "kyokai-kenpo", "claimed_amount": 1_000_000},
    )
    async with workers(client, pool, operation, catalog, live_whitelist):
        with pytest.raises(WorkflowFailureError) as refused:
            await (await sdk(client, operation).start(flow)).result()
    assert "is draft: only an operating version starts in operation mode" in str(
        refused.value.cause
    )

    with pytest.raises(registry.TransitionRefused, match="no state can be skipped"):
        await move("operate", "city-minato")
    with pytest.raises(registry.TransitionRefused, match="no passing conformance report"):
        await move("submit", "mhlw")
    scenario_set = scenarios_for("vaccination-relief-medical-check").model_copy(update={"bpf": bpf})
    report = await _kit(client, pool, settings, catalog, live_whitelist, bpf, 1, scenario_set)
    assert report.passed, report.summary()
    digest = await store_report(pool, report)
    with pytest.raises(registry.TransitionRefused, match="for the definer"):
        await move("submit", "city-minato")
    await move("submit", "mhlw")
    with pytest.raises(registry.TransitionRefused, match="for the conformance-body"):
        await move("approve", "mhlw")
    await move("approve", body)
    with pytest.raises(registry.TransitionRefused, match="for the executor"):
        await move("operate", "jps")
    await move("operate", "city-minato")  # for itself: the flow below is city-minato's
    assert (
        await pool.fetchval(
            "SELECT conformance_report_hash FROM registry.bpf_versions WHERE bpf = $1", bpf
        )
        == digest
    )
    assert [(t.to_state, t.actor, t.actor_role) for t in await registry.history(pool, bpf, 1)] == [
        ("conformance-passed", "mhlw", "definer"),
        ("approved", body, "conformance-body"),
        ("operating", "city-minato", "executor"),
    ]

    # Operating: it starts in operation mode now.
    async with workers(client, pool, operation, catalog, live_whitelist):
        now_operating = start(bpf, flow.executor, flow.subject, inputs=flow.inputs)
        operating = await sdk(client, operation).start(now_operating)
        result = await operating.result()
        assert result.pin.version == 1 and result.result["payable"] > 0
        markers = [
            e.marker_recorded_event_attributes.SerializeToString()
            async for e in operating.fetch_history_events()
            if e.HasField("marker_recorded_event_attributes")
        ]
        assert not any(KIT_CLOCK.encode() in m for m in markers)  # not a kit run

        # A second version is a draft beside the operating one: operation still runs v1.
        _, v2 = _variant(bpf, 2)
        await registry.register(pool, v2)  # type: ignore[arg-type]
        latest = await registry.fetch(pool, bpf, None, "operation")
        assert latest is not None and latest.definition.version == 1
        again = start(bpf, flow.executor, flow.subject, inputs=flow.inputs)
        assert (await (await sdk(client, operation).start(again)).result()).pin.version == 1

        # Retired, it no longer starts.
        await move("retire", "mhlw")
        with pytest.raises(registry.TransitionRefused, match="is retired"):
            await move("retire", "mhlw")
        late = start(bpf, flow.executor, flow.subject, inputs=flow.inputs, version=1)
        with pytest.raises(WorkflowFailureError) as gone:
            await (await sdk(client, operation).start(late)).result()
    assert "v1 is retired" in str(gone.value.cause)


@pytest.mark.filterwarnings("ignore:Pydantic serializer warnings")  # the broken provider's
async def test_sample_providers_meet_their_contracts_and_a_broken_one_does_not(
    pool: asyncpg.Pool, settings: Settings, catalog, live_whitelist
) -> None:
    hub_key = keys.load(settings).hub_key
    for org in ("city-minato", "kyokai-kenpo", "jps", "sample-denki"):
        known = {
            info: derive_code(hub_key, org, s)
            for info, s in sample_subjects(org, households(settings)).items()
        }
        checks = await check_provider(
            org, providers_for(org, pool), catalog, live_whitelist, pool, known
        )
        assert checks and all(c.passed for c in checks), [c for c in checks if not c.passed]

    async def wrong_shape(req: LinkageRequest) -> LocalTax:
        return LocalTax.model_construct(fiscal_year=2025, taxable_income="a lot")  # type: ignore[arg-type]

    async def crashes_on_strangers(req: LinkageRequest) -> LocalTax:
        if req.subject == known["local-tax"]:
            return LocalTax(fiscal_year=2025, taxable_income=1, municipal_tax=0, dependents=0)
        raise RuntimeError("KeyError in the tax ledger")

    known = {
        info: derive_code(hub_key, "city-minato", s)
        for info, s in sample_subjects("city-minato", households(settings)).items()
    }
    broken = {"local-tax": wrong_shape}
    checks = await check_provider("city-minato", broken, catalog, live_whitelist, pool, known)
    failed = {(c.info, c.check): c.detail for c in checks if not c.passed}
    assert ("resident-record", "implemented") in failed
    assert "taxable_income" in failed[("local-tax", "answer fits the schema")]
    checks = await check_provider(
        "city-minato", {"local-tax": crashes_on_strangers}, catalog, live_whitelist, pool, known
    )
    failed = {c.info: c.detail for c in checks if not c.passed and c.check.startswith("a subject")}
    assert failed["local-tax"] == "raised RuntimeError: KeyError in the tax ledger"
    # A partner's action: its receipt must fit, for a request of the action's fields and no code.

    async def wants_a_code(req: LinkageRequest) -> ActionReceipt:
        if not req.subject:
            raise RuntimeError("no customer found for an empty code")
        return ActionReceipt(done=True, reference="r")

    checks = await check_provider(
        "sample-denki",
        {"electricity-move-notice": wants_a_code},
        catalog,
        live_whitelist,
        pool,
        {},
    )
    failed = {c.check: c.detail for c in checks if not c.passed}
    assert (
        "no customer found" in failed["a receipt that fits, for the request's fields and no code"]
    )


def test_lifecycle_commands_refuse_a_skip(cli, pool, monkeypatch) -> None:
    from .helpers import run

    code, token = run(cli, "operators", "add", "minato-ops", "--party", "city-minato")
    assert code == 0
    monkeypatch.setenv("RENKEI_OPERATOR_TOKEN", token.splitlines()[0])
    code, out = run(cli, "bpf", "operate", "child-allowance-check", "1")
    assert code == 1 and "no state can be skipped" in out
    code, out = run(cli, "bpf", "list")
    assert code == 0 and "child-allowance-check\tv1\tdraft" in out


# -- what passes the checks runs: the lifecycle validates each step towards operation ----------


async def _passed(pool: asyncpg.Pool, bpf: str, version: int = 1) -> None:
    """A passing conformance report for the registered content (the kit itself is tested above:
    these tests are about the validation each transition makes)."""
    found = await registry.fetch(pool, bpf, version, "test")
    assert found is not None
    report = Report(
        bpf=bpf, version=version, content_hash=found.content_hash, passed=True, scenarios=[]
    )
    await store_report(pool, report)


def _renamed(path, **names: str):
    text = path.read_text(encoding="utf-8")
    for old, new in names.items():
        text = text.replace(old, new)
    return parse_text(text, f"{path.stem}.yaml")


async def test_a_version_that_calls_a_flow_not_operating_cannot_operate(
    pool: asyncpg.Pool, settings: Settings, catalog
) -> None:
    suffix = uuid.uuid4().hex[:6]
    child_id, parent_id = f"allowance-{suffix}", f"one-stop-{suffix}"
    child = _renamed(SAMPLES_DIR / "child-allowance.yaml", **{"child-allowance-check": child_id})
    parent = _renamed(
        SAMPLES_DIR.parent.parent / "tests" / "definitions" / "one-stop-probe.yaml",
        **{"one-stop-probe": parent_id, "child-allowance-check": child_id},
    )
    for loaded in (child, parent):
        assert await registry.register(pool, loaded)  # type: ignore[arg-type]
        await _passed(pool, loaded.definition.bpf)

    async def move(bpf: str, action: registry.Action, actor: str) -> registry.Transition:
        return await transition(
            pool,
            bpf,
            1,
            action,
            actor,
            roles_from=catalog,
            conformance_body=settings.conformance_body,
            catalog=catalog,
        )

    await move(parent_id, "submit", "mhlw")
    await move(parent_id, "approve", settings.conformance_body)
    with pytest.raises(registry.TransitionRefused) as refused:
        await move(parent_id, "operate", "city-minato")
    assert "does not pass validation now, so it cannot operate" in str(refused.value)
    assert f"calls {child_id}, which has no operating version (v1 draft)" in str(refused.value)
    assert await registry.state_of(pool, parent_id, 1) == "approved"

    for action, actor in (("submit", "mhlw"), ("approve", settings.conformance_body)):
        await move(child_id, action, actor)  # type: ignore[arg-type]
    await move(child_id, "operate", "city-minato")
    assert (await move(parent_id, "operate", "city-minato")).to_state == "operating"


async def test_a_version_registered_without_validation_does_not_reach_operation(
    pool: asyncpg.Pool, settings: Settings, catalog
) -> None:
    # A definer with database access could register a draft no validation passed (the purpose
    # laundering probe): its conformance report does not carry it past submit.
    bpf = f"laundering-{uuid.uuid4().hex[:6]}"
    loaded = _renamed(
        SAMPLES_DIR.parent.parent / "tests" / "definitions" / "laundering-probe.yaml",
        **{"laundering-probe": bpf},
    )
    assert await registry.register(pool, loaded)  # type: ignore[arg-type]
    await _passed(pool, bpf)
    with pytest.raises(registry.TransitionRefused) as refused:
        await registry.transition(
            pool, bpf, 1, "submit", "mhlw", conformance_body=settings.conformance_body
        )
    assert "serves task 'vaccination-health-damage-relief'" in str(refused.value)
    assert "laundering-probe.yaml:16: steps[0].call.bpf:" in str(refused.value)
    assert await registry.state_of(pool, bpf, 1) == "draft"


async def test_a_start_naming_an_org_of_the_role_that_does_not_serve_the_item_is_refused(
    pool: asyncpg.Pool, settings: Settings, catalog
) -> None:
    from renkei.bpf.admission import StartRefused, admit
    from whitelist.models import Org

    # An org of the role that does not (yet) serve local tax: the run is refused at admission,
    # before any step, instead of its linkage failing with "does not implement".
    nerima = Org(id="city-nerima", ja="練馬区", en="Nerima City", roles=("municipal-mayor",))
    wider = catalog.model_copy(update={"orgs": {**catalog.orgs, nerima.id: nerima}})
    code = "A" * 20
    with pytest.raises(StartRefused) as refused:
        await admit(
            pool,
            wider,
            "test",
            bpf="child-allowance-check",
            version=None,
            executor="city-minato",
            subject=code,
            inputs={"previous_municipality": "city-nerima"},
            hub=hub_key().public_key(),
        )
    assert refused.value.kind == "InvalidInputs"
    assert refused.value.reason == (
        "previous_municipality: city-nerima does not serve info item 'local-tax', which step tax"
        " asks of it (served by city-minato, city-shibuya)"
    )
    found, _ = await admit(
        pool,
        wider,
        "test",
        bpf="child-allowance-check",
        version=None,
        executor="city-minato",
        subject=code,
        inputs={"previous_municipality": "city-shibuya"},
        hub=hub_key().public_key(),
    )
    assert found.definition.bpf == "child-allowance-check"


def test_bpf_validate_knows_the_registry_states_of_what_a_flow_calls(cli) -> None:
    from .helpers import run

    probe = SAMPLES_DIR.parent.parent / "tests" / "definitions" / "one-stop-probe.yaml"
    code, out = run(cli, "bpf", "validate", str(probe))
    assert code == 0 and "ok: " in out
    assert (
        "steps[2].call.bpf: calls child-allowance-check, which has no operating version"
        " (v1 draft): in operation the call is refused until it operates"
    ) in out


async def test_each_executor_puts_a_version_into_operation_for_itself(
    client: Client,
    pool: asyncpg.Pool,
    settings: Settings,
    catalog,
    live_whitelist,
    cli,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """city-minato's `operate` puts a municipal flow into operation for city-minato alone:
    city-shibuya gets no schedule and cannot start it until it operates the version itself."""
    from renkei.app.schedules import PREFIX, desired
    from renkei.contracts.names import workflow_id
    from renkei.kernel import attest

    bpf = f"school-entry-{uuid.uuid4().hex[:6]}"
    text = (SAMPLES_DIR / "school-entry-notice.yaml").read_text()
    loaded = parse_text(text.replace("bpf: school-entry-notice", f"bpf: {bpf}"), f"{bpf}.yaml")
    assert await registry.register(pool, loaded)
    version = loaded.definition.version
    scenario_set = scenarios_for("school-entry-notice").model_copy(update={"bpf": bpf})
    report = await _kit(client, pool, settings, catalog, live_whitelist, bpf, version, scenario_set)
    assert report.passed, report.summary()
    await store_report(pool, report)

    async def move(action: registry.Action, actor: str) -> registry.Transition:
        return await transition(
            pool,
            bpf,
            version,
            action,
            actor,
            roles_from=catalog,
            conformance_body=settings.conformance_body,
            signed_in=settings,
        )

    await move("submit", "mhlw")
    await move("approve", settings.conformance_body)
    assert (await move("operate", "city-minato")).from_state == "approved"
    with pytest.raises(registry.TransitionRefused, match="already operating for city-minato"):
        await move("operate", "city-minato")
    assert await registry.operated_by(pool, bpf, version) == ["city-minato"]

    operation = settings.model_copy(update={"mode": "operation"})
    schedules = [s for s in await desired(pool, operation, catalog) if s.startswith(PREFIX + bpf)]
    assert schedules == [f"{PREFIX}{bpf}/city-minato/6-school-year-start"]

    def platform_start(executor: str) -> object:
        person = next(
            p for h in households(settings) if h.municipality == executor for p in h.members
        )
        subject = derive_code(keys.load(settings).hub_key, executor, person.subject_id)
        flow = start(bpf, executor, subject, trigger="life-event")
        word = attest.trigger_start(
            keys.load(settings).signer(),
            workflow_id(bpf, executor, flow.case_ref),
            "life-event",
            bpf,
            executor,
            subject,
        )
        return flow.model_copy(update={"attestation": word})

    async with workers(client, pool, operation, catalog, live_whitelist):
        minato = await (await sdk(client, operation).start(platform_start("city-minato"))).result()
        assert minato.outcome == "completed"
        # city-shibuya, with the platform's own word for the start, is refused by the hub.
        with pytest.raises(WorkflowFailureError) as refused:
            await (await sdk(client, operation).start(platform_start("city-shibuya"))).result()
        assert "is operating, but not for city-shibuya" in str(refused.value.cause)
        # A row the application's role adds for city-shibuya, with no signature of its own or
        # with city-minato's: the platform's start is refused all the same. (The hub's refusal
        # is not remembered here, so that each row is looked at, and the operate below counts
        # at once.)
        monkeypatch.setattr(approved_module, "REFUSED_FOR", 0.0)
        for signing_id, signature in [
            (None, None),
            (
                keys.issue(settings, "city-minato").public("city-minato").signing_id,
                attest.version_operation(
                    keys.issue(settings, "city-minato").signer(),
                    bpf,
                    version,
                    loaded.content_hash,
                    "city-shibuya",
                ),
            ),
        ]:
            await pool.execute(
                "INSERT INTO registry.operated_by (bpf, version, executor, signing_id, signature)"
                " VALUES ($1, $2, 'city-shibuya', $3, $4) ON CONFLICT (bpf, version, executor)"
                " DO UPDATE SET signing_id = excluded.signing_id, signature = excluded.signature",
                bpf,
                version,
                signing_id,
                signature,
            )
            with pytest.raises(WorkflowFailureError) as refused:
                await (await sdk(client, operation).start(platform_start("city-shibuya"))).result()
            assert (
                "put into operation for city-shibuya without its signature"
                if signature is None
                else "is not signed by city-shibuya"
            ) in str(refused.value.cause)
        code, out = await asyncio.to_thread(run, cli, "bpf", "verify", bpf, str(version))
        assert code == 1 and "OK   city-minato: puts it into operation" in out, out
        assert "BAD  city-shibuya: puts it into operation" in out, out
        # nor does the platform schedule its scans for city-shibuya
        schedules = [
            s for s in await desired(pool, operation, catalog) if s.startswith(PREFIX + bpf)
        ]
        assert schedules == [f"{PREFIX}{bpf}/city-minato/6-school-year-start"]

        # city-shibuya puts it into operation for itself (signing the row someone else added):
        # now it runs there too.
        later = await move("operate", "city-shibuya")
        assert (later.from_state, later.to_state) == ("operating", "operating")
        shibuya = await (
            await sdk(client, operation).start(platform_start("city-shibuya"))
        ).result()
        assert shibuya.outcome == "completed"
        # The law ends the flow's task (a period the hub seals), and the application's role
        # appends a review that finds the version conformant today (reviews are rows it can
        # append): admission reads no stop, but the hub, checking the version against its own
        # sealed whitelist, admits no new run. The task back in force, the version starts.
        task = loaded.definition.task
        today = dt.datetime.now(JST).date()
        was = (await store.fetch_periods(pool)).get(("task", task))
        hub = keys.load(settings).signer()

        async def period(begins: dt.date | None, ends: dt.date | None) -> None:
            outcome = await store.set_period(
                pool, "task", task, begins, ends, by="test", effective=today, hub=hub
            )
            await live_whitelist.wait_for_version(outcome.version)

        await period(dt.date(2000, 1, 1), today - dt.timedelta(days=1))
        try:
            await pool.execute(
                "INSERT INTO registry.reviews (load_id, source, bpf, version, effective,"
                " conformant, affected, executors, problems) SELECT max(id), 'forged', $1, $2,"
                " $3, true, false, '{}', '[]' FROM whitelist.loads",
                bpf,
                version,
                today,
            )
            assert await suspension(pool, bpf, version, today) is None  # no row stops it
            with pytest.raises(WorkflowFailureError) as stopped:
                await (await sdk(client, operation).start(platform_start("city-minato"))).result()
            assert "does not conform to the whitelist in force today" in str(stopped.value.cause)
        finally:
            await period(was.valid_from if was else None, was.valid_to if was else None)
        again = await (await sdk(client, operation).start(platform_start("city-minato"))).result()
        assert again.outcome == "completed"
    schedules = [s for s in await desired(pool, operation, catalog) if s.startswith(PREFIX + bpf)]
    assert sorted(schedules) == [
        f"{PREFIX}{bpf}/city-minato/6-school-year-start",
        f"{PREFIX}{bpf}/city-shibuya/6-school-year-start",
    ]
    assert [(t.to_state, t.actor) for t in await registry.history(pool, bpf, version)][-2:] == [
        ("operating", "city-minato"),
        ("operating", "city-shibuya"),
    ]
    # The command runs its own event loop: off this one.
    code, out = await asyncio.to_thread(run, cli, "bpf", "history", bpf, str(version))
    assert code == 0 and out.splitlines()[-1] == "operating for: city-minato, city-shibuya"
    # An operator of city-shibuya (its executor role), signed in: operating it again is refused.
    from renkei.app.actors import TOKEN_VARIABLE
    from renkei.app.cli import app
    from renkei.app.web.codec_server import add_operator

    token = await add_operator(pool, f"op-{uuid.uuid4().hex[:8]}", "city-shibuya", "executor")
    again = await asyncio.to_thread(
        cli.invoke, app, ["bpf", "operate", bpf, str(version)], env={TOKEN_VARIABLE: token}
    )
    assert again.exit_code == 1 and "already operating for city-shibuya" in again.output
    code, out = await asyncio.to_thread(run, cli, "bpf", "verify", bpf, str(version))
    assert code == 0 and "OK   city-shibuya: puts it into operation" in out, out
    # Retired by its definer, it operates for no one (and leaves no schedule to other tests).
    await move("retire", "mhlw")
    assert not [s for s in await desired(pool, operation, catalog) if s.startswith(PREFIX + bpf)]
