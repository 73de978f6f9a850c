"""The hub collects "provided" from the provider's own receipt (attacker tests).

A flow no longer tells the hub that an attempt was provided: the provider's gate keeps its
receipt with the hub's permit before the answer leaves, and the hub's collector records
``provided`` from it. A provider (on its own database role) that keeps a receipt row the hub
cannot stand behind (signed with another key, for another attempt's permit, for a permit the hub
did not sign, under a key revoked before) gets nothing recorded, not even ``unreceipted``: the
executor's own outcome of that attempt is still taken afterwards.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import uuid

import asyncpg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from activities.attempts import attempt_record
from renkei.contracts.messages import LinkageRequest
from renkei.kernel import keys, parties, permits, records
from renkei.kernel.db import APP_ROLE, _init_connection, connect, create_pool, party_role
from renkei.kernel.permits import AnswerReceipt
from renkei.kernel.settings import Settings
from whitelist.decide import Decision

from .test_receipts import _probe_attempt, _receipt


def _kept(keeper: str, key: str, receipt: AnswerReceipt) -> records.ProviderReceipt:
    """A receipt row as a gate keeps it: with the permit it answers."""
    return records.ProviderReceipt(
        keeper=keeper,
        attempt_key=key,
        answer_digest=receipt.digest,
        permit_signature=receipt.permit.signature,
        signature=receipt.signature,
        answered_at=dt.datetime.now(dt.UTC),
        permit=receipt.permit,
    )


async def _decided_by_gate(
    pool: asyncpg.Pool, settings: Settings, key: str, permit: permits.SignedPermit, allowed: bool
) -> None:
    """The provider's gate's own record of the attempt ``key`` (its chain, its key), as it
    writes one for every request it decides: admitted, or refused."""
    mine, signer = _gate_record(settings, key, permit, allowed)
    await records.write(pool, mine, signer=signer)


def _gate_record(
    settings: Settings, key: str, permit: permits.SignedPermit, allowed: bool
) -> tuple[records.AccessRecord, records.RecordSigner]:
    """The record :func:`_decided_by_gate` writes, and the gate's signer."""
    p = permit.permit
    org = p.provider
    mine = attempt_record(
        keeper=org,
        subject_code="code",
        req=LinkageRequest(
            requester=p.requester,
            provider=org,
            task=p.task,
            info=p.info,
            subject="code",
            bpf=p.bpf,
            bpf_version=p.bpf_version,
            content_hash=p.content_hash,
            step=p.step,
        ),
        decision=Decision(allowed=allowed, reason="test"),
        decided_at=dt.datetime.now(dt.UTC),
        workflow_id=p.workflow_id,
        run_id=p.run_id,
        key=key,
    )
    return mine, records.RecordSigner(org, keys.load_org(settings, org).signer())


async def _keep_as(base_settings: Settings, org: str, *kept: records.ProviderReceipt) -> None:
    """``org`` keeps receipt rows on its own database role, as its gate (or a hostile
    operator of it) would."""
    assert base_settings.database_url
    own = await create_pool(base_settings.database_url, max_size=1, role=party_role(org))
    try:
        assert await own.fetchval("SELECT current_user") == party_role(org)
        for k in kept:
            await records.keep_receipt(own, k)
    finally:
        await own.close()


async def _queued(pool: asyncpg.Pool, attempt_keys: list[str]) -> int:
    n: int = await pool.fetchval(
        "SELECT count(*) FROM records.receipts_to_collect q JOIN records.answer_receipts r"
        " ON r.id = q.receipt_id WHERE r.attempt_key = ANY($1)",
        attempt_keys,
    )
    return n


