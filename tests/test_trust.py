"""The trust layer: agency-specific codes, encrypted history, tamper-evident records."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from typing import Any

import asyncpg
import pytest
from google.protobuf.message import Message
from temporalio.api.common.v1 import Payload
from temporalio.api.workflowservice.v1 import GetWorkflowExecutionHistoryRequest
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowFailureError
from typer.testing import CliRunner

from activities.agencies import providers_for
from renkei.contracts.failures import Failure
from renkei.contracts.messages import LinkageRequest
from renkei.kernel import keys, records
from renkei.kernel import search_attributes as sa
from renkei.kernel.channels import ENCODING as CHANNEL_ENCODING
from renkei.kernel.codec import ENCODING, EncryptionCodec
from renkei.kernel.pseudonyms import (
    PORTAL,
    InvalidIndividualNumber,
    Pseudonyms,
    derive_code,
    synthetic_number,
)
from renkei.kernel.settings import Settings

from .helpers import (
    MARKER_KEYS,
    access_record,
    child_rearing,
    code,
    pick,
    run,
    sdk,
    start,
    undone_as_owner,
    workers,
)

# -- agency-specific codes --


async def test_enrolment_gives_each_org_its_own_code_and_keeps_no_number(
    pool: asyncpg.Pool, settings: Settings
) -> None:
    hub = Pseudonyms(pool, keys.load(settings).hub_key)
    number = synthetic_number(uuid.uuid4())
    minato = await hub.enroll_number(number, "city-minato")
    jps = await hub.enroll_number(number, "jps")
    assert minato != jps and len(minato) == len(jps) == 20
    assert await hub.enroll_number(number, "city-minato") == minato  # idempotent
    assert await hub.subject_of("city-minato", minato) == await hub.subject_of("jps", jps)
    # The number is nowhere in clear: not in the hub's tables, not in any text column.
    for table, column in (("hub.individuals", "number_hash"), ("hub.subject_codes", "code")):
        assert not await pool.fetchval(
            f"SELECT count(*) FROM {table} WHERE {column} LIKE $1", f"%{number}%"
        )
    # Another person gets other codes.
    other = await hub.enroll_number(synthetic_number(uuid.uuid4()), "city-minato")
    assert other != minato


async def test_the_hubs_code_store_keeps_a_bounded_number_of_codes_in_memory(
    pool: asyncpg.Pool, settings: Settings
) -> None:
    """The hub's worker meets every citizen in turn over months: its code store remembers at
    most so many (org, code) pairs, and a code it has let go of is read again, the same."""
    hub = Pseudonyms(pool, keys.load(settings).hub_key, remember=3)
    people = [uuid.uuid4() for _ in range(5)]
    await hub.enroll(people, ["city-minato"])
    codes = [derive_code(keys.load(settings).hub_key, "city-minato", p) for p in people]
    jps = [await hub.translate("city-minato", [c], "jps") for c in codes]
    assert len(hub._cache) <= 3
    again = await hub.translate("city-minato", [codes[0]], "jps")  # let go of, read again
    assert again == jps[0] and await hub.subject_of("jps", again[0]) == people[0]
    assert len(hub._cache) <= 3


async def test_other_keys_than_the_databases_are_refused(
    pool: asyncpg.Pool, settings: Settings
) -> None:
    await keys.check_against(pool, keys.load(settings), "the test keys")  # the same: fine
    with pytest.raises(keys.KeyMismatch, match="hub_key in a fresh keys file"):
        await keys.check_against(pool, keys.new_keys(), "a fresh keys file")


@pytest.mark.parametrize(
    "bad", ["12345678901", "123456789019", "12345678901x", "１２３４５６７８９０１８"]
)
async def test_malformed_individual_numbers_are_refused_without_echoing_them(
    pool: asyncpg.Pool, settings: Settings, bad: str
) -> None:
    hub = Pseudonyms(pool, keys.load(settings).hub_key)
    with pytest.raises(InvalidIndividualNumber) as err:
        await hub.enroll_number(bad, "city-minato")
    assert bad not in str(err.value)


async def test_three_agencies_each_see_only_their_own_code(
    client: Client, pool: asyncpg.Pool, settings: Settings, catalog, live_whitelist
) -> None:
    received: dict[str, list[LinkageRequest]] = {}

    def spying(org: str) -> dict[str, Any]:
        real = providers_for(org, pool)

        def wrap(provider: Any) -> Any:
            async def spy(req: LinkageRequest) -> Any:
                received.setdefault(org, []).append(req)
                return await provider(req)

            return spy

        return {info: wrap(p) for info, p in real.items()}

    h = pick(settings, lambda h: h.kind == "family" and h.municipality == "city-shibuya")
    person = h.members[0]
    codes = {org: code(settings, org, person) for org in ("city-minato", "city-shibuya", "jps")}
    providers = {org: spying(org) for org in ("city-shibuya", "jps")}
    async with workers(client, pool, settings, catalog, live_whitelist, providers=providers):
        handle = await sdk(client, settings).start(
            start(
                "child-allowance-check",
                "city-minato",
                codes["city-minato"],
                inputs={"previous_municipality": "city-shibuya"},
            )
        )
        await handle.result()
    # What each provider's code received: its own code, and nobody else's.
    for org in ("city-shibuya", "jps"):
        assert [r.subject for r in received[org]] == [codes[org]]
        dumped = " ".join(r.model_dump_json() for r in received[org])
        assert all(c not in dumped for o, c in codes.items() if o != org)
    # Each keeps its data under its own code only.
    shibuya = await pool.fetch(
        "SELECT code FROM agency_city_shibuya.residents WHERE code = ANY($1::text[])",
        list(codes.values()),
    )
    assert [r["code"] for r in shibuya] == [codes["city-shibuya"]]
    pensions = await pool.fetch(
        "SELECT code FROM agency_jps.pensions WHERE code = ANY($1::text[])", list(codes.values())
    )
    assert {r["code"] for r in pensions} <= {codes["jps"]}
    # Each party's record is under its own code; the hub's under its subject id.
    kept = {r.keeper: r for r in await records.query(pool, workflow_id=handle.id)}
    assert kept["city-shibuya"].subject_code == codes["city-shibuya"]
    assert kept["jps"].subject_code == codes["jps"]
    assert kept["city-minato"].subject_code == codes["city-minato"]
    assert kept[records.HUB].subject_code == str(person.subject_id)


# -- encrypted history --


def _payloads(message: Message, path: str = "") -> list[tuple[str, Payload]]:
    """Every Payload inside ``message``, with the field path that leads to it."""
    found: list[tuple[str, Payload]] = []
    for field, value in message.ListFields():
        if field.message_type is None:
            continue
        here = f"{path}.{field.name}"
        if isinstance(value, Message):
            items = [value]
        elif hasattr(value, "values"):  # a map
            items = list(value.values())
        else:  # a repeated field
            items = list(value)
        for item in items:
            if isinstance(item, Payload):
                found.append((here, item))
            elif isinstance(item, Message):
                found.extend(_payloads(item, here))
    return found


# What Temporal itself writes in clear, by design: search attributes (indexed, checked below to
# name no one), the SDK's own bookkeeping of a local activity (sequence number, type, times) and
# of a patched code path (the patch's name): helpers.MARKER_KEYS.


def _structural(path: str, payload: Payload) -> bool:
    import json

    if ".search_attributes." in path:
        return True
    if path.startswith(".marker_recorded_event_attributes.details"):
        meta = json.loads(payload.data)
        return isinstance(meta, dict) and set(meta) <= MARKER_KEYS
    return False


async def _raw_history(client: Client, workflow_id: str) -> list[Any]:
    events: list[Any] = []
    token = b""
    while True:
        page = await client.workflow_service.get_workflow_execution_history(
            GetWorkflowExecutionHistoryRequest(
                namespace=client.namespace,
                execution={"workflow_id": workflow_id},
                next_page_token=token,
            )
        )
        events.extend(page.history.events)
        token = page.next_page_token
        if not token:
            return events


async def test_raw_history_holds_no_personal_value_in_clear(
    env, client: Client, pool: asyncpg.Pool, settings: Settings
) -> None:
    h = pick(settings, lambda h: h.kind == "family" and h.municipality == "city-minato")
    head, spouse = h.members[0], h.members[1]
    done = await env.start(child_rearing(settings, head, spouse))
    await done.result()
    denied = await env.start(child_rearing(settings, head, municipality="jps"))
    with pytest.raises(WorkflowFailureError) as failed:
        await denied.result()

    personal = [
        derive_code(keys.load(settings).hub_key, org, p.subject_id)
        for p in (head, spouse)
        for org in ("pref-tokyo", "city-minato", "jps", PORTAL)
    ]
    personal += [str(p.subject_id) for p in (head, spouse)]
    personal += [str(head.taxable_income), str(head.taxable_income + spouse.taxable_income)]
    # Words that would show in any clear payload of these runs.
    telltales = ["taxable_income", "cohabiting", "relationship", "denied by the whitelist"]

    for handle in (done, denied):
        assert not any(v in handle.id for v in personal)
        events = await _raw_history(client, handle.id)
        assert events
        found = [fp for e in events for fp in _payloads(e)]
        assert found, "the history carries payloads"
        clear = [
            p
            for p, pl in found
            if pl.metadata.get("encoding") not in (ENCODING, CHANNEL_ENCODING)
            and not _structural(p, pl)
        ]
        assert clear == [], f"payloads in clear at {clear}"
        raw = b"".join(e.SerializeToString() for e in events)
        for value in personal + telltales:
            assert value.encode() not in raw, "a personal value or clear payload text leaked"
        # Failure messages are encoded too: the server sees only a placeholder.
        failures = [
            e.workflow_execution_failed_event_attributes.failure
            for e in events
            if e.HasField("workflow_execution_failed_event_attributes")
        ]
        assert all(f.message == "Encoded failure" for f in failures)
        # Search attributes are indexed in clear, so they must name no one.
        described = await client.get_workflow_handle(handle.id).describe()
        attrs = " ".join(str(p.value) for p in described.typed_search_attributes)
        assert attrs and not any(v in attrs for v in personal)
    # And the denial is there, decrypted, for whoever holds the key.
    described = await denied.describe()
    assert described.status == WorkflowExecutionStatus.FAILED
    assert described.typed_search_attributes.get(sa.STATUS) == "denied"
    cause = failed.value.cause
    assert Failure.LINKAGE_DENIED.caused(cause)
    assert "denied by the whitelist" in str(cause)


async def test_payloads_encrypted_under_a_retired_key_still_decrypt(settings: Settings) -> None:
    old_ring = keys.load(settings).codec
    new_ring = old_ring.rotated()
    assert new_ring.active != old_ring.active and old_ring.active in new_ring.keys
    payload = Payload(metadata={"encoding": b"json/plain"}, data=b'{"code":"X"}')
    [sealed] = await EncryptionCodec(old_ring).encode([payload])
    assert sealed.metadata["encryption-key-id"] == old_ring.active.encode()
    [opened] = await EncryptionCodec(new_ring).decode([sealed])
    assert opened == payload
    [resealed] = await EncryptionCodec(new_ring).encode([payload])
    assert resealed.metadata["encryption-key-id"] == new_ring.active.encode()
    # A ring without the key refuses, naming only the key id.
    from renkei.kernel.codec import PayloadDecryptError

    with pytest.raises(PayloadDecryptError):
        await EncryptionCodec(keys.new_keys().codec).decode([resealed])


# -- tamper-evident records --

# Records are written signed, as the hub writes them (a chain started now is signed throughout).
_WRITER: list[records.RecordSigner] = []


@pytest.fixture(autouse=True)
def _hub_writes(base_settings: Settings) -> None:
    _WRITER[:] = [records.RecordSigner(records.HUB, keys.load(base_settings).signer())]


async def _chain_of(pool: asyncpg.Pool, n: int = 5) -> str:
    keeper = f"probe-{uuid.uuid4().hex[:8]}"
    for i in range(1, n + 1):
        await records.write(pool, access_record(keeper, i), signer=_WRITER[0])
    return keeper


async def _tamper(pool: asyncpg.Pool, sql: str, *args: object) -> None:
    """Change records behind the application's back, as a database administrator could."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SET LOCAL ROLE NONE")  # the login user, not the application's role
        await conn.execute("SET LOCAL session_replication_role = replica")  # triggers off
        await conn.execute(sql, *args)


