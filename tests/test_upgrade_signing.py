"""An installation upgraded from before the PIAs and suspensions, the individual numbers and
the hold approvals were the hub's word (migrations 0059 to 0061): what it held before is carried
over by the hub at its next start, as it stood, and nothing written past the hub since is."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
import pytest_asyncio

from renkei.kernel import holds, keys
from renkei.kernel.db import MIGRATIONS_DIR, create_pool, migrate
from renkei.kernel.pseudonyms import (
    IndividualAltered,
    Pseudonyms,
    number_hash,
    synthetic_number,
)
from renkei.kernel.settings import Settings
from whitelist import controls_store
from workers.carried import carry_over_unsigned

FIRST_SIGNED = "0059"
TASK = "child-rearing-allowance"


@pytest_asyncio.fixture
async def before(database_url: str) -> AsyncIterator[str]:
    """A database of its own, migrated up to the last version before signing."""
    name = f"renkei_upgrade_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(database_url)
    await admin.execute(f"CREATE DATABASE {name}")
    await admin.close()
    url = urlunsplit(urlsplit(database_url)._replace(path=f"/{name}"))
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(
            "CREATE TABLE public.renkei_migrations ("
            " name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        for path in sorted(MIGRATIONS_DIR.glob("*.sql")):
            if path.name >= FIRST_SIGNED:
                break
            async with conn.transaction():
                await conn.execute(path.read_text(encoding="utf-8"))
                await conn.execute(
                    "INSERT INTO public.renkei_migrations (name) VALUES ($1)", path.name
                )
    finally:
        await conn.close()
    try:
        yield url
    finally:
        admin = await asyncpg.connect(database_url)
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await admin.close()


async def test_what_an_upgrade_found_is_carried_over_once_and_nothing_written_since(
    before: str, base_settings: Settings
) -> None:
    settings = base_settings.model_copy(update={"database_url": before})
    k = keys.load(settings)
    number = synthetic_number(uuid.uuid4())
    subject = uuid.uuid4()
    today = dt.date.today()
    old = await asyncpg.connect(before)  # the release before: its writes as they were
    try:
        pia = (
            "INSERT INTO controls.pia_events (org, task, level, approved_on, review_due, status,"
            " recorded_by) VALUES ($1, $2, 'full', $3, $4, $5, 'before')"
        )
        await old.execute(pia, "city-minato", TASK, today, today + dt.timedelta(days=99), "active")
        await old.execute(
            pia, "pref-tokyo", TASK, today, today + dt.timedelta(days=99), "withdrawn"
        )
        stop = (
            "INSERT INTO controls.suspension_events (kind, target, action, reason, operator)"
            " VALUES ('row', $1, $2, 'before', 'before')"
        )
        await old.execute(stop, "row-still-stopped", "suspend")
        await old.execute(stop, "row-lifted", "suspend")
        await old.execute(stop, "row-lifted", "lift")
        await old.execute(
            "INSERT INTO hub.individuals (number_hash, subject_id) VALUES ($1, $2)",
            number_hash(k.hub_key, number),
            subject,
        )
        hold = uuid.uuid4()
        until = dt.datetime.now(dt.UTC) + dt.timedelta(days=30)
        await old.execute(
            "INSERT INTO hub.holds (id, executor, bpf, case_ref, reason, until, requested_by)"
            " VALUES ($1, 'city-minato', 'register-probe', 'case-old', 'investigation', $2,"
            " 'city-minato')",
            hold,
            until,
        )
        await old.execute(
            "UPDATE hub.holds SET approved_by = 'operator-alice', approved_at = now()"
            " WHERE id = $1",
            hold,
        )
        pending = uuid.uuid4()  # asked before requests named their person, not yet approved
        await old.execute(
            "INSERT INTO hub.holds (id, executor, bpf, case_ref, reason, until, requested_by)"
            " VALUES ($1, 'city-minato', 'register-probe', 'case-pending', 'investigation', $2,"
            " 'city-minato')",
            pending,
            until,
        )
    finally:
        await old.close()
    await migrate(before)
    pool = await create_pool(before, max_size=2)
    try:
        hub = k.signer().public_key()
        # Past the migration, before the hub's start: none of it is the hub's word yet.
        assert await controls_store.pias(pool, hub=hub) == []
        assert await controls_store.suspensions(pool, hub=hub) == []
        with pytest.raises(IndividualAltered):
            await Pseudonyms(pool, k.hub_key).enroll_number(number, "city-minato")
        wid = "register-probe/city-minato/case-old"
        with pytest.raises(holds.HoldNotApproved, match="not the platform's"):
            await holds.check(pool, "city-minato", hold, "investigation", until, wid, hub=hub)
        # Written past the hub meanwhile (the application's role): events marked signed (as if
        # the hub had signed something already), a junk binding, a junk approval signature.
        await pool.execute(
            "INSERT INTO controls.suspension_events (kind, target, action, reason, operator,"
            " signing_id, signature) VALUES ('row', 'x', 'lift', 'x', 'x', $1, 'x')",
            keys.key_id(keys.public_raw(k.signer().public_key())),
        )
        await pool.execute(
            "UPDATE hub.individuals SET binding = 'junk' WHERE number_hash = $1",
            number_hash(k.hub_key, number),
        )
        await pool.execute("UPDATE hub.holds SET approval_signature = 'junk' WHERE id = $1", hold)
        # And an active PIA of its own.
        await pool.execute(
            "INSERT INTO controls.pia_events (org, task, level, approved_on, review_due,"
            " status, recorded_by) VALUES ('city-shibuya', $1, 'full', $2, $3, 'active', 'x')",
            TASK,
            today,
            today + dt.timedelta(days=99),
        )
        await carry_over_unsigned(pool, settings)
        in_force = {(p.org, p.status) for p in await controls_store.pias(pool, hub=hub)}
        assert in_force == {("city-minato", "active"), ("pref-tokyo", "withdrawn")}
        stopped = await controls_store.suspensions(pool, hub=hub)
        assert [s.target for s in stopped] == ["row-still-stopped"]
        code = await Pseudonyms(pool, k.hub_key).enroll_number(number, "city-minato")
        assert await Pseudonyms(pool, k.hub_key).subject_of("city-minato", code) == subject
        assert (
            await holds.check(pool, "city-minato", hold, "investigation", until, wid, hub=hub)
        ).id == hold
        # Approved before requests named their person, it covers its case as it did (0062); one
        # still pending then names no one, and is approved no more, by any role.
        assert (
            await holds.check(
                pool, "city-minato", hold, "investigation", until, wid, hub=hub, subject="ANYONE"
            )
        ).subject is None
        with pytest.raises(holds.HoldNotApproved, match="no pending hold"):
            await holds.approve(pool, pending, "operator-bob", hub=k.signer())
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="approved no more"):
            await pool.execute(
                "UPDATE hub.holds SET approved_by = 'operator-bob' WHERE id = $1", pending
            )
        # The hub's next start carries nothing more, whatever was written since; a junk
        # binding or signature written on a row from before is put right again.
        await pool.execute(
            "UPDATE hub.individuals SET binding = 'junk' WHERE number_hash = $1",
            number_hash(k.hub_key, number),
        )
        with pytest.raises(IndividualAltered):
            await Pseudonyms(pool, k.hub_key).enroll_number(number, "city-minato")
        await carry_over_unsigned(pool, settings)
        assert await Pseudonyms(pool, k.hub_key).enroll_number(number, "city-minato") == code
        assert await controls_store.carry_over(pool, k.signer()) == 0
        assert await Pseudonyms(pool, k.hub_key).bind_before() == 0
        assert await holds.sign_before(pool, k.signer()) == 0
        assert {p.org for p in await controls_store.pias(pool, hub=hub)} == {
            "city-minato",
            "pref-tokyo",
        }
    finally:
        await pool.close()
