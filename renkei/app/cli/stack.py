"""Running renkei: the whole stack in one process (``up``, ``demo``), or its parts as separate
processes joining running servers (``init``, ``serve``, ``worker hub|control|agency``)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Annotated, Any, Literal, NoReturn

import asyncpg
import typer

from renkei.app.bootstrap import prepare
from renkei.app.cli.runtime import check_keys, joined, run_async
from renkei.app.client import RenkeiClient
from renkei.app.stack import StackDown, embedded, embedded_stack
from renkei.contracts.names import HUB
from renkei.kernel import keys
from renkei.kernel.db import create_pool, migrate
from renkei.kernel.search_attributes import ensure_registered
from renkei.kernel.servers import clear_state
from renkei.kernel.settings import Settings, get_settings
from whitelist.catalog import default_catalog
from whitelist.store import LiveWhitelist
from workers.plugin import connect

worker_app = typer.Typer(
    help="One worker as its own process, joining running servers.", no_args_is_help=True
)


@run_async
async def up(
    gateway: Annotated[
        bool,
        typer.Option(
            "--gateway",
            help="guarded, as deployed: `renkei gateway` in front of Temporal (on"
            " RENKEI_GATEWAY_LISTEN), each party's workers through it with their own certificate"
            " (a CA and certificates made under <data folder>/tls on the first start)",
        ),
    ] = False,
) -> int | None:
    """Run the whole stack in the foreground: Temporal, PostgreSQL, workers. Ctrl-C stops it.

    A server it started that dies is started again on its data (a few attempts, waiting longer
    each time); if it does not come back, renkei stops with a message and exit code 1."""
    settings = get_settings()
    with embedded_stack(settings) as stack:
        if stack.started:
            stack.write_state()
        try:
            await _serve(
                settings,
                stack.temporal_address,
                stack.database_url,
                None,
                watch=stack.supervise if stack.temporal or stack.postgres else None,
                gateway=gateway,
            )
        except StackDown as down:
            typer.echo(f"error: {down}. renkei stopped.", err=True)
            return 1
        except ValueError as err:  # the gateway's files or address
            typer.echo(f"error: {err}", err=True)
            return 2
        finally:
            if stack.started:
                clear_state(settings.data_dir)
    return None


@run_async
async def demo() -> int:
    """Run the sample flows and print outcomes, linkages, records and UI links."""
    from renkei.app.demo import run_demo

    settings = get_settings()
    unexpected = 0
    with embedded(settings) as (address, url, started):

        async def ready(client: RenkeiClient, pool: asyncpg.Pool) -> None:
            nonlocal unexpected
            unexpected = await run_demo(settings, pool, client, typer.echo)

        await _serve(settings, address, url, ready)
        if started:
            typer.echo(
                "(the embedded stack was started for the demo and is stopped now; "
                "`renkei up` keeps it running with the UI)"
            )
    return 1 if unexpected else 0


@run_async
async def init(
    db_logins: Annotated[
        Path | None,
        typer.Option(
            "--db-logins",
            help="a folder of <org>.password files: each org gets its own database login"
            " (`renkei agencies db-login`), for its own processes; gateway.password: the"
            " gateway's, which reads the revocations only",
        ),
    ] = None,
) -> int:
    """Prepare running servers (RENKEI_TEMPORAL_ADDRESS, RENKEI_DATABASE_URL) for workers: schema,
    whitelist, definitions, search attributes, sample promotion, schedules. Idempotent."""
    from renkei.kernel.db import GATEWAY, create_login

    settings = get_settings()
    found = joined(settings)
    passwords: dict[str, str] = {}
    if db_logins is not None:
        try:
            files = sorted(db_logins.glob("*.password"))
            passwords = {f.stem: f.read_text().strip() for f in files}
        except OSError as err:
            typer.echo(f"error: cannot read {db_logins}: {err.strerror}", err=True)
            return 2
        unknown = sorted(set(passwords) - set(default_catalog().orgs) - {GATEWAY})
        weak = sorted(o for o, pw in passwords.items() if len(pw) < 16)
        problems = [
            *(["no <org>.password file in it"] if not passwords else []),
            *([f"not a known org: {', '.join(unknown)}"] if unknown else []),
            *([f"a password under 16 characters: {', '.join(weak)}"] if weak else []),
        ]
        if problems:
            typer.echo(f"error: {db_logins}: {'; '.join(problems)}", err=True)
            return 2
    _, pool = await _init(settings, found.temporal, found.database)
    try:
        for org, password in passwords.items():
            typer.echo(f"database login {await create_login(pool, org, password)} for {org}")
    finally:
        await pool.close()
    return 0


@run_async
async def serve() -> None:
    """The HTTP API, the codec server and the citizen's pages, without workers."""
    from renkei.app.web import serving
    from workers.assembly import live_whitelist

    settings = get_settings()
    found = joined(settings)
    pool = await create_pool(found.database, max_size=20)
    try:
        await check_keys(pool, settings)
        client = await connect(settings, found.temporal)
        async with (
            live_whitelist(found.database, keys.load(settings).signer().public_key()) as whitelist,
            serving(settings, pool, client, whitelist) as web,
        ):
            stop = _stop_on_signals()
            typer.echo(f"serving {web} (API {web}/api, codec {settings.codec_endpoint})")
            await _until_signalled(stop)
    finally:
        await _close(pool)


