"""Multi-process deployment: the control worker and agency workers as separate OS processes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import secrets
from urllib.parse import quote, urlsplit, urlunsplit

import pytest
from temporalio.client import Client, WorkflowFailureError
from temporalio.exceptions import ApplicationError

from renkei.contracts.names import HUB, is_act_activity, is_query_activity
from renkei.kernel.settings import Settings

from .helpers import (
    allowance_check,
    records_by_party,
    sdk,
    shibuya_family,
    through_queues,
    undone_as_owner,
)
from .processes import (
    ROOT,
    RenkeiProcess,
    all_ready,
    control_plane,
    direct_endpoints,
    direct_env,
    renkei_command,
    wired,
    worker,
)


def _as_login(url: str, user: str, password: str) -> str:
    """``url`` logging in as ``user``."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{quote(user)}:{quote(password)}@{host}"))


async def test_an_agency_on_its_own_database_login_serves_and_cannot_leave_its_role(
    client: Client, pool, settings: Settings
) -> None:
    """city-shibuya's worker connects with its own login (`renkei agencies db-login`): it
    serves its linkages as before; with that login, leaving its role (RESET ROLE) or taking
    the platform's (SET ROLE renkei_app) gets nothing of the hub's."""
    import asyncpg

    from renkei.kernel.db import create_login

    password = secrets.token_urlsafe(24)
    login = await create_login(pool, "city-shibuya", password)
    assert settings.database_url
    own = _as_login(settings.database_url, login, password)
    address = client.service_client.config.target_host
    settings = wired(settings, "city-shibuya", "jps")  # over the direct channel, its endpoint
    procs = all_ready(
        [
            *control_plane(settings, address, ready=False),
            worker(
                settings, address, "agency", "city-shibuya", ready=False, RENKEI_DATABASE_URL=own
            ),
            worker(settings, address, "agency", "jps", ready=False),
        ]
    )
    try:
        handle = await sdk(client, settings).start(allowance_check(settings))
        result = await asyncio.wait_for(handle.result(), 60)
    finally:
        for p in procs:
            p.stop()
    assert ("city-shibuya", "provided") in {(x.provider, x.outcome) for x in result.linkages}
    conn = await asyncpg.connect(own)
    try:
        for escape in ("RESET ROLE", "SET ROLE renkei_app", "SET ROLE renkei_org_jps"):
            with contextlib.suppress(asyncpg.PostgresError):
                await conn.execute(escape)
            for table in ("hub.subject_codes", "hub.individuals", "agency_jps.pensions"):
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    await conn.fetch(f"SELECT * FROM {table} LIMIT 1")
    finally:
        await conn.close()


async def test_hub_executor_and_two_agencies_as_processes_complete_a_flow(
    client: Client, pool, settings: Settings
) -> None:
    """Through the providers' queues, whatever the suite's transport (each process told so by
    its settings): the direct channel's production shape is the next test's."""
    address = client.service_client.config.target_host
    settings = through_queues(settings)
    procs = all_ready(
        [
            *control_plane(settings, address, ready=False),
            worker(settings, address, "agency", "city-shibuya", ready=False),
            worker(settings, address, "agency", "jps", ready=False),
        ]
    )
    try:
        family = shibuya_family(settings)
        handle = await sdk(client, settings).start(allowance_check(settings))
        result = await asyncio.wait_for(handle.result(), 60)
    finally:
        for p in procs:
            p.stop()
    assert result.result["taxable_income"] == family.members[0].taxable_income
    assert {(x.provider, x.outcome) for x in result.linkages} == {
        ("city-shibuya", "provided"),
        ("jps", "provided"),
    }
    kept = await records_by_party(pool, handle.id)
    assert {k: len(v) for k, v in kept.items()} == {
        (party, step): 1
        for party in ("requester", "hub", "provider")
        for step in ("tax", "pension")
    }
    # Stopped with SIGTERM, each process shut down on its own (no SIGKILL needed).
    assert all(p.process.returncode == 0 for p in procs), [p.output for p in procs]


