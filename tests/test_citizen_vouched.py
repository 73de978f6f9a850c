"""The citizen's page checks each record and outcome it shows against the keys the hub
registered: a row the application's role wrote in the hub's name, or an outcome it made up, is
shown flagged and says nothing of what was provided.

The forged rows break the hub's chain on purpose, so the attack runs in a database of its own.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest_asyncio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from activities.attempts import attempt_record
from renkei.app.citizen import records_for_subject
from renkei.contracts.messages import LinkageRequest
from renkei.kernel import keys, records
from renkei.kernel.db import create_pool, migrate
from renkei.kernel.settings import Settings
from whitelist.decide import Decision

from .test_receipts import BPF, EXECUTOR, _probe_attempt


@pytest_asyncio.fixture
async def own_db(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    name = f"renkei_vouched_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(database_url)
    await admin.execute(f"CREATE DATABASE {name}")
    await admin.close()
    url = urlunsplit(urlsplit(database_url)._replace(path=f"/{name}"))
    await migrate(url)
    pool = await create_pool(url, max_size=2)
    try:
        yield pool
    finally:
        await pool.close()
        admin = await asyncpg.connect(database_url)
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await admin.close()


async def _forged_record(
    pool: asyncpg.Pool, subject: str, signer: records.RecordSigner | None
) -> str:
    """A hub record of an exchange that never happened, written with the application's role:
    unsigned (``signer`` None) or signed with a key that is not the hub's."""
    wid = f"{BPF}/{EXECUTOR}/forged-{uuid.uuid4().hex[:8]}"
    req = LinkageRequest(
        requester=EXECUTOR,
        provider="jps",
        task="child-allowance",
        info="pension-benefit",
        subject="code",
        bpf=BPF,
        bpf_version=1,
        content_hash="sha256:x",
        step="pension",
    )
    await records.write(
        pool,
        attempt_record(
            keeper=records.HUB,
            subject_code=subject,
            req=req,
            decision=Decision(allowed=True, reason="forged"),
            decided_at=dt.datetime.now(dt.UTC),
            workflow_id=wid,
            run_id="run",
            key=f"{wid}/run/pension",
        ),
        signer=signer,
    )
    return wid


async def test_a_record_or_outcome_no_one_entitled_signed_is_flagged_and_says_nothing(
    own_db: asyncpg.Pool, settings: Settings, catalog
) -> None:
    pool = own_db
    hub = records.RecordSigner(records.HUB, keys.load(settings).signer())
    stranger = records.RecordSigner(records.HUB, Ed25519PrivateKey.generate())
    subject = str(uuid.uuid4())
    # Two real exchanges: one the hub says failed, one whose outcome the forger makes up.
    failed, _ = await _probe_attempt(pool, hub, "jps", subject=subject)
    await records.record_outcome(pool, failed, "failed", hub)
    pending, _ = await _probe_attempt(pool, hub, "jps", subject=subject)
    await records.record_outcome(pool, pending, "failed", stranger)
    # Two that never happened: one unsigned, one signed in the hub's name with another key.
    unsigned = await _forged_record(pool, subject, None)
    signed_by_another = await _forged_record(pool, subject, stranger)

    seen = {
        r.application: (r.vouched, r.exchange)
        for r in await records_for_subject(
            pool, catalog, uuid.UUID(subject), hub=hub.key.public_key()
        )
    }
    assert seen == {
        failed.rsplit("/", 2)[0]: (True, "failed"),
        # The hub's record holds; the outcome it did not sign is not taken.
        pending.rsplit("/", 2)[0]: (False, "pending"),
        unsigned: (False, "pending"),
        signed_by_another: (False, "pending"),
    }
