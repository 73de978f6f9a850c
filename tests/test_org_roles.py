"""An org added at run time gets its own database role (migration 0041), in the transaction that
adds it: its login (`renkei agencies db-login`) is a member of that role only, its worker serves
linkages on it, and with it nothing of the hub's nor of another org's can be read."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import uuid
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import asyncpg
import pytest
from temporalio.client import Client
from typer.testing import CliRunner

from renkei.app.bootstrap import issue_keys
from renkei.app.citizen import subject_of_portal_code
from renkei.app.client import RenkeiClient
from renkei.kernel import keys, records
from renkei.kernel.db import party_role
from renkei.kernel.pseudonyms import PORTAL, Pseudonyms, derive_code
from renkei.kernel.settings import Settings
from whitelist import orgs
from whitelist.models import Held
from whitelist.store import LiveWhitelist

from .helpers import access_record, give_pias, hub_key, run, workers
from .processes import wired, worker
from .test_orgs import _active, _check


def _as_login(url: str, user: str, password: str) -> str:
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{quote(user)}:{quote(password)}@{host}"))


def _new(kind: str = "municipal") -> orgs.NewOrg:
    org = f"city-r{uuid.uuid4().hex[:8]}"
    return orgs.NewOrg(
        id=org,
        ja="新市",
        en="New City",
        kind=kind,  # type: ignore[arg-type]
        roles=(Held(id="municipal-mayor"),),
        serves=(Held(id="local-tax"),),
    )


async def test_the_role_comes_with_the_add_and_goes_with_a_refused_one(
    pool: asyncpg.Pool, catalog
) -> None:
    new = _new()
    role = party_role(new.id)
    await orgs.add(pool, catalog, new, "test", "platform-operator", hub=hub_key())
    try:
        got = await pool.fetchrow(
            "SELECT r.rolcanlogin, pg_has_role(r.oid, 'renkei_party', 'MEMBER') AS party,"
            " (SELECT party FROM trust.db_roles WHERE role = r.rolname) AS org,"
            " has_schema_privilege(r.oid, $2, 'USAGE') AS own_schema"
            " FROM pg_roles r WHERE r.rolname = $1",
            role,
            "agency_" + new.id.replace("-", "_"),
        )
        assert got is not None, f"no role {role}"
        assert dict(got) == {"rolcanlogin": False, "party": True, "org": new.id, "own_schema": True}
        # the same id again is refused, and the role is left as it was
        with pytest.raises(orgs.OrgChangeRefused, match="already registered"):
            await orgs.add(pool, catalog, new, "test", "platform-operator", hub=hub_key())
    finally:
        await orgs.transition(pool, new.id, "retired", "test", "platform-operator", hub=hub_key())
    # an add the registry refuses (an unknown role) makes no role either
    refused = _new().model_copy(update={"roles": (Held(id="no-such-role"),)})
    with pytest.raises(orgs.OrgChangeRefused):
        await orgs.add(pool, catalog, refused, "test", "platform-operator", hub=hub_key())
    assert not await pool.fetchval(
        "SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)", party_role(refused.id)
    )
    # the application's own role cannot make one for a name the registry does not hold
    with pytest.raises(asyncpg.RaiseError, match="no org city-nowhere in the registry"):
        await pool.fetchval("SELECT trust.make_party_role('city-nowhere')")


async def test_an_org_added_at_run_time_serves_on_its_own_login_and_reads_nothing_of_the_hubs(
    client: Client,
    pool: asyncpg.Pool,
    settings: Settings,
    catalog,
    live_whitelist: LiveWhitelist,
    cli: CliRunner,
    tmp_path: Path,
) -> None:
    new = _new()
    settings = wired(settings, new.id)  # its process's endpoint, if linkages go direct
    address = client.service_client.config.target_host
    rc = RenkeiClient(client, settings, catalog=live_whitelist.bind(catalog))
    async with workers(client, pool, settings, catalog, live_whitelist):  # the hub and samples
        await _active(pool, settings, catalog, new)
        await issue_keys(pool, settings, [new.id])
        await give_pias(pool, live_whitelist)

        password = secrets.token_urlsafe(24)
        secret = tmp_path / "db.password"
        secret.write_text(password)
        code, out = await asyncio.to_thread(
            run, cli, "agencies", "db-login", new.id, "--password-file", str(secret)
        )
        assert code == 0, out
        login = out.splitlines()[0]
        assert login == "renkei_login_" + new.id.replace("-", "_")
        assert settings.database_url
        own = _as_login(settings.database_url, login, password)

        # its worker, a process of its own on its own login, with its own providers
        process = await asyncio.to_thread(
            worker,
            settings,
            address,
            "agency",
            new.id,
            "--providers",
            "tests.test_orgs:tax_office",
            RENKEI_DATABASE_URL=own,
        )
        try:
            handle = await _check(rc, settings, new.id, 3)
            assert (await asyncio.wait_for(handle.result(), 60)).outcome == "completed"
        finally:
            process.stop()
    try:
        kept = {
            (r.keeper, r.outcome)
            for r in await records.query(pool, workflow_id=handle.id)
            if r.provider == new.id
        }
        # its own side of the answer is in its own chain: written by its worker, on its login
        assert kept == {(records.HUB, "allowed"), ("city-minato", "allowed"), (new.id, "allowed")}
        await _cannot_leave(own, login, new.id)
    finally:
        await orgs.transition(pool, new.id, "retired", "test", "platform-operator", hub=hub_key())


async def _cannot_leave(own: str, login: str, org: str) -> None:
    """With the org's login: its role reads the registry; nothing of the hub's nor of another
    org's is readable, whichever role it tries to take."""

    conn = await asyncpg.connect(own)
    try:
        assert await conn.fetchval("SELECT current_user") == login
        await conn.execute(f'SET ROLE "{party_role(org)}"')  # what its worker does
        assert await conn.fetchval("SELECT count(*) FROM whitelist.orgs WHERE id = $1", org)
        for escape in ("RESET ROLE", "SET ROLE renkei_app", "SET ROLE renkei_org_city_minato"):
            with contextlib.suppress(asyncpg.PostgresError):
                await conn.execute(escape)
            for table in (
                "hub.subject_codes",
                "hub.individuals",
                "agency_city_minato.residents",
                "codec.operators",
            ):
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    await conn.fetch(f"SELECT * FROM {table} LIMIT 1")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.fetchval("SELECT trust.make_party_role($1)", org)
    finally:
        await conn.close()