async def test_a_providers_bad_receipt_rows_record_nothing_and_leave_the_executors_outcome(
    pool: asyncpg.Pool,
    settings: Settings,
    base_settings: Settings,
    caplog: pytest.LogCaptureFixture,
) -> None:
    hub = records.RecordSigner(records.HUB, keys.load(settings).signer())
    jps = keys.load_org(settings, "jps").signer()
    genuine, permit = await _probe_attempt(pool, hub, "jps")
    wrong_key, wrong_permit = await _probe_attempt(pool, hub, "jps")
    other_attempt, _ = await _probe_attempt(pool, hub, "jps")
    _, others_permit = await _probe_attempt(pool, hub, "jps")
    not_hubs, real = await _probe_attempt(pool, hub, "jps")
    forged = permits.sign(real.permit, Ed25519PrivateKey.generate())
    await _decided_by_gate(pool, settings, genuine, permit, allowed=True)
    await _keep_as(
        base_settings,
        "jps",
        _kept("jps", genuine, _receipt(jps, permit)),  # the control: this one holds
        _kept("jps", wrong_key, _receipt(Ed25519PrivateKey.generate(), wrong_permit)),
        _kept("jps", other_attempt, _receipt(jps, others_permit)),
        _kept("jps", not_hubs, _receipt(jps, forged)),
    )
    # A provider whose key was revoked (lost, say) before it kept its receipt.
    name = f"probe-{uuid.uuid4().hex[:8]}"
    own = keys.OrgKeys(
        org=name,
        signing_key=keys.new_keys().signing_key,
        codec=keys.load(settings).codec,
        hub_signing="",
    )
    await parties.register(pool, hub.key, own.public(name))
    revoked, revoked_permit = await _probe_attempt(pool, hub, name)
    assert await parties.revoke(pool, hub.key, name, reason="key lost")
    await records.keep_receipt(pool, _kept(name, revoked, _receipt(own.signer(), revoked_permit)))
    # Rows no gate writes: a permit that is no permit, and a permit other than the one named.
    unreadable, _ = await _probe_attempt(pool, hub, "jps")
    mismatched, mismatched_permit = await _probe_attempt(pool, hub, "jps")
    made = _receipt(jps, mismatched_permit)
    assert base_settings.database_url
    conn = await asyncpg.connect(base_settings.database_url)
    try:
        await conn.execute(f"SET ROLE {party_role('jps')}")
        insert = (
            "INSERT INTO records.answer_receipts (keeper, attempt_key, answer_digest,"
            " permit_signature, signature, answered_at, permit)"
            " VALUES ('jps', $1, $2, $3, $4, now(), $5::text::jsonb)"
        )
        await conn.execute(insert, unreadable, made.digest, "x", made.signature, '{"junk": 1}')
        await conn.execute(
            insert,
            mismatched,
            made.digest,
            made.permit.signature[::-1],
            made.signature,
            made.permit.model_dump_json(),
        )
    finally:
        await conn.close()
    bad = [wrong_key, other_attempt, not_hubs, revoked, unreadable, mismatched]
    assert await _queued(pool, [genuine, *bad]) == 7

    with caplog.at_level(logging.WARNING, logger="renkei.kernel.records._collector"):
        done = await records.Collector(pool, hub).run_once()
    assert done.provided >= 1 and done.refused >= 6, done
    ended = await records.outcomes(pool, [genuine, *bad])
    assert set(ended) == {genuine}  # nothing at all for a bad one: not even "unreceipted"
    assert ended[genuine].outcome == "provided"
    assert ended[genuine].receipt == _receipt(jps, permit).signature
    assert await _queued(pool, [genuine, *bad]) == 0  # each looked at once, then off the queue
    refusals = [r.getMessage() for r in caplog.records if "not collected" in r.getMessage()]
    assert {
        "a receipt of jps not collected: the receipt is not signed with jps's registered"
        " (unrevoked) key",
        "a receipt of jps not collected: the receipt is for another attempt",
        "a receipt of jps not collected: the receipt answers a permit the hub did not sign",
        f"a receipt of {name} not collected: the receipt is not signed with {name}'s"
        " registered (unrevoked) key",
        "a receipt of jps not collected: a receipt whose permit or signature the hub cannot read",
        "a receipt of jps not collected: the receipt names another permit than the one kept"
        " with it",
    } <= set(refusals)
    assert not any(k in line for k in [genuine, *bad] for line in refusals)  # no attempt named
    # The executor's own word about each bad one is still taken (a bad row pre-empts nothing);
    # the genuine one keeps the provider's word.
    told = await records.record_outcomes(pool, [(k, "failed") for k in [*bad, genuine]], hub)
    assert [o.outcome for o in told if isinstance(o, records.AttemptOutcome)] == [
        *(["failed"] * len(bad)),
        "provided",
    ]
    # Collecting again (another hub worker, a restart) finds nothing new and doubles nothing.
    again = await records.Collector(pool, hub).run_once()
    assert again.provided == 0
    ended = await records.outcomes(pool, [genuine, *bad])
    assert ended[genuine].chain_seq == told[-1].chain_seq  # type: ignore[union-attr]