@run_async
async def gateway() -> int | None:
    """The authorising gateway in front of the Temporal frontend: mutual TLS with the
    platform's certificates, each call allowed only to the party it concerns."""
    from renkei.app.gateway import serve as serve_gateway
    from renkei.kernel.servers import running_stack

    settings = get_settings()
    upstream = settings.temporal_address or (running_stack(settings.data_dir) or {}).get("temporal")
    if not upstream:
        typer.echo(
            "error: no Temporal frontend to guard: set RENKEI_TEMPORAL_ADDRESS, or run `renkei up`"
            " on this data folder first",
            err=True,
        )
        return 2
    running = running_stack(settings.data_dir) or {}
    database_url = settings.database_url or running.get("database")
    try:
        await serve_gateway(settings, upstream, database_url, _stop_on_signals(), ready=typer.echo)
    except ValueError as err:
        typer.echo(f"error: {err}", err=True)
        return 2
    return None


@worker_app.command("hub")
@run_async
async def worker_hub() -> None:
    """The hub's worker: the hub's activities (resolve, broker, translate...) with the hub's
    keys, and the control worker of runs started before executor-side control."""
    await _worker("hub")


@worker_app.command("control")
@run_async
async def worker_control(
    org: Annotated[str | None, typer.Argument(help="the executor whose flows this runs")] = None,
) -> None:
    """One executor's control worker: its flows and life-event scans, with its keys only."""
    await _worker("control", org)


@worker_app.command("agency")
@run_async
async def worker_agency(
    org: str,
    providers: Annotated[
        str | None,
        typer.Option(help="package.module:factory returning the org's providers (default: sample)"),
    ] = None,
) -> None:
    """One org's worker: its providers behind the whitelist interceptor."""
    await _worker("agency", org, providers)


async def _worker(
    kind: Literal["hub", "control", "agency"],
    org: str | None = None,
    providers: str | None = None,
) -> None:
    from renkei.kernel.db import SchemaBehind
    from whitelist.seal import WhitelistUnsealed
    from workers.process import NoStack, run_worker

    try:
        await run_worker(kind, get_settings(), org=org, providers=providers, ready=typer.echo)
    except (NoStack, SchemaBehind, ValueError, WhitelistUnsealed) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None


async def _init(settings: Settings, address: str, url: str) -> tuple[Any, asyncpg.Pool]:
    """Schema, whitelist, definitions, sample data, search attributes, the samples' first
    promotion and the life-event schedules: everything a stack needs before workers poll."""
    await migrate(url, retention_years=settings.records_retention_years)
    pool = await create_pool(url, max_size=20)
    try:
        report = await prepare(pool, settings)
        typer.echo(
            f"database ready: {report.whitelist_rows} whitelist rows (version {report.whitelist_version}),"
            f" {len(report.registered)} BPF versions registered"
            + (", sample residents seeded" if report.seeded else "")
            + (f", {report.pias_recorded} sample PIAs recorded" if report.pias_recorded else "")
        )
        if report.orgs_onboarded:  # a fresh install: the samples went the onboarding path
            typer.echo(
                f"orgs contract-tested, certified by {settings.conformance_body} and activated:"
                f" {', '.join(report.orgs_onboarded)} (renkei orgs show ORG)"
            )
        for r in report.rejected:
            typer.echo(f"  definition rejected: {r}", err=True)
        client = await connect(settings, address)
        await ensure_registered(client, settings.namespace)
        await _promote_samples(client, pool, settings, url)
    except BaseException:
        await pool.close()
        raise
    return client, pool