async def test_past_the_retention_period_the_owner_may_delete_records_and_receipts_not_before(
    pool: asyncpg.Pool,
) -> None:
    """Access records, outcomes and providers' receipts are kept for the retention period (the
    policy's): the owner's DELETE of one stored before it is taken, of one stored within it
    refused. (A receipt's DELETE failed on a field it does not have, past the period too.)"""
    attempt = f"retention/{uuid.uuid4()}"
    receipt = (
        "INSERT INTO records.answer_receipts (keeper, attempt_key, answer_digest,"
        " permit_signature, signature, answered_at, stored_at)"
        " VALUES ('city-minato', $1, 'd', 'p', 's', $2, $2)"
    )
    async with undone_as_owner(pool) as conn:
        long_ago = await conn.fetchval(  # in the database's calendar (a year is not 360 days)
            "SELECT now() - retention - interval '1 day' FROM records.policy"
        )
        await conn.execute("SET LOCAL session_replication_role = replica")  # stored long ago
        await conn.execute(receipt, f"{attempt}/old", long_ago)
        await conn.execute("SET LOCAL session_replication_role = origin")
        await conn.execute(receipt, f"{attempt}/new", dt.datetime.now(dt.UTC))
        deleted = "DELETE FROM records.answer_receipts WHERE attempt_key = $1"
        assert await conn.execute(deleted, f"{attempt}/old") == "DELETE 1"
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="answer receipts are kept"):
            async with conn.transaction():
                await conn.execute(deleted, f"{attempt}/new")
        # an access record the same way: by when it was recorded
        keeper = f"retention-{uuid.uuid4().hex[:8]}"  # a chain of its own, undone after
        await records.append(conn, [access_record(keeper, 1, attempt_key=f"{attempt}/record")])
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="access records are kept"):
            async with conn.transaction():
                await conn.execute("DELETE FROM records.access_records WHERE keeper = $1", keeper)