async def test_only_the_hub_collects_and_a_receipt_from_before_is_never_collected(
    pool: asyncpg.Pool, settings: Settings, base_settings: Settings
) -> None:
    """A receipt kept without a permit (every receipt from before) is not queued; and no org
    (with its own key) runs a collector."""
    hub = records.RecordSigner(records.HUB, keys.load(settings).signer())
    jps = keys.load_org(settings, "jps").signer()
    before, permit = await _probe_attempt(pool, hub, "jps")
    kept = _kept("jps", before, _receipt(jps, permit)).model_copy(update={"permit": None})
    await _keep_as(base_settings, "jps", kept)
    assert await _queued(pool, [before]) == 0
    await records.Collector(pool, hub).run_once()
    assert await records.outcomes(pool, [before]) == {}
    with pytest.raises(PermissionError):
        records.Collector(pool, records.RecordSigner("jps", jps))
    # An org's role neither reads nor empties the queue.
    assert base_settings.database_url
    own = await create_pool(base_settings.database_url, max_size=1, role=party_role("jps"))
    try:
        for sql in (
            "SELECT count(*) FROM records.receipts_to_collect",
            "DELETE FROM records.receipts_to_collect",
        ):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await own.execute(sql)
    finally:
        await own.close()


async def test_an_executor_telling_a_failure_after_the_hub_collected_provided_changes_nothing(
    client, pool, settings, catalog, live_whitelist, caplog: pytest.LogCaptureFixture
) -> None:
    """The provider answers and the hub collects its receipt; the executor then tells the hub
    the attempt failed. The outcome stays provided (with the receipt), and the hub logs the
    disagreement (the step and both words, nothing personal)."""
    from temporalio.worker import Worker

    from renkei.contracts.names import workflow_id
    from workers.plugin import party_client

    from .helpers import wait_for_outcomes, workers
    from .test_receipts import BPF, EXECUTOR, HostileExecutor, Plan, _hub_record, _pension_linkage

    linkage = await _pension_linkage(pool, settings, 2)
    rogue = party_client(client, settings, [EXECUTOR])
    queue = f"{settings.task_queue_prefix}.hostile-executor"
    wid = workflow_id(BPF, EXECUTOR, f"h-{uuid.uuid4().hex[:8]}")
    plan = Plan(
        prefix=settings.task_queue_prefix, broker=linkage, ask=True, report="failed", hold=True
    )
    # (the activity logger at warnings: a command run in this process earlier may have quietened it)
    with caplog.at_level(logging.WARNING, logger="temporalio.activity"):
        async with (
            workers(client, pool, settings, catalog, live_whitelist),
            Worker(rogue, task_queue=queue, workflows=[HostileExecutor]),
        ):
            handle = await rogue.start_workflow(
                BPF, plan, id=wid, task_queue=queue, result_type=dict
            )
            async with asyncio.timeout(120):  # brokered: the hub's record is there
                while not await records.query(pool, workflow_id=wid):  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
            key = (await _hub_record(pool, wid)).attempt_key
            collected = await wait_for_outcomes(pool, [key])
            await handle.signal("go")
            said = await handle.result()
    assert said["reported"] == "taken"
    assert collected[key].outcome == "provided"
    assert collected[key].receipt == said["receipt"]["signature"]
    assert (await records.outcomes(pool, [key]))[key] == collected[key]  # unchanged
    assert any(
        "step pension: reported as failed; the provider's receipt says provided" in r.getMessage()
        for r in caplog.records
    )


async def test_a_provider_cannot_have_an_attempt_its_own_gate_refused_collected_as_provided(
    pool: asyncpg.Pool, settings: Settings, base_settings: Settings
) -> None:
    """jps's gate refuses a permitted request (its PIA gate, a suspension: its own record says
    denied), and jps then keeps a receipt of the permit all the same, signed with its own key:
    it would be billed and shown to the citizen as provided, and the executor's 'denied' lost.
    The provider's own chained record contradicts its receipt: nothing is collected."""
    hub = records.RecordSigner(records.HUB, keys.load(settings).signer())
    jps = keys.load_org(settings, "jps").signer()
    key, permit = await _probe_attempt(pool, hub, "jps")
    await _decided_by_gate(pool, settings, key, permit, allowed=False)
    await _keep_as(base_settings, "jps", _kept("jps", key, _receipt(jps, permit)))
    # A permit whose request never reached jps's gate (a flow that ended before asking it,
    # its permit read from elsewhere): no gate record at all.
    unasked, unasked_permit = await _probe_attempt(pool, hub, "jps")
    await _keep_as(base_settings, "jps", _kept("jps", unasked, _receipt(jps, unasked_permit)))
    done = await records.Collector(pool, hub).run_once()
    assert done.refused >= 2 and done.provided == 0, done
    assert await records.outcomes(pool, [key, unasked]) == {}
    [told] = await records.record_outcomes(pool, [(key, "denied")], hub)
    assert isinstance(told, records.AttemptOutcome) and told.outcome == "denied"


