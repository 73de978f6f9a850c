"""The ``renkei`` command."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import asyncpg
import typer
from temporalio.client import WorkflowFailureError

from activities.models import StartFlow
from renkei import keys
from renkei import records as records_store
from renkei.bootstrap import check_file, load_whitelist, prepare
from renkei.client import RenkeiClient, connect
from renkei.db import create_pool, migrate
from renkei.search_attributes import ensure_registered
from renkei.settings import Settings, get_settings
from renkei.stack import clear_state, embedded, write_state
from whitelist import store
from whitelist.catalog import default_catalog
from workflows import registry

app = typer.Typer(
    help="renkei: whitelist-gated information linkage on Temporal.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
whitelist_app = typer.Typer(help="The whitelist (番号法 別表第二).", no_args_is_help=True)
bpf_app = typer.Typer(help="Business process flow definitions.", no_args_is_help=True)
subjects_app = typer.Typer(help="Subjects and their agency-specific codes.", no_args_is_help=True)
app.add_typer(whitelist_app, name="whitelist")
app.add_typer(bpf_app, name="bpf")
app.add_typer(subjects_app, name="subjects")

T = TypeVar("T")


def _run(coro: Awaitable[T]) -> T:
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # A denied linkage is an expected outcome, recorded and reported; the SDK logs each failed
    # activity with a traceback, which would bury the report.
    logging.getLogger("temporalio.activity").setLevel(logging.ERROR)
    return asyncio.run(coro)  # type: ignore[arg-type]


@contextlib.asynccontextmanager
async def _database(settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    """A pool on the configured database, or on the embedded one (started if needed)."""
    with embedded(
        settings.model_copy(update={"temporal_address": settings.temporal_address or "-"})
    ) as (
        _,
        url,
        _started,
    ):
        pool = await create_pool(url)
        try:
            await migrate(pool)
            yield pool
        finally:
            await pool.close()


@app.command()
def up() -> None:
    """Run the whole stack in the foreground: Temporal, PostgreSQL, workers. Ctrl-C stops it."""
    settings = get_settings()
    _run(_up(settings))


async def _serve(
    settings: Settings,
    address: str,
    url: str,
    started: bool,
    ready: Callable[[RenkeiClient, asyncpg.Pool], Awaitable[None]] | None,
) -> None:
    from activities.agencies import SAMPLE_AGENCIES
    from workers.dev import running_workers

    pool = await create_pool(url, max_size=20)
    try:
        report = await prepare(pool, settings)
        typer.echo(
            f"database ready: {report.whitelist_rows} whitelist rows (version {report.whitelist_version}),"
            f" {len(report.registered)} BPF versions registered"
            + (", sample residents seeded" if report.seeded else "")
        )
        for r in report.rejected:
            typer.echo(f"  definition rejected: {r}", err=True)
        client = await connect(settings, address)
        await ensure_registered(client, settings.namespace)
        async with running_workers(client, pool, settings, default_catalog(), url):
            if ready is not None:
                await ready(RenkeiClient(client, settings), pool)
            else:
                typer.echo(
                    f"\nTemporal UI   {settings.ui_base}/namespaces/{settings.namespace}/workflows"
                )
                typer.echo(f"Temporal gRPC {address}")
                typer.echo("workers       control + " + ", ".join(SAMPLE_AGENCIES))
                typer.echo("renkei is up. Ctrl-C stops it; data stays in " + str(settings.data_dir))
                stop = asyncio.Event()
                loop = asyncio.get_running_loop()
                for sig in (signal.SIGINT, signal.SIGTERM):
                    loop.add_signal_handler(sig, stop.set)
                await stop.wait()
                typer.echo("stopping…")
    finally:
        await pool.close()


async def _up(settings: Settings) -> None:
    with embedded(settings) as (address, url, started):
        if started:
            write_state(settings.data_dir, address, url)
        try:
            await _serve(settings, address, url, started, None)
        finally:
            if started:
                clear_state(settings.data_dir)


@app.command()
def demo() -> None:
    """Run the sample flows and print outcomes, linkages, records and UI links."""
    from renkei.demo import run_demo

    settings = get_settings()
    result: dict[str, int] = {}

    async def go() -> None:
        with embedded(settings) as (address, url, started):

            async def ready(client: RenkeiClient, pool: asyncpg.Pool) -> None:
                result["unexpected"] = await run_demo(settings, pool, client, typer.echo)

            await _serve(settings, address, url, started, ready)
            if started:
                typer.echo(
                    "(the embedded stack was started for the demo and is stopped now; "
                    "`renkei up` keeps it running with the UI)"
                )

    _run(go())
    raise typer.Exit(1 if result.get("unexpected") else 0)


# -- whitelist ------------------------------------------------------------------------------------


@whitelist_app.command("load")
def whitelist_load() -> None:
    """Load Annex Table 2 into the store (workers pick it up without a restart)."""

    async def go() -> None:
        async with _database(get_settings()) as pool:
            rows, version = await load_whitelist(pool)
            typer.echo(f"{rows} rows from annex2-2015; whitelist version {version}")

    _run(go())


@whitelist_app.command("list")
def whitelist_list(
    role: Annotated[str | None, typer.Option(help="requester or provider role")] = None,
    task: Annotated[str | None, typer.Option()] = None,
    info: Annotated[str | None, typer.Option()] = None,
    item: Annotated[str | None, typer.Option(help="item number, e.g. 五十七")] = None,
) -> None:
    """List whitelist rows, optionally filtered."""

    async def go() -> None:
        async with _database(get_settings()) as pool:
            rows = await store.fetch_rows(pool)
        shown = 0
        for r in rows:
            if role and role not in (r.requester_role, r.provider_role):
                continue
            if (task and r.task != task) or (info and r.info != info):
                continue
            if item and not r.item.endswith(f" {item}項"):
                continue
            shown += 1
            until = r.valid_to or "…"
            typer.echo(
                f"{r.item}\t{r.requester_role}\t{r.task}\t{r.provider_role}\t{r.info}\t{r.valid_from}–{until}"
            )
        typer.echo(f"{shown} rows", err=True)

    _run(go())


@whitelist_app.command("check")
def whitelist_check(
    requester: Annotated[str, typer.Argument(help="requester org id (or role:<id>)")],
    task: str,
    provider: Annotated[str, typer.Argument(help="provider org id (or role:<id>)")],
    info: str,
    at: Annotated[str | None, typer.Option("--at", help="date to decide on (YYYY-MM-DD)")] = None,
) -> None:
    """Decide one linkage: prints allow/deny with the matching row or the reason."""
    catalog = default_catalog()
    day = dt.date.fromisoformat(at) if at else dt.date.today()

    def roles(who: str) -> frozenset[str]:
        if who.startswith("role:"):
            return frozenset({who.removeprefix("role:")})
        if who not in catalog.orgs:
            raise typer.BadParameter(f"unknown org {who!r}")
        return catalog.org_roles(who)

    async def go() -> int:
        async with _database(get_settings()) as pool:
            index = await store.load_index(pool)
        d = index.decide(roles(requester), task, roles(provider), info, day)
        if d.allowed and d.row:
            typer.echo(
                f"ALLOW  {d.reason}\n  row: {d.row.id}\n  valid: {d.row.valid_from} – {d.row.valid_to or 'open'}\n  {d.row.legal_text}"
            )
            return 0
        typer.echo(f"DENY   {d.reason}")
        return 1

    raise typer.Exit(_run(go()))


# -- bpf ------------------------------------------------------------------------------------------


@bpf_app.command("validate")
def bpf_validate(
    files: Annotated[list[Path], typer.Argument(help="BPF YAML files")],
    at: Annotated[
        str | None, typer.Option("--at", help="check the whitelist as of this date")
    ] = None,
    offline: Annotated[
        bool, typer.Option(help="use the shipped whitelist instead of the store")
    ] = False,
) -> None:
    """Validate BPF files: schema, references, expressions, whitelist conformance."""
    from whitelist.annex2 import load_annex2
    from whitelist.decide import WhitelistIndex

    async def index() -> WhitelistIndex:
        if offline:
            return WhitelistIndex(load_annex2(default_catalog()))
        async with _database(get_settings()) as pool:
            idx = await store.load_index(pool)
            return idx if len(idx) else WhitelistIndex(load_annex2(default_catalog()))

    idx = _run(index())
    day = dt.date.fromisoformat(at) if at else None
    failed = 0
    for f in files:
        loaded, issues = check_file(f, idx, day)
        errors = [i for i in issues if i.severity == "error"]
        for i in issues:
            typer.echo(f"{i.severity}: {i}", err=i.severity == "error")
        if errors or loaded is None:
            failed += 1
        else:
            typer.echo(f"ok: {f}")
    raise typer.Exit(1 if failed else 0)


@bpf_app.command("list")
def bpf_list() -> None:
    """List registered BPF versions."""

    async def go() -> None:
        async with _database(get_settings()) as pool:
            for r in await registry.listing(pool):
                typer.echo(
                    f"{r['bpf']}\tv{r['version']}\t{r['task']}\t{r['content_hash'][:19]}…\t{r['title']}"
                )

    _run(go())


# -- flows ----------------------------------------------------------------------------------------


def _parse_inputs(pairs: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise typer.BadParameter(f"--input takes key=value, got {pair!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


@app.command()
def start(
    bpf: str,
    executor: Annotated[str, typer.Option(help="org running the flow (the requester)")],
    subject: Annotated[str, typer.Option(help="the subject's code at the executor")],
    case_ref: Annotated[str, typer.Option(help="your case reference (no personal data)")],
    input: Annotated[list[str] | None, typer.Option("--input", "-i", help="key=value")] = None,
    trigger: Annotated[str, typer.Option()] = "counter",
    version: Annotated[int | None, typer.Option()] = None,
    wait: Annotated[bool, typer.Option(help="wait for the result")] = True,
) -> None:
    """Start a BPF (idempotent per case reference) and print its result."""
    settings = get_settings()

    async def go() -> int:
        from renkei.stack import running_stack

        address = settings.temporal_address or (running_stack(settings.data_dir) or {}).get(
            "temporal"
        )
        client = await RenkeiClient.connect(settings, address)
        req = StartFlow(
            bpf=bpf,
            version=version,
            executor=executor,
            subject=subject,
            inputs=_parse_inputs(input or []),
            trigger=trigger,
            case_ref=case_ref,
        )
        handle = await client.start(req)
        typer.echo(f"workflow {handle.id}\n  {settings.run_link(handle.id)}")
        if not wait:
            return 0
        try:
            result = await handle.result()
        except WorkflowFailureError as err:
            typer.echo(f"failed: {getattr(err.cause, 'message', err.cause)}", err=True)
            return 1
        typer.echo(result.model_dump_json(indent=2))
        return 0

    try:
        raise typer.Exit(_run(go()))
    except ValueError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None


@app.command()
def status(workflow_id: str) -> None:
    """Describe a run."""
    settings = get_settings()

    async def go() -> None:
        from renkei.stack import running_stack

        address = settings.temporal_address or (running_stack(settings.data_dir) or {}).get(
            "temporal"
        )
        client = await RenkeiClient.connect(settings, address)
        typer.echo((await client.describe(workflow_id)).model_dump_json(indent=2))

    _run(go())


@app.command()
def records(
    subject: Annotated[str | None, typer.Option(help="subject code at the provider")] = None,
    provider: Annotated[str | None, typer.Option()] = None,
    bpf: Annotated[str | None, typer.Option()] = None,
    workflow: Annotated[str | None, typer.Option(help="workflow id")] = None,
    limit: int = 100,
) -> None:
    """List access records."""

    async def go() -> None:
        async with _database(get_settings()) as pool:
            rows = await records_store.query(
                pool,
                provider=provider,
                subject_code=subject,
                bpf=bpf,
                workflow_id=workflow,
                limit=limit,
            )
        for r in rows:
            typer.echo(
                f"{r.keeper}#{r.chain_seq}\t{r.decided_at:%Y-%m-%d %H:%M:%S}\t{r.outcome}\t{r.requester}→{r.provider}\t"
                f"{r.info}\t{r.task}\t{r.legal_reference or '-'}\t{r.bpf} v{r.bpf_version}\t{r.workflow_id}\t{r.step}"
            )
        typer.echo(f"{len(rows)} records", err=True)

    _run(go())


@subjects_app.command("sample")
def subjects_sample(
    org: Annotated[str, typer.Option(help="the org whose codes to show")],
    count: int = 5,
) -> None:
    """Show a few sample residents' codes at an org (synthetic data, for trying flows)."""
    from activities.agencies.synthetic import generate
    from renkei.pseudonyms import derive_code

    settings = get_settings()
    for h in generate(settings.sample_residents)[:count]:
        members = ", ".join(
            f"{m.relationship}={derive_code(keys.load(settings).hub_key, org, m.subject_id)}"
            for m in h.members
        )
        typer.echo(f"{h.id} ({h.municipality}, {h.kind}): {members}")


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