async def _serve(
    settings: Settings,
    address: str,
    url: str,
    ready: Callable[[RenkeiClient, asyncpg.Pool], Awaitable[None]] | None,
    *,
    watch: Callable[[Callable[[str], None]], Coroutine[Any, Any, NoReturn]] | None = None,
    gateway: bool = False,
) -> None:
    from activities.agencies import SAMPLE_AGENCIES
    from renkei.app.gateway import guarded
    from renkei.app.web import serving
    from workers.assembly import live_whitelist, running_workers

    client, pool = await _init(settings, address, url)
    try:
        async with contextlib.AsyncExitStack() as guard:
            connection = None
            if gateway:
                # The hub's services (this client, the web app) dial the frontend on loopback,
                # as the hub's do in the compose file; every party's worker, the hub's too,
                # goes through the gateway on its own certificate.
                parties = [HUB, *default_catalog().orgs]
                gateway_address, connection = await guard.enter_async_context(
                    guarded(settings, address, pool, parties)
                )
                typer.echo(
                    f"gateway       {gateway_address} → {address} (mutual TLS; the CA and each"
                    f" party's certificate in {settings.data_dir / 'tls'})"
                )
            async with (
                live_whitelist(url, keys.load(settings).signer().public_key()) as whitelist,
                running_workers(
                    client, pool, settings, default_catalog(), whitelist, connection=connection
                ),
            ):
                if ready is not None:
                    await ready(RenkeiClient(client, settings), pool)
                    return
                async with serving(settings, pool, client, whitelist) as web:
                    stop = _stop_on_signals()  # before it says it is up: a Ctrl-C then is a stop
                    typer.echo(
                        f"\nTemporal UI   {settings.ui_base}/namespaces/{settings.namespace}/workflows"
                    )
                    typer.echo(f"Temporal gRPC {address}")
                    typer.echo(
                        f"codec server  {settings.codec_endpoint}  (operators sign in at /codec/login)"
                    )
                    typer.echo(f"citizens      {web}/citizen")
                    typer.echo("operators     renkei operators add NAME  (prints a codec token)")
                    typer.echo("workers       control + " + ", ".join(SAMPLE_AGENCIES))
                    typer.echo(
                        "renkei is up. Ctrl-C stops it; data stays in " + str(settings.data_dir)
                    )
                    try:
                        await _until_signalled(stop, watch)
                    finally:
                        typer.echo("stopping…")
    finally:
        await _close(pool)


def _stop_on_signals() -> asyncio.Event:
    """An event SIGINT and SIGTERM set (from now on, instead of interrupting)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


async def _until_signalled(
    stop: asyncio.Event,
    watch: Callable[[Callable[[str], None]], Coroutine[Any, Any, NoReturn]] | None = None,
) -> None:
    """Until ``stop`` is set (:func:`_stop_on_signals`); or until ``watch`` (the stack's
    supervisor) raises."""
    waits: list[asyncio.Task[Any]] = [asyncio.create_task(stop.wait())]
    if watch is not None:
        waits.append(asyncio.create_task(watch(typer.echo)))
    try:
        done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in waits:
            task.cancel()
    for task in done:
        task.result()  # the supervisor's StackDown


async def _close(pool: asyncpg.Pool, grace: float = 5) -> None:
    """Close the pool; connections still busy after ``grace`` seconds (a query on a server
    that is gone) are dropped rather than waited for."""
    try:
        await asyncio.wait_for(pool.close(), grace)
    except TimeoutError:
        pool.terminate()


async def _promote_samples(client: Any, pool: asyncpg.Pool, settings: Settings, url: str) -> None:
    """First start of an installation: the sample drafts go through the kit into operation;
    then the life-event schedules are brought in line with the operating definitions."""
    from renkei.app.kit import promote_samples
    from renkei.app.schedules import sync

    whitelist = await LiveWhitelist(
        url, sealed_by=keys.load(settings).signer().public_key()
    ).start()
    try:
        for line in await promote_samples(client, pool, settings, default_catalog(), whitelist):
            typer.echo(f"  {line}")
    finally:
        await whitelist.stop()
    report = await sync(client, pool, settings, default_catalog())
    for sid in report.created + report.updated:
        typer.echo(f"  schedule {sid}")
    for sid in report.deleted:
        typer.echo(f"  schedule deleted: {sid}")