async def test_an_orgs_role_cannot_take_the_receipt_ids_other_providers_will_get(
    pool: asyncpg.Pool, settings: Settings, base_settings: Settings
) -> None:
    """jps's own database role inserts a receipt row under an id the shared sequence has not
    handed out yet: had it been taken, the next provider's gate keeping its receipt under that
    id would fail (its answer never leaving). The id is the sequence's alone."""
    hub = records.RecordSigner(records.HUB, keys.load(settings).signer())
    jps = keys.load_org(settings, "jps").signer()
    planted, permit = await _probe_attempt(pool, hub, "jps")
    row = _kept("jps", planted, _receipt(jps, permit))
    ahead = await pool.fetchval("SELECT last_value + 1 FROM records.answer_receipts_id_seq")
    assert base_settings.database_url
    conn = await asyncpg.connect(base_settings.database_url)
    try:
        await conn.execute(f"SET ROLE {party_role('jps')}")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute(
                "INSERT INTO records.answer_receipts (id, keeper, attempt_key, answer_digest,"
                " permit_signature, signature, answered_at)"
                " VALUES ($1, 'jps', $2, $3, $4, $5, now())",
                ahead,
                planted,
                row.answer_digest,
                row.permit_signature,
                row.signature,
            )
    finally:
        await conn.close()
    # Its gate's own insert (the sequence's id) still works, and so does the next provider's.
    await _keep_as(base_settings, "jps", row)
    other, other_permit = await _probe_attempt(pool, hub, "city-shibuya")
    shibuya = keys.load_org(settings, "city-shibuya").signer()
    await _keep_as(
        base_settings, "city-shibuya", _kept("city-shibuya", other, _receipt(shibuya, other_permit))
    )
    kept = await pool.fetch(
        "SELECT keeper FROM records.answer_receipts WHERE attempt_key = ANY($1)", [planted, other]
    )
    assert sorted(r["keeper"] for r in kept) == ["city-shibuya", "jps"]


async def test_an_orgs_role_cannot_keep_a_receipt_row_too_big_for_the_collector(
    pool: asyncpg.Pool, settings: Settings, base_settings: Settings
) -> None:
    """jps's own database role keeps a receipt row whose permit is a megabyte of JSON (the
    collector reads its queue a batch of rows at a time: a batch of such rows is hundreds of
    megabytes, taken again at every turn). Refused by the database; a gate's own row, kept
    next, is collected."""
    hub = records.RecordSigner(records.HUB, keys.load(settings).signer())
    jps = keys.load_org(settings, "jps").signer()
    huge, _ = await _probe_attempt(pool, hub, "jps")
    genuine, permit = await _probe_attempt(pool, hub, "jps")
    made = _receipt(jps, permit)
    assert base_settings.database_url
    conn = await asyncpg.connect(base_settings.database_url)
    try:
        await conn.execute(f"SET ROLE {party_role('jps')}")
        with pytest.raises(asyncpg.CheckViolationError):
            await conn.execute(
                "INSERT INTO records.answer_receipts (keeper, attempt_key, answer_digest,"
                " permit_signature, signature, answered_at, permit)"
                " VALUES ('jps', $1, $2, $3, $4, now(), $5::text::jsonb)",
                huge,
                made.digest,
                made.permit.signature,
                made.signature,
                '{"pad": "' + "x" * 1_000_000 + '"}',
            )
    finally:
        await conn.close()
    await _decided_by_gate(pool, settings, genuine, permit, allowed=True)
    await _keep_as(base_settings, "jps", _kept("jps", genuine, made))
    await records.Collector(pool, hub).run_once()
    assert (await records.outcomes(pool, [genuine]))[genuine].outcome == "provided"