async def test_the_direct_channel_with_every_party_in_its_own_process(
    client: Client, pool, settings: Settings
) -> None:
    """Deployed as in production: the hub's worker, Minato's control worker and the two
    providers' agencies each a ``renkei worker`` process, told of the direct channel by their
    settings alone (each agency listens on its own port, the control process knows them). The
    flow asks both providers directly: nothing crosses a provider's queue, and each party keeps
    exactly one record of each attempt."""
    address = client.service_client.config.target_host
    endpoints = direct_endpoints("city-shibuya", "jps")

    def started(kind: str, *args: str) -> RenkeiProcess:
        return worker(
            settings, address, kind, *args, ready=False, **direct_env(endpoints, kind, *args)
        )

    procs = all_ready(
        [
            started("hub"),
            started("control", "city-minato"),
            started("agency", "city-shibuya"),
            started("agency", "jps"),
        ]
    )
    hub, control, shibuya, jps = procs
    try:
        family = shibuya_family(settings)
        # resolved at the hub's endpoint too
        resolving = settings.model_copy(update={"hub_transport": "direct"})
        handle = await sdk(client, resolving).start(allowance_check(settings))
        result = await asyncio.wait_for(handle.result(), 60)
        history = await handle.fetch_history()
    finally:
        for p in procs:
            p.stop()
    # Each agency's ready line names the endpoint it serves; the control process, whom it asks.
    for org, agency in (("city-shibuya", shibuya), ("jps", jps)):
        assert f"serving linkages directly on {endpoints[org]}" in agency.output, agency.output
    assert "knows the direct-channel endpoints of city-shibuya, jps" in control.output, (
        control.output
    )
    # The hub's, that it serves its own endpoint (the flow was resolved over it).
    assert f"serving the hub's endpoint on {endpoints[HUB]}" in hub.output, hub.output
    assert "knows the direct-channel endpoints of city-shibuya, jps, and the hub's" in (
        control.output
    )
    assert "serving linkages directly" not in hub.output + control.output
    assert result.result["taxable_income"] == family.members[0].taxable_income
    assert {(x.provider, x.outcome) for x in result.linkages} == {
        ("city-shibuya", "provided"),
        ("jps", "provided"),
    }
    # No linkage was an activity on a provider's queue: each is the flow's local activity.
    scheduled = [
        e.activity_task_scheduled_event_attributes.activity_type.name
        for e in history.events
        if e.HasField("activity_task_scheduled_event_attributes")
    ]
    assert scheduled and not [n for n in scheduled if is_query_activity(n) or is_act_activity(n)], (
        scheduled
    )
    assert "hub.resolve" not in scheduled, scheduled  # resolved at the hub's endpoint
    markers = [e for e in history.events if e.HasField("marker_recorded_event_attributes")]
    assert len(markers) >= 2  # the two linkages' answers, as the local activity's markers
    kept = await records_by_party(pool, handle.id)
    assert {k: len(v) for k, v in kept.items()} == {
        (party, step): 1
        for party in ("requester", "hub", "provider")
        for step in ("tax", "pension")
    }
    assert all(p.process.returncode == 0 for p in procs), [p.output for p in procs]


async def test_a_control_process_that_knows_no_endpoint_fails_the_step_naming_the_setting(
    client: Client, pool, settings: Settings
) -> None:
    """The hub tells the runs to ask directly, but Minato's control process was given no
    RENKEI_LINKAGE_ENDPOINTS: its ready line says so, and the flow fails (once the step's
    retries are spent) naming the missing setting; no provider was asked, so none kept a
    record."""
    address = client.service_client.config.target_host
    endpoints = direct_endpoints("city-shibuya", "jps")
    procs = all_ready(
        [
            worker(settings, address, "hub", ready=False, **direct_env(endpoints, "hub")),
            worker(
                settings,
                address,
                "control",
                "city-minato",
                ready=False,
                RENKEI_LINKAGE_TRANSPORT="direct",
                # the hub's endpoint only
                RENKEI_LINKAGE_ENDPOINTS=json.dumps({HUB: endpoints[HUB]}),
            ),
            *[
                worker(
                    settings,
                    address,
                    "agency",
                    org,
                    ready=False,
                    **direct_env(endpoints, "agency", org),
                )
                for org in endpoints
                if org != HUB
            ],
        ]
    )
    control = procs[1]
    try:
        handle = await sdk(client, settings).start(allowance_check(settings))
        with pytest.raises(WorkflowFailureError) as failed:
            await asyncio.wait_for(handle.result(), 120)
    finally:
        for p in procs:
            p.stop()
    assert "no provider's direct-channel endpoint is known (RENKEI_LINKAGE_ENDPOINTS)" in (
        control.output
    )
    cause = failed.value.cause
    assert isinstance(cause, ApplicationError), cause
    assert "no direct endpoint is configured for" in cause.message, cause.message
    assert "(RENKEI_LINKAGE_ENDPOINTS)" in cause.message
    kept = await records_by_party(pool, handle.id)
    assert not [k for k in kept if k[0] == "provider"], kept