async def test_no_org_is_registered_under_the_platforms_own_party_id(
    pool, settings: Settings, catalog
) -> None:
    """The platform's party id (``hub``) is no org's. Registered as one (by the application's
    role straight into the registry, or through the registry's own add), it would get a
    database role the row-level security takes for the hub's: whoever is given its login
    reads the hub's chain of every citizen's records. Both are refused; nothing is made."""
    hub_signer = records.RecordSigner(records.HUB, keys.load(settings).signer())
    async with pool.acquire() as conn:
        tx = conn.transaction()  # rolled back: the shared chains are left as they were
        await tx.start()
        try:
            # the hub's chain holds at least this record
            await records.append(
                conn, [access_record(records.HUB, 0, attempt_key=str(uuid.uuid4()))], hub_signer
            )
            with pytest.raises(asyncpg.PostgresError):
                await conn.execute(
                    "INSERT INTO whitelist.orgs (id, ja, en, kind) VALUES"
                    " ('hub', 'ハブ', 'Hub', 'municipal')"
                )
                await conn.fetchval("SELECT trust.make_party_role('hub')")
                # what such a role would read, once its login is given out
                await conn.execute("RESET ROLE")
                await conn.execute(f"SET LOCAL ROLE {party_role(records.HUB)}")
                assert not await conn.fetchval(
                    "SELECT count(*) FROM records.access_records WHERE keeper = 'hub'"
                ), "a role for an org named hub reads the hub's chain"
        finally:
            await tx.rollback()
    hub = _new().model_copy(update={"id": records.HUB})
    with pytest.raises(orgs.OrgChangeRefused, match="the platform's own party id"):
        await orgs.add(pool, catalog, hub, "test", "platform-operator", hub=hub_key())
    assert not await pool.fetchval(
        "SELECT EXISTS (SELECT 1 FROM whitelist.orgs WHERE id = $1)", records.HUB
    )