async def test_an_attempt_the_hub_denied_is_not_taken_as_not_asked(
    pool: asyncpg.Pool, settings: Settings
) -> None:
    """An executor tells the hub that an attempt the hub denied was 'not_asked' (permitted
    ahead, never asked: the citizen's page would say 'permitted in advance'). The hub's own
    record says denied: the report is refused, and the executor's 'denied' is taken after."""
    hub = records.RecordSigner(records.HUB, keys.load(settings).signer())
    denied, _ = await _probe_attempt(pool, hub, "jps", allowed=False)
    permitted, _ = await _probe_attempt(pool, hub, "jps")
    told = await records.record_outcomes(
        pool, [(denied, "not_asked"), (permitted, "not_asked")], hub
    )
    assert isinstance(told[0], PermissionError) and "did not permit" in str(told[0])
    assert isinstance(told[1], records.AttemptOutcome) and told[1].outcome == "not_asked"
    assert set(await records.outcomes(pool, [denied, permitted])) == {permitted}
    [again] = await records.record_outcomes(pool, [(denied, "denied")], hub)
    assert isinstance(again, records.AttemptOutcome) and again.outcome == "denied"


async def test_an_orgs_role_cannot_hold_the_lock_the_collector_waits_for(
    pool: asyncpg.Pool, settings: Settings, base_settings: Settings
) -> None:
    """jps's own database role, in a transaction it keeps open, tries to lock every chain's
    writers out: the hub's record chain, another org's, the outcomes chain (which the collector
    appends to for every batch) and billing's issuing of a month, by the rows their writers lock
    (migration 0054) and by the advisory locks they took before. It locks none of them: the hub
    writes its records, an outcome and takes billing's lock while jps holds all it could take,
    and jps still writes its own gate's record in its own chain."""
    hub = records.RecordSigner(records.HUB, keys.load(settings).signer())
    key, permit = await _probe_attempt(pool, hub, "jps")  # the hub's chain and city-minato's
    others = [records.HUB, "city-minato"]
    assert await pool.fetchval(
        "SELECT count(*) FROM records.keepers WHERE keeper = ANY($1)", others
    ) == len(others)
    month = "2026-11"
    assert base_settings.database_url
    url = base_settings.database_url
    own = await connect(url, role=party_role("jps"))
    # The hub's writers give up on a lock held longer than this: held by jps, they would wait
    # for ever; free, they do not wait at all.
    hub_pool = await asyncpg.create_pool(
        url,
        min_size=1,
        max_size=2,
        server_settings={"lock_timeout": "10s"},
        init=lambda c: _init_connection(c, APP_ROLE),
    )
    assert hub_pool is not None
    try:
        assert await own.fetchval("SELECT current_user") == party_role("jps")
        holding = own.transaction()
        await holding.start()
        try:
            # The advisory locks the writers took before: still open to every role, and no
            # writer waits for them now.
            for lock, name in ((7_350_100, records.HUB), (7_350_200, month)):
                assert await own.fetchval(
                    "SELECT pg_try_advisory_xact_lock($1, hashtext($2))", lock, name
                )
            assert await own.fetchval("SELECT pg_try_advisory_xact_lock(7350101, 0)")
            # The rows: the hub's and another org's chain are not even shown to it ...
            assert (
                await own.fetch(
                    "SELECT keeper FROM records.keepers WHERE keeper = ANY($1) FOR NO KEY UPDATE",
                    others,
                )
                == []
            )
            for keeper in others:  # ... nor may it register them to lock them
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    async with own.transaction():
                        await records.lock_chain(own, keeper)
            # ... and the platform's locks (the outcomes chain, billing) are beyond it.
            for name in (records.OUTCOMES_LOCK, f"invoices {month}"):
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    async with own.transaction():
                        await records.lock_platform(own, name)
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                async with own.transaction():
                    await own.fetch("SELECT name FROM records.platform_locks FOR NO KEY UPDATE")
            # Its own chain it locks, as its gate's writes need; the privilege that takes does
            # not let it change the registry.
            assert await records.lock_chain(own, "jps")
            with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
                async with own.transaction():
                    await own.execute("UPDATE records.keepers SET keeper = 'hub'")
            # Meanwhile the hub writes: records in its chain and city-minato's, an outcome
            # (what the collector appends), and takes billing's lock for the month.
            other, _ = await _probe_attempt(hub_pool, hub, "jps")
            [told] = await records.record_outcomes(hub_pool, [(other, "failed")], hub)
            assert isinstance(told, records.AttemptOutcome) and told.outcome == "failed"
            async with hub_pool.acquire() as conn, conn.transaction():
                await records.lock_platform(conn, f"invoices {month}")
            # jps's gate writes its own record, under its own chain's lock.
            mine, signer = _gate_record(settings, key, permit, allowed=True)
            _, new = await records.append(own, [mine], signer)
            assert [r.attempt_key for r in new] == [key]
        finally:
            await holding.commit()
        assert await pool.fetchval(
            "SELECT count(*) FROM records.access_records WHERE keeper = 'jps'"
            " AND attempt_key = $1 AND chain_seq IS NOT NULL",
            key,
        )
    finally:
        await hub_pool.close()
        await own.close()