def test_a_worker_without_servers_to_join_says_so(tmp_path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RENKEI_")}
    env["RENKEI_DATA_DIR"] = str(tmp_path)
    done = renkei_command("worker", "hub", env=env, timeout=60)
    assert done.returncode == 2
    assert "no servers to join" in done.stderr


async def test_serve_runs_the_web_app_as_its_own_process(
    client: Client, settings: Settings
) -> None:
    import httpx

    from .conftest import free_port
    from .processes import RenkeiProcess, renkei_env

    port = free_port()
    env = renkei_env(settings, client.service_client.config.target_host, RENKEI_WEB_PORT=str(port))
    web = RenkeiProcess(["serve"], env, "serving").wait_ready()
    try:
        async with httpx.AsyncClient(base_url=f"http://localhost:{port}") as http:
            assert (await http.get("/healthz")).json() == {"status": "ok"}
            spec = (await http.get("/api/openapi.json")).json()
            assert "/api/flows" in spec["paths"]
            assert (await http.post("/api/flows", json={})).status_code == 401
    finally:
        web.stop()
    assert web.process.returncode == 0, web.output


def test_start_exits_cleanly_every_time(client: Client, pool, settings: Settings, tmp_path) -> None:
    """``renkei start`` prints its run and exits 0, every time: no Temporal thread is left to
    abort the interpreter at exit (``Fatal Python error: PyGILState_Release``, exit 134, in
    about one run in five before)."""
    from .processes import renkei_env

    flow = allowance_check(settings)
    env = renkei_env(
        settings, client.service_client.config.target_host, RENKEI_DATA_DIR=str(tmp_path)
    )
    for n in range(10):
        done = renkei_command(
            *("start", flow.bpf, "--executor", flow.executor, "--subject", flow.subject),
            *(f"--input={k}={v}" for k, v in flow.inputs.items()),
            *("--case-ref", f"{flow.case_ref}-{n}", "--no-wait"),
            env=env,
            timeout=60,
        )
        assert done.returncode == 0, (n, done.returncode, done.stdout, done.stderr)
        assert done.stdout.startswith(f"workflow {flow.bpf}/{flow.executor}/"), done.stdout
        assert "Fatal Python error" not in done.stderr, done.stderr


async def test_the_schema_a_worker_needs_is_read_as_any_partys_role(
    pool, settings: Settings, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker checks, as it starts, that `renkei init` migrated the database to its release:
    as the platform's role or an org's (which reads which migrations are applied, not their
    table); a release knowing one more, or a database from before they could be read, is told
    what is missing."""
    import asyncpg

    from renkei.kernel import db

    await db.require_schema(pool)  # as the platform's role: the session's schema is whole
    assert settings.database_url
    agency = await db.create_pool(
        settings.database_url, max_size=1, role=db.party_role("city-minato")
    )
    try:
        await db.require_schema(agency)
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await agency.fetch("SELECT name FROM public.renkei_migrations")
        # A release that knows one migration more than the database has.
        later = tmp_path / "migrations"
        later.mkdir()
        for path in db.MIGRATIONS_DIR.glob("*.sql"):
            (later / path.name).write_text("")
        (later / "9999_a_later_release.sql").write_text("")
        monkeypatch.setattr(db, "MIGRATIONS_DIR", later)
        with pytest.raises(
            db.SchemaBehind, match=re.escape("from 9999_a_later_release.sql to 9999")
        ):
            await db.require_schema(agency)
    finally:
        await agency.close()
    # The database of a release from before the migrations could be read (the function taken
    # away in a transaction rolled back).
    async with undone_as_owner(pool) as conn:
        await conn.execute("DROP FUNCTION public.renkei_migrations_applied()")
        with pytest.raises(
            db.SchemaBehind, match=re.escape("from before 0068_schema_readable.sql")
        ):
            await db.require_schema(conn)  # type: ignore[arg-type]
    # A role the grant did not reach (made by hand after the migration) is told what to grant.
    async with undone_as_owner(pool) as conn:
        await conn.execute(
            "REVOKE EXECUTE ON FUNCTION public.renkei_migrations_applied() FROM renkei_party"
        )
        await conn.execute(f'SET LOCAL ROLE "{db.party_role("city-minato")}"')
        with pytest.raises(db.SchemaBehind, match="may not read which migrations"):
            await db.require_schema(conn)  # type: ignore[arg-type]


def test_a_worker_on_a_database_behind_its_release_stops_naming_the_migrations(
    client: Client, settings: Settings, tmp_path
) -> None:
    """A worker started before `renkei init` migrated the database to its release stops at
    once, exit 2, naming what is missing, instead of failing each write on a column it expects
    (here a release one migration ahead of the database)."""
    from .processes import renkei_env

    env = renkei_env(settings, client.service_client.config.target_host)
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), env.get("PYTHONPATH") or str(ROOT)])
    (tmp_path / "sitecustomize.py").write_text(
        "import pathlib, shutil, tempfile\n"
        "from renkei.kernel import db\n"
        "later = pathlib.Path(tempfile.mkdtemp())\n"
        "for p in db.MIGRATIONS_DIR.glob('*.sql'): shutil.copy(p, later)\n"
        "(later / '9999_a_later_release.sql').write_text('')\n"
        "db.MIGRATIONS_DIR = later\n"
    )
    done = renkei_command("worker", "agency", "city-minato", env=env, timeout=120)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "lacks 1 migration(s) of this release, from 9999_a_later_release.sql" in done.stderr
    assert "renkei init" in done.stderr