async def _verify(pool: asyncpg.Pool, settings: Settings, keeper: str) -> records.Verification:
    return await records.verify(pool, keys.load(settings).signer(), [keeper])


async def test_records_are_append_only_for_the_application(pool: asyncpg.Pool) -> None:
    keeper = await _chain_of(pool, 2)
    assert await pool.fetchval("SELECT current_user") == "renkei_app"
    for sql in (
        "UPDATE records.access_records SET outcome = 'denied' WHERE keeper = $1",
        "DELETE FROM records.access_records WHERE keeper = $1",
        "UPDATE records.policy SET retention = interval '1 year' WHERE $1 <> ''",
    ):
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied"):
            await pool.execute(sql, keeper)
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied"):
        await pool.execute("TRUNCATE records.access_records")
    # And even the owner's own session is stopped by the append-only trigger.
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SET LOCAL ROLE NONE")
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
            await conn.execute(
                "UPDATE records.access_records SET outcome = 'denied' WHERE keeper = $1", keeper
            )
    # A second write of the same attempt is the same record, not a new one.
    again = await records.write(pool, access_record(keeper, 1), signer=_WRITER[0])
    assert again[0].chain_seq == 1
    assert len(await records.query(pool, keeper=keeper)) == 2


async def test_verify_passes_an_intact_chain(pool: asyncpg.Pool, settings: Settings) -> None:
    keeper = await _chain_of(pool)
    result = await _verify(pool, settings, keeper)
    assert result.ok and result.records == 5