async def test_concurrent_receipts_are_kept_together_and_a_bad_one_fails_alone(
    pool: asyncpg.Pool, settings: Settings, base_settings: Settings
) -> None:
    """A gate's concurrent answers keep their receipts in one statement (records.ReceiptGroup):
    each is kept once, a second of the same attempt leaves the first; one the database refuses
    (too big for the collector) fails on its own, the others of its group are kept."""
    hub = records.RecordSigner(records.HUB, keys.load(settings).signer())
    jps = keys.load_org(settings, "jps").signer()
    attempts = [await _probe_attempt(pool, hub, "jps") for _ in range(6)]
    kept = [_kept("jps", key, _receipt(jps, permit)) for key, permit in attempts]
    again = kept[0].model_copy(update={"answer_digest": "another"})
    huge = kept[5].model_copy(
        update={"permit": kept[5].permit.model_copy(update={"signature": "x" * 1_000_000})}
        if kept[5].permit
        else {}
    )
    assert base_settings.database_url
    own = await create_pool(base_settings.database_url, max_size=2, role=party_role("jps"))
    try:
        group = records.ReceiptGroup(own)
        together = await asyncio.gather(
            *(group.keep(k) for k in kept[:5]), group.keep(again), return_exceptions=True
        )
        # each says whether it was kept now: the second of an attempt was not
        assert together == [True] * 5 + [False] and group.statements >= 1
        [refused, fine] = await asyncio.gather(
            group.keep(huge), group.keep(kept[0]), return_exceptions=True
        )
        assert isinstance(refused, asyncpg.CheckViolationError) and fine is False
    finally:
        await own.close()
    rows = {
        r["attempt_key"]: r["answer_digest"]
        for r in await pool.fetch(
            "SELECT attempt_key, answer_digest FROM records.answer_receipts"
            " WHERE attempt_key = ANY($1)",
            [key for key, _ in attempts],
        )
    }
    assert rows == {k.attempt_key: k.answer_digest for k in kept[:5]}


async def test_a_receipt_waiting_on_a_held_row_holds_back_no_other(
    pool: asyncpg.Pool, settings: Settings, base_settings: Settings
) -> None:
    """A row of an attempt, inserted by another transaction not yet committed, makes the gate's
    receipt of that attempt wait: the receipts grouped with it, and those after, are kept (the
    group's statement waits at most its bound, then each receipt goes on its own)."""
    hub = records.RecordSigner(records.HUB, keys.load(settings).signer())
    jps = keys.load_org(settings, "jps").signer()
    (stuck, p1), (other, p2) = [await _probe_attempt(pool, hub, "jps") for _ in range(2)]
    assert base_settings.database_url
    own = await create_pool(base_settings.database_url, max_size=3, role=party_role("jps"))
    group = records.ReceiptGroup(own, wait=0.5)
    try:
        async with pool.acquire() as conn:
            held = conn.transaction()
            await held.start()
            await records.keep_receipt(conn, _kept("jps", stuck, _receipt(jps, p1)))
            first = asyncio.create_task(group.keep(_kept("jps", stuck, _receipt(jps, p1))))
            second = asyncio.create_task(group.keep(_kept("jps", other, _receipt(jps, p2))))
            await asyncio.wait_for(second, 30)  # a bound for a loaded machine, not a measure
            assert not first.done()
            await held.rollback()
        await asyncio.wait_for(first, 30)
    finally:
        await own.close()
    kept = await pool.fetchval(
        "SELECT count(*) FROM records.answer_receipts WHERE attempt_key = ANY($1)", [stuck, other]
    )
    assert kept == 2