async def test_no_org_is_registered_under_the_citizens_code_space(
    pool, settings: Settings, catalog
) -> None:
    """The hub derives an org's code for a person from the org's id; the citizens' own code
    space is ``portal``. An org registered under it would be given, as its code for each person
    it asks or answers about, that person's portal sign-in code (with which the portal shows
    their records and takes their answers as theirs). Refused, by the registry and its table."""
    person = uuid.uuid4()
    await Pseudonyms(pool, keys.load(settings).hub_key).enroll([person], [PORTAL])
    as_an_org = derive_code(keys.load(settings).hub_key, PORTAL, person)
    # what such an org's code for the person would be: the citizen's own sign-in
    assert (
        await subject_of_portal_code(Pseudonyms(pool, keys.load(settings).hub_key), as_an_org)
        == person
    )
    portal = _new().model_copy(update={"id": PORTAL})
    with pytest.raises(orgs.OrgChangeRefused, match="the citizens' own code space"):
        await orgs.add(pool, catalog, portal, "test", "platform-operator", hub=hub_key())
    with pytest.raises(asyncpg.CheckViolationError):
        await pool.execute(
            "INSERT INTO whitelist.orgs (id, ja, en, kind) VALUES ($1, 'ポータル', 'Portal', 'municipal')",
            PORTAL,
        )


async def test_a_role_written_into_the_registry_past_its_changes_decides_nothing(
    pool: asyncpg.Pool, settings: Settings, catalog, live_whitelist: LiveWhitelist
) -> None:
    """A role written straight into the org registry (the application's role can write it)
    would let an org ask and answer under every whitelist row naming that role; an org set
    active straight in its table would skip its contract test and certificate. The registry is
    sealed with the whitelist: a worker reads it only as the hub sealed it (one running keeps
    what it had, one starting does not start), and the hub changes nothing over it."""
    from whitelist.seal import WhitelistUnsealed

    before = live_whitelist.orgs["city-minato"].roles
    assert "jasso" not in before

    async def fresh() -> LiveWhitelist:
        live = LiveWhitelist(settings.database_url or "", sealed_by=hub_key().public_key())
        await live.start()
        await live.stop()
        return live

    waiting = _new()  # an org that has not passed its contract test nor been certified
    await orgs.add(pool, catalog, waiting, "test", "platform-operator", hub=hub_key())
    async with asyncio.timeout(30):  # the hub's change reached the worker before any forged one
        while waiting.id not in live_whitelist.orgs:  # noqa: ASYNC110 (a notice it reloads on)
            await asyncio.sleep(0.05)
    for forged, undo in [
        (
            "INSERT INTO whitelist.org_roles (org, role) VALUES ('city-minato', 'jasso')",
            "DELETE FROM whitelist.org_roles WHERE org = 'city-minato' AND role = 'jasso'",
        ),
        (
            f"UPDATE whitelist.orgs SET status = 'active' WHERE id = '{waiting.id}'",
            f"UPDATE whitelist.orgs SET status = 'registered' WHERE id = '{waiting.id}'",
        ),
    ]:
        async with pool.acquire() as conn, conn.transaction():  # the application's role
            await conn.execute(forged)
            version = await conn.fetchval(
                "UPDATE whitelist.version SET version = version + 1 RETURNING version"
            )
            await conn.execute("SELECT pg_notify('renkei_whitelist', $1)", str(version))
        try:
            await asyncio.sleep(1.0)  # the notice reached the worker, which refused the read
            assert live_whitelist.orgs["city-minato"].roles == before
            assert live_whitelist.orgs[waiting.id].status == "registered"
            with pytest.raises(WhitelistUnsealed, match="not what the hub sealed"):
                await fresh()
            with pytest.raises(WhitelistUnsealed, match="no load or registry change"):
                await orgs.transition(
                    pool, "city-minato", "suspended", "test", "platform-operator", hub=hub_key()
                )
        finally:
            await pool.execute(undo)
    assert "jasso" not in (await fresh()).orgs["city-minato"].roles
    await orgs.transition(pool, waiting.id, "retired", "test", "platform-operator", hub=hub_key())