async def test_verify_finds_a_changed_record(pool: asyncpg.Pool, settings: Settings) -> None:
    keeper = await _chain_of(pool)
    await _tamper(
        pool,
        "UPDATE records.access_records SET outcome = 'denied' WHERE keeper = $1 AND chain_seq = 3",
        keeper,
    )
    [b] = (await _verify(pool, settings, keeper)).breaks
    assert (b.chain_seq, b.problem) == (3, "its content differs from its hash")


async def test_verify_finds_a_deleted_record(pool: asyncpg.Pool, settings: Settings) -> None:
    keeper = await _chain_of(pool)
    await _tamper(
        pool, "DELETE FROM records.access_records WHERE keeper = $1 AND chain_seq = 2", keeper
    )
    [b] = (await _verify(pool, settings, keeper)).breaks
    assert (b.chain_seq, b.problem) == (2, "record 2 is missing")


async def test_verify_finds_reordered_records(pool: asyncpg.Pool, settings: Settings) -> None:
    keeper = await _chain_of(pool)
    for a, b in ((2, 1000), (3, 2), (1000, 3)):
        await _tamper(
            pool,
            "UPDATE records.access_records SET chain_seq = $3 WHERE keeper = $1 AND chain_seq = $2",
            keeper,
            a,
            b,
        )
    [found] = (await _verify(pool, settings, keeper)).breaks
    assert found.chain_seq == 2


async def test_verify_finds_a_rewritten_chain_and_a_cut_tail_after_a_checkpoint(
    pool: asyncpg.Pool, settings: Settings
) -> None:
    keeper = await _chain_of(pool)
    signer = keys.load(settings).signer()
    made = await records.checkpoint(pool, signer)
    assert any(cp.keeper == keeper and cp.chain_seq == 5 for cp in made)
    # Cutting the tail leaves a consistent but shorter chain: only the checkpoint shows it.
    await _tamper(
        pool, "DELETE FROM records.access_records WHERE keeper = $1 AND chain_seq >= 4", keeper
    )
    [b] = (await _verify(pool, settings, keeper)).breaks
    assert b.chain_seq == 5 and "signed up to 5" in b.problem
    # A checkpoint signed by another key is not accepted.
    other = keys.new_keys().signer()
    result = await records.verify(pool, other, [keeper])
    assert not result.ok


def test_verify_command_reports_the_broken_link(cli: CliRunner, settings: Settings) -> None:
    import asyncio

    from renkei.kernel.db import create_pool

    assert settings.database_url

    async def with_pool(job: Any) -> Any:
        p = await create_pool(settings.database_url or "")
        try:
            return await job(p)
        finally:
            await p.close()

    keeper = asyncio.run(with_pool(lambda p: _chain_of(p, 3)))
    code, out = run(cli, "records", "verify", "--keeper", keeper)
    assert code == 0 and "every chain is intact" in out
    asyncio.run(
        with_pool(
            lambda p: _tamper(
                p,
                "UPDATE records.access_records SET reason = 'x'"
                " WHERE keeper = $1 AND chain_seq = 2",
                keeper,
            )
        )
    )
    code, out = run(cli, "records", "verify", "--keeper", keeper)
    assert code == 1 and f"BROKEN {keeper} at record 2" in out


def _probe_keys(name: str) -> keys.OrgKeys:
    """Fresh keys of a probe party ``name`` (its key file's content)."""
    fresh = keys.new_keys()
    return keys.OrgKeys(org=name, signing_key=fresh.signing_key, codec=fresh.codec, hub_signing="")


async def test_an_old_keys_row_written_again_does_not_make_a_revoked_key_current(
    pool: asyncpg.Pool, settings: Settings
) -> None:
    """The hub's signature on a registry entry covers the keys, not whether they are revoked:
    whoever holds the application's role (it may write the table) marks the current row
    revoked and writes the replaced key's row again, under a made-up key id or its own. The
    hub's signed revocation of that key still counts, so no reader takes it as current: the
    party then has no key to seal to, rather than its old one."""
    from renkei.kernel import parties

    hub = keys.load(settings).signer()
    name = f"probe-{uuid.uuid4().hex[:8]}"

    old, new = _probe_keys(name), _probe_keys(name)
    await parties.register(pool, hub, old.public(name))
    await parties.register(pool, hub, new.public(name))  # the old one revoked, signed
    row = await pool.fetchrow(
        "SELECT * FROM trust.parties WHERE party = $1 AND signing_id = $2",
        name,
        old.public(name).signing_id,
    )
    await pool.execute(
        "UPDATE trust.parties SET revoked_at = now() WHERE party = $1 AND revoked_at IS NULL",
        name,
    )
    await pool.execute(
        "INSERT INTO trust.parties (party, signing_public, sealing_public, signing_id,"
        " sealing_id, hub_signature) VALUES ($1, $2, $3, $4, $5, $6)",
        name,
        row["signing_public"],
        row["sealing_public"],
        "made-up-key-id",
        row["sealing_id"],
        row["hub_signature"],
    )
    hub_public = hub.public_key()
    assert name not in await parties.current(pool, hub_public)
    sealing = (await parties.sealing_keys(pool, hub_public))[name]
    assert sealing[0] is None  # nothing to seal to, not the old key
    old_sealer = keys.public_raw(old.opener().public_key())
    assert old_sealer in {keys.public_raw(k) for k in sealing[1:] if k is not None}  # still opens


async def test_the_hub_seals_no_code_to_a_providers_revoked_or_replaced_key(
    pool: asyncpg.Pool, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hub's permit issuer reads the key registry again once its last read is CURRENT_FOR
    seconds old, as every channel writer does: after a provider's key is replaced, the code in
    the next permit is sealed to the new key (the old key's holder cannot open it) and answers
    are checked against the new signing key; with every key of the provider revoked, no permit
    is issued for it at all."""
    from activities.permits import PermitIssuer, UnknownParty
    from renkei.kernel import channels, parties
    from renkei.kernel.sealing import SealError, open_sealed

    hub_keys = keys.load(settings)
    hub = hub_keys.signer()
    name = f"probe-{uuid.uuid4().hex[:8]}"

    first = _probe_keys(name)
    await parties.register(pool, hub, first.public(name))
    issuer = PermitIssuer(pool, hub_keys)

    async def issued() -> Any:
        return await issuer.issue(**_attempt(name))

    one = await issued()
    assert open_sealed(first.opener(), one.sealed, "subject|wf|run|q1|" + name)
    assert one.provider_key == first.public(name).signing
    second = _probe_keys(name)
    await parties.register(pool, hub, second.public(name))  # replaces (revokes) the first
    monkeypatch.setattr(channels, "CURRENT_FOR", 3600.0)  # read less than that ago: kept
    assert await issuer.signing_key_of(name) == first.public(name).signing
    monkeypatch.setattr(channels, "CURRENT_FOR", 0.0)  # every look reads the registry again
    now = await issued()
    with pytest.raises(SealError):
        open_sealed(first.opener(), now.sealed, "subject|wf|run|q1|" + name)
    assert open_sealed(second.opener(), now.sealed, "subject|wf|run|q1|" + name) == b"CODE"
    # the key its answers are checked with comes from the same read as the key the code is
    # sealed to: a rotation between the two cannot pair one key's code with the other's answers
    assert now.provider_key == second.public(name).signing
    assert await parties.revoke(pool, hub, name, reason="key lost")
    with pytest.raises(UnknownParty):
        await issued()


def _attempt(provider: str) -> dict[str, Any]:
    """An attempt's permit as the hub's issuer is asked for it (the row is any row)."""
    from whitelist.models import WhitelistRow

    return {
        "workflow_id": "wf",
        "run_id": "run",
        "step": "q1",
        "requester": "city-minato",
        "provider": provider,
        "task": "child-allowance",
        "info": "local-tax",
        "row": WhitelistRow(
            id="r",
            source="s",
            item="i",
            requester_role="a",
            task="child-allowance",
            provider_role="b",
            info="local-tax",
            legal_text="l",
            valid_from=dt.date(2020, 1, 1),
        ),
        "bpf": "b",
        "bpf_version": 1,
        "content_hash": "h",
        "provider_code": "CODE",
        "budget": dt.timedelta(seconds=30),
        "now": dt.datetime.now(dt.UTC),
    }


async def test_linkages_naming_a_party_with_no_keys_share_one_read_of_the_registry(
    pool: asyncpg.Pool, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A party not among the keys the hub's issuer holds is looked for with a new read of the
    registry (it may have been registered a moment ago), but linkages naming a party with no
    keys share one read, and read again at most every MISS_INTERVAL; none waits for the next
    read (an executor naming a party with no keys again and again holds no slot of the hub's
    worker, and makes no read of its own). A party registered since is found on the next read."""

    from activities import permits as hub_permits
    from activities.permits import PermitIssuer, UnknownParty
    from renkei.kernel import parties

    monkeypatch.setattr(hub_permits, "MISS_INTERVAL", 3600.0)  # no second read unless let
    reads = 0
    current = parties.current

    async def counted(*args: Any, **kwargs: Any) -> Any:
        nonlocal reads
        reads += 1
        return await current(*args, **kwargs)

    monkeypatch.setattr(parties, "current", counted)
    hub_keys = keys.load(settings)
    issuer = PermitIssuer(pool, hub_keys)
    name = f"probe-{uuid.uuid4().hex[:8]}"
    found = await asyncio.gather(
        *(issuer.signing_key_of(name) for _ in range(50)), return_exceptions=True
    )
    assert all(isinstance(f, UnknownParty) for f in found)
    assert reads == 1, reads  # one read, shared
    # Read less than MISS_INTERVAL ago: answered from it, at once (waiting for the next read
    # would wait an hour).
    more = await asyncio.wait_for(
        asyncio.gather(*(issuer.signing_key_of(name) for _ in range(50)), return_exceptions=True),
        60,
    )
    assert all(isinstance(f, UnknownParty) for f in more)
    assert reads == 1, reads
    mine = _probe_keys(name)
    await parties.register(pool, hub_keys.signer(), mine.public(name))
    monkeypatch.setattr(hub_permits, "MISS_INTERVAL", 0.0)  # the next read is due
    assert await issuer.signing_key_of(name) == mine.public(name).signing  # registered: found
    assert reads == 2, reads


async def test_a_party_whose_key_is_revoked_in_the_registry_gets_nothing_sealed_to_it(
    pool: asyncpg.Pool, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`renkei keys revoke` marks a party's key revoked in the hub-signed registry: a running
    writer that reads the registry again (at most CURRENT_FOR seconds on) seals nothing more to
    that key, and with no key left for the party, nothing to it at all; a key that replaced it
    is sealed to instead."""
    from renkei.kernel import channels, parties

    hub = keys.load(settings).signer()
    name = f"probe-{uuid.uuid4().hex[:8]}"
    first = keys.OrgKeys(
        org=name,
        signing_key=keys.new_keys().signing_key,
        codec=keys.load(settings).codec,
        hub_signing="",
    )
    await parties.register(pool, hub, first.public(name))

    async def refresh() -> Any:
        return await parties.sealing_keys(pool, hub.public_key())

    directory = channels.Directory(refresh=refresh)
    monkeypatch.setattr(channels, "CURRENT_FOR", 0.0)  # every look reads the registry again
    sealed_to = keys.key_id(keys.public_raw(await directory.current(name)))
    assert sealed_to == keys.key_id(keys.public_raw(first.opener().public_key()))
    assert await parties.revoke(pool, hub, name, reason="key lost")
    with pytest.raises(channels.ChannelError, match="no public sealing key"):
        await directory.current(name)
    assert await directory.by_id(sealed_to) is not None  # what was sealed to it still opens
    second = keys.OrgKeys(
        org=name,
        signing_key=keys.new_keys().signing_key,
        codec=keys.new_keys().codec,
        hub_signing="",
    )
    await parties.register(pool, hub, second.public(name))
    now = keys.key_id(keys.public_raw(await directory.current(name)))
    assert now == keys.key_id(keys.public_raw(second.opener().public_key())) != sealed_to


async def test_a_permit_a_hub_in_test_mode_issued_is_taken_by_no_provider_in_operation(
    pool: asyncpg.Pool, settings: Settings, catalog, live_whitelist
) -> None:
    """The conformance kit's hub runs drafts, in test mode, with the hub's own key: anyone who
    can schedule an activity on the kit's hub queue could ask it for a permit of a version no
    one approved. Such a permit says it is the kit's (signed), and a provider's gate in
    operation refuses it; the kit's stubs (test mode) take it, and a hub in operation's permit
    is taken in operation."""
    from activities.gate import Attempt, WhitelistGate
    from activities.permits import PermitIssuer
    from renkei.kernel.permits import PermitRefused

    flow = "child-allowance-check/pref-tokyo/kit-permit"
    asked = _attempt("city-minato") | {"workflow_id": flow, "requester": "pref-tokyo"}
    attempt = Attempt(flow, "run", "q1", dt.timedelta(seconds=30))

    def request(issued: Any) -> LinkageRequest:
        return LinkageRequest(
            requester="pref-tokyo",
            provider="city-minato",
            task=asked["task"],
            info=asked["info"],
            subject="",
            bpf=asked["bpf"],
            bpf_version=asked["bpf_version"],
            content_hash=asked["content_hash"],
            step="q1",
            permit=issued.permit,
            sealed_subject=issued.sealed,
        )

    def gate(operation: bool) -> WhitelistGate:
        return WhitelistGate(
            "city-minato",
            live_whitelist.bind(catalog),
            live_whitelist,
            pool,
            keys.load_org(settings, "city-minato"),
            operation=operation,
        )

    now = dt.datetime.now(dt.UTC)
    kits = await PermitIssuer(pool, keys.load(settings), kit=True).issue(**asked)
    assert kits.permit.permit.kit
    with pytest.raises(PermitRefused, match="conformance kit's permit"):
        gate(operation=True).check_permit(request(kits), attempt, now)
    assert gate(operation=False).check_permit(request(kits), attempt, now).subject == "CODE"
    operating = await PermitIssuer(pool, keys.load(settings)).issue(**asked)
    assert not operating.permit.permit.kit
    assert gate(operation=True).check_permit(request(operating), attempt, now).subject == "CODE"
    # the mark is signed: left out, the permit no longer verifies
    unmarked = kits.permit.model_copy(
        update={"permit": kits.permit.permit.model_copy(update={"kit": False})}
    )
    forged = kits._replace(permit=unmarked)
    with pytest.raises(PermitRefused):
        gate(operation=True).check_permit(request(forged), attempt, now)
