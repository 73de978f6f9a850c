"""The ``renkei`` command."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import io
import json
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import asyncpg
import typer
from temporalio.client import WorkflowFailureError

from renkei.app.bootstrap import check_file, load_whitelist, prepare
from renkei.app.client import RenkeiClient, connect
from renkei.app.stack import embedded
from renkei.bpf import registry
from renkei.bpf.loader import BpfFileError, load_file
from renkei.contracts.messages import StartFlow
from renkei.kernel import keys
from renkei.kernel import records as records_store
from renkei.kernel.db import create_pool, migrate
from renkei.kernel.search_attributes import ensure_registered
from renkei.kernel.servers import clear_state, write_state
from renkei.kernel.settings import Settings, get_settings
from whitelist import store
from whitelist.catalog import default_catalog
from whitelist.store import LiveWhitelist

app = typer.Typer(
    help="renkei: whitelist-gated information linkage on Temporal.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
whitelist_app = typer.Typer(help="The whitelist (番号法 別表第二).", no_args_is_help=True)
bpf_app = typer.Typer(help="Business process flow definitions.", no_args_is_help=True)
subjects_app = typer.Typer(help="Subjects and their agency-specific codes.", no_args_is_help=True)
records_app = typer.Typer(
    help="Access records: list, verify, sign, read your own.", no_args_is_help=True
)
operators_app = typer.Typer(
    help="Operators allowed to decrypt payloads through the codec server.", no_args_is_help=True
)
keys_app = typer.Typer(help="The hub's keys.", no_args_is_help=True)
agencies_app = typer.Typer(help="Agencies' access to the HTTP API.", no_args_is_help=True)
schedules_app = typer.Typer(help="Life-event schedules.", no_args_is_help=True)
app.add_typer(whitelist_app, name="whitelist")
app.add_typer(bpf_app, name="bpf")
app.add_typer(subjects_app, name="subjects")
app.add_typer(records_app, name="records")
app.add_typer(operators_app, name="operators")
app.add_typer(keys_app, name="keys")
app.add_typer(agencies_app, name="agencies")
app.add_typer(schedules_app, name="schedules")

T = TypeVar("T")


def _run(coro: Awaitable[T]) -> T:
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # A denied linkage is an expected outcome, recorded and reported; the SDK logs each failed
    # activity with a traceback, which would bury the report.
    logging.getLogger("temporalio.activity").setLevel(logging.ERROR)
    return asyncio.run(coro)  # type: ignore[arg-type]


async def _check_keys(pool: asyncpg.Pool, settings: Settings) -> None:
    """Stop (exit 3) if this process's keys are not the ones the database was started with."""
    try:
        await keys.check_against(pool, keys.load(settings), str(keys.keys_path(settings)))
    except keys.KeyMismatch as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(3) from None


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
        await migrate(url, retention_years=settings.records_retention_years)
        pool = await create_pool(url)
        try:
            await _check_keys(pool, settings)
            yield pool
        finally:
            await pool.close()


@contextlib.asynccontextmanager
async def _stack(settings: Settings) -> AsyncIterator[tuple[Any, asyncpg.Pool, str]]:
    """(Temporal client, pool, database url) on the configured or embedded servers."""
    with embedded(settings) as (address, url, _):
        await migrate(url, retention_years=settings.records_retention_years)
        pool = await create_pool(url, max_size=20)
        try:
            yield await connect(settings, address), pool, url
        finally:
            await pool.close()


@app.command()
def up() -> None:
    """Run the whole stack in the foreground: Temporal, PostgreSQL, workers. Ctrl-C stops it."""
    settings = get_settings()
    _run(_up(settings))


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
) -> None:
    from activities.agencies import SAMPLE_AGENCIES
    from renkei.app.web import serving
    from workers.assembly import live_whitelist, running_workers

    client, pool = await _init(settings, address, url)
    try:
        async with (
            live_whitelist(url) as whitelist,
            running_workers(client, pool, settings, default_catalog(), whitelist),
        ):
            if ready is not None:
                await ready(RenkeiClient(client, settings), pool)
                return
            async with serving(settings, pool, client) as web:
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
                typer.echo("renkei is up. Ctrl-C stops it; data stays in " + str(settings.data_dir))
                await _until_signalled()
                typer.echo("stopping…")
    finally:
        await pool.close()


async def _until_signalled() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


async def _promote_samples(client: Any, pool: asyncpg.Pool, settings: Settings, url: str) -> None:
    """First start of an installation: the sample drafts go through the kit into operation;
    then the life-event schedules are brought in line with the operating definitions."""
    from renkei.app.kit import promote_samples
    from renkei.app.schedules import sync

    whitelist = await LiveWhitelist(url).start()
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


async def _up(settings: Settings) -> None:
    with embedded(settings) as (address, url, started):
        if started:
            write_state(settings.data_dir, address, url)
        try:
            await _serve(settings, address, url, None)
        finally:
            if started:
                clear_state(settings.data_dir)


@app.command()
def demo() -> None:
    """Run the sample flows and print outcomes, linkages, records and UI links."""
    from renkei.app.demo import run_demo

    settings = get_settings()
    result: dict[str, int] = {}

    async def go() -> None:
        with embedded(settings) as (address, url, started):

            async def ready(client: RenkeiClient, pool: asyncpg.Pool) -> None:
                result["unexpected"] = await run_demo(settings, pool, client, typer.echo)

            await _serve(settings, address, url, ready)
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
    from whitelist.decide import WhitelistIndex
    from whitelist.local import all_rows

    async def index() -> WhitelistIndex:
        if offline:
            return WhitelistIndex(all_rows(default_catalog()))
        async with _database(get_settings()) as pool:
            idx = await store.load_index(pool)
            return idx if len(idx) else WhitelistIndex(all_rows(default_catalog()))

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
                    f"{r['bpf']}\tv{r['version']}\t{r['state']}\t{r['task']}\t{r['content_hash'][:19]}…\t{r['title']}"
                )

    _run(go())


async def _definition(pool: asyncpg.Pool, ref: str, version: int | None) -> Any:
    """The registered version of a BPF id."""
    found = await registry.fetch(pool, ref, version, "test")
    if found is None:
        raise typer.BadParameter(f"{ref} is not a registered BPF (nor a .yaml file)")
    return found.definition


@bpf_app.command("render")
def bpf_render(
    bpf: Annotated[str, typer.Argument(help="a registered BPF id, or a definition file")],
    format: Annotated[str, typer.Option("--format", help="mermaid, svg, bpmn or dot")] = "mermaid",
    version: int | None = None,
    out: Annotated[Path | None, typer.Option(help="write here instead of standard output")] = None,
) -> None:
    """Draw a BPF: Mermaid flowchart, SVG (Graphviz), BPMN 2.0 XML with diagram."""
    from renkei.bpf.render import RendererMissing, build, to_bpmn, to_dot, to_mermaid, to_svg

    writers = {"mermaid": to_mermaid, "svg": to_svg, "bpmn": to_bpmn, "dot": to_dot}
    if format not in writers:
        typer.echo(f"error: --format is one of {', '.join(writers)}", err=True)
        raise typer.Exit(2)

    path = Path(bpf)
    from_file = load_file(path).definition if path.suffix in (".yaml", ".yml") else None

    async def go() -> str:
        async with _database(get_settings()) as pool:
            d = from_file or await _definition(pool, bpf, version)
            graph = build(d, default_catalog(), await store.load_index(pool))
        try:
            return writers[format](graph)
        except RendererMissing as err:
            typer.echo(f"error: {err}", err=True)
            raise typer.Exit(3) from None

    text = _run(go())
    if out is None:
        typer.echo(text, nl=False)
    else:
        out.write_text(text, encoding="utf-8")


@bpf_app.command("import")
def bpf_import(path: Path) -> None:
    """Read a BPMN 2.0 process (tasks, gateways, events as renkei draws them) into a BPF draft."""
    from ruamel.yaml import YAML

    from renkei.bpf.loader import parse_text
    from renkei.bpf.render import BpmnImportError, from_bpmn

    try:
        draft = from_bpmn(path.read_text(encoding="utf-8"))
    except BpmnImportError as err:
        typer.echo(f"{path}: {err}", err=True)
        raise typer.Exit(1) from None
    yaml = YAML()
    yaml.default_flow_style = False
    buffer = io.StringIO()
    yaml.dump(draft, buffer)
    try:
        parse_text(buffer.getvalue(), f"{path.stem}.yaml")
    except BpfFileError as err:
        for i in err.issues:
            typer.echo(f"to fix in the draft: {i}", err=True)
    typer.echo(buffer.getvalue(), nl=False)


@bpf_app.command("schema")
def bpf_schema() -> None:
    """The JSON Schema of the BPF format, for editors (e.g. yaml-language-server)."""
    from renkei.bpf.models import BpfDefinition

    schema = BpfDefinition.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "urn:renkei:bpf-schema:1"
    typer.echo(json.dumps(schema, ensure_ascii=False, indent=2))


@bpf_app.command("catalog")
def bpf_catalog(
    out: Annotated[Path, typer.Option(help="the HTML file to write")] = Path("bpf-catalog.html"),
) -> None:
    """Write the static HTML catalog of the operating BPFs (purpose, diagram, data asked for)."""
    from renkei.app.catalog_page import render

    async def go() -> str:
        async with _database(get_settings()) as pool:
            defs = await registry.runnable(pool, "operation")
            index = await store.load_index(pool)
        return render([d.definition for d in defs], default_catalog(), index)

    html = _run(go())
    out.write_text(html, encoding="utf-8")
    typer.echo(f"wrote {out}")


def _transition(
    action: registry.Action, bpf: str, version: int, actor: str, note: str | None
) -> None:
    async def go() -> int:
        settings = get_settings()
        catalog = default_catalog()
        async with _database(settings) as pool:
            try:
                t = await registry.transition(
                    pool,
                    bpf,
                    version,
                    action,
                    actor,
                    conformance_body=settings.conformance_body,
                    actor_roles=frozenset(catalog.org_roles(actor))
                    if actor in catalog.orgs
                    else frozenset(),
                    note=note,
                )
            except registry.TransitionRefused as err:
                typer.echo(f"refused: {err}", err=True)
                return 1
        typer.echo(
            f"{t.bpf} v{t.version}: {t.from_state} → {t.to_state} by {t.actor} ({t.actor_role})"
        )
        return 0

    raise typer.Exit(_run(go()))


_AS = typer.Option("--as", help="the org making the transition")


@bpf_app.command("submit")
def bpf_submit(bpf: str, version: int, actor: Annotated[str, _AS], note: str | None = None) -> None:
    """draft → conformance-passed, by the definer, with a passing conformance report."""
    _transition("submit", bpf, version, actor, note)


@bpf_app.command("approve")
def bpf_approve(
    bpf: str, version: int, actor: Annotated[str, _AS], note: str | None = None
) -> None:
    """conformance-passed → approved, by the conformance body."""
    _transition("approve", bpf, version, actor, note)


@bpf_app.command("operate")
def bpf_operate(
    bpf: str, version: int, actor: Annotated[str, _AS], note: str | None = None
) -> None:
    """approved → operating, by an executor."""
    _transition("operate", bpf, version, actor, note)


@bpf_app.command("retire")
def bpf_retire(bpf: str, version: int, actor: Annotated[str, _AS], note: str | None = None) -> None:
    """operating → retired, by the definer."""
    _transition("retire", bpf, version, actor, note)


@bpf_app.command("history")
def bpf_history(bpf: str, version: int) -> None:
    """Every lifecycle transition of one version: who, in which role, when."""

    async def go() -> None:
        async with _database(get_settings()) as pool:
            for t in await registry.history(pool, bpf, version):
                typer.echo(
                    f"{t.at:%Y-%m-%d %H:%M:%S}\t{t.from_state} → {t.to_state}\t{t.actor} ({t.actor_role})"
                    + (f"\t{t.note}" if t.note else "")
                )

    _run(go())


@app.command()
def conformance(
    bpf: str,
    version: Annotated[int | None, typer.Option(help="default: the highest registered")] = None,
    scenarios: Annotated[
        Path | None, typer.Option(help="folder of scenario sets (<bpf>.yaml)")
    ] = None,
    report: Annotated[Path | None, typer.Option(help="write the JSON report here")] = None,
    record_histories: Annotated[
        Path | None,
        typer.Option(help="also write each scenario run's history here, for replay tests"),
    ] = None,
) -> None:
    """Run a BPF version's conformance scenarios; store the report; exit 1 if any fails."""
    from renkei.app.kit import record_histories as record
    from renkei.app.kit import run_scenarios, scenarios_for, store_report

    settings = get_settings()
    try:
        scenario_set = scenarios_for(bpf, scenarios)
    except (FileNotFoundError, ValueError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None

    async def go() -> int:
        async with _stack(settings) as (client, pool, url):
            whitelist = await LiveWhitelist(url).start()
            try:
                await prepare(pool, settings)
                result = await run_scenarios(
                    client, pool, settings, default_catalog(), whitelist, bpf, version, scenario_set
                )
                digest = await store_report(pool, result)
                if record_histories is not None:
                    for path in await record(client, result, record_histories):
                        typer.echo(f"history: {path}", err=True)
            finally:
                await whitelist.stop()
        typer.echo(result.summary())
        typer.echo(f"report {digest}")
        if report is not None:
            report.write_text(result.model_dump_json(indent=2), encoding="utf-8")
        return 0 if result.passed else 1

    raise typer.Exit(_run(go()))


@app.command()
def contract(org: str) -> None:
    """Check a sample agency's providers against the contract of every item it serves."""
    from activities.agencies import SAMPLE_AGENCIES, providers_for
    from renkei.app.kit import check_provider

    if org not in SAMPLE_AGENCIES:
        typer.echo(
            f"error: {org} is not one of the sample agencies ({', '.join(SAMPLE_AGENCIES)})",
            err=True,
        )
        raise typer.Exit(2)

    async def go() -> int:
        from activities.agencies.seed import sample_subjects
        from activities.agencies.synthetic import generate
        from renkei.kernel.pseudonyms import derive_code

        settings = get_settings()
        hub_key = keys.load(settings).hub_key
        known = {
            info: derive_code(hub_key, org, subject)
            for info, subject in sample_subjects(org, generate(settings.sample_residents)).items()
        }
        with embedded(settings.model_copy(update={"temporal_address": "-"})) as (_, url, _s):
            await migrate(url, retention_years=settings.records_retention_years)
            pool = await create_pool(url)
            whitelist = await LiveWhitelist(url).start()
            try:
                await prepare(pool, settings)
                checks = await check_provider(
                    org, providers_for(org, pool), default_catalog(), whitelist, pool, known
                )
            finally:
                await whitelist.stop()
                await pool.close()
        for c in checks:
            typer.echo(
                f"{'PASS' if c.passed else 'FAIL'}  {c.info}: {c.check}"
                + (f" — {c.detail}" if c.detail and not c.passed else "")
            )
        return 0 if all(c.passed for c in checks) else 1

    raise typer.Exit(_run(go()))


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
        from renkei.kernel.servers import running_stack

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
        from renkei.kernel.servers import running_stack

        address = settings.temporal_address or (running_stack(settings.data_dir) or {}).get(
            "temporal"
        )
        client = await RenkeiClient.connect(settings, address)
        typer.echo((await client.describe(workflow_id)).model_dump_json(indent=2))

    _run(go())


@records_app.command("list")
def records_list(
    keeper: Annotated[
        str | None, typer.Option(help="the keeping party: an org id, or 'hub'")
    ] = None,
    subject: Annotated[str | None, typer.Option(help="the keeper's code for the subject")] = None,
    provider: Annotated[str | None, typer.Option()] = None,
    bpf: Annotated[str | None, typer.Option()] = None,
    workflow: Annotated[str | None, typer.Option(help="workflow id")] = None,
    limit: int = 100,
) -> None:
    """List access records, as their keepers hold them."""

    async def go() -> None:
        async with _database(get_settings()) as pool:
            rows = await records_store.query(
                pool,
                keeper=keeper,
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


@records_app.command("verify")
def records_verify(
    keeper: Annotated[list[str] | None, typer.Option(help="only these keepers' chains")] = None,
) -> None:
    """Walk every keeper's hash chain and its signed checkpoints; report the first broken link."""

    async def go() -> int:
        settings = get_settings()
        async with _database(settings) as pool:
            result = await records_store.verify(pool, keys.load(settings).signer(), keeper)
        typer.echo(
            f"{result.records} records in {result.keepers} chains, {result.checkpoints} checkpoints"
        )
        for b in result.breaks:
            typer.echo(f"BROKEN {b.keeper} at record {b.chain_seq}: {b.problem}", err=True)
        if result.ok:
            typer.echo("every chain is intact")
        return 0 if result.ok else 1

    raise typer.Exit(_run(go()))


@records_app.command("checkpoint")
def records_checkpoint() -> None:
    """Sign the head of every keeper's chain (run it periodically, e.g. from cron)."""

    async def go() -> None:
        settings = get_settings()
        async with _database(settings) as pool:
            made = await records_store.checkpoint(pool, keys.load(settings).signer())
        for cp in made:
            typer.echo(f"{cp.keeper}\t#{cp.chain_seq}\t{cp.record_hash[:16]}…")
        typer.echo(f"{len(made)} checkpoints signed", err=True)

    _run(go())


@records_app.command("mine")
def records_mine(
    portal_code: Annotated[
        str,
        typer.Option(
            prompt=True, hide_input=True, envvar="RENKEI_PORTAL_CODE", help="your portal code"
        ),
    ],
    agency: Annotated[str | None, typer.Option(help="only exchanges with this org")] = None,
    since: Annotated[str | None, typer.Option(help="YYYY-MM-DD")] = None,
    until: Annotated[str | None, typer.Option(help="YYYY-MM-DD, inclusive")] = None,
    lang: Annotated[str, typer.Option(help="ja or en")] = "ja",
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Every exchange of your data, newest first, as the hub recorded it."""
    from renkei.app.citizen import NotACitizen, Party, RecordFilter, records_of
    from renkei.kernel.pseudonyms import Pseudonyms

    async def go() -> int:
        settings = get_settings()
        try:
            where = RecordFilter.model_validate({"agency": agency, "since": since, "until": until})
        except ValueError as err:
            typer.echo(f"error: {err}", err=True)
            return 2
        async with _database(settings) as pool:
            hub = Pseudonyms(pool, keys.load(settings).hub_key)
            try:
                found = await records_of(pool, hub, default_catalog(), portal_code.strip(), where)
            except NotACitizen as err:
                typer.echo(f"error: {err}", err=True)
                return 1
        if as_json:
            typer.echo(json.dumps([r.model_dump(mode="json") for r in found], ensure_ascii=False))
            return 0

        def name(p: Party) -> str:
            return p.ja if lang == "ja" else p.en

        for r in found:
            typer.echo(
                f"{r.at.astimezone(dt.timezone(dt.timedelta(hours=9))):%Y-%m-%d %H:%M}\t{r.outcome}\t"
                f"{name(r.requester)} ← {name(r.provider)}\t{name(r.info)}\t{name(r.task)}\t"
                f"{r.legal_reference or '-'}\t{r.bpf} v{r.bpf_version}\t{r.application}"
            )
        typer.echo(f"{len(found)} records", err=True)
        return 0

    raise typer.Exit(_run(go()))


@subjects_app.command("enroll")
def subjects_enroll(
    org: Annotated[str, typer.Option(help="the enrolling org (or 'portal' for a citizen)")],
    number: Annotated[
        str,
        typer.Option(
            prompt="individual number",
            hide_input=True,
            envvar="RENKEI_INDIVIDUAL_NUMBER",
            help="the person's individual number (prompted for if not given; never stored)",
        ),
    ],
) -> None:
    """Enrol a person by individual number and print the org's own code for them."""
    from renkei.kernel.pseudonyms import PORTAL, InvalidIndividualNumber, Pseudonyms

    if org != PORTAL and org not in default_catalog().orgs:
        typer.echo(f"error: unknown org {org!r}", err=True)
        raise typer.Exit(2)

    async def go() -> int:
        settings = get_settings()
        async with _database(settings) as pool:
            try:
                code = await Pseudonyms(pool, keys.load(settings).hub_key).enroll_number(
                    number, org
                )
            except InvalidIndividualNumber as err:
                typer.echo(f"error: {err}", err=True)
                return 2
        typer.echo(code)
        return 0

    raise typer.Exit(_run(go()))


@operators_app.command("add")
def operators_add(name: str) -> None:
    """Create an operator (or issue a new token); the token is printed once."""

    async def go() -> str:
        from renkei.app.web.codec_server import add_operator

        async with _database(get_settings()) as pool:
            return await add_operator(pool, name)

    token = _run(go())
    typer.echo(token)
    typer.echo(
        f"token for {name}: keep it secret. Sign in at {get_settings().codec_endpoint}/login for"
        " the Web UI, or pass --codec-auth 'Bearer <token>' to the temporal CLI.",
        err=True,
    )


@operators_app.command("revoke")
def operators_revoke(name: str) -> None:
    """Revoke an operator's token."""

    async def go() -> bool:
        from renkei.app.web.codec_server import revoke_operator

        async with _database(get_settings()) as pool:
            return await revoke_operator(pool, name)

    if not _run(go()):
        typer.echo(f"no active operator {name!r}", err=True)
        raise typer.Exit(1)
    typer.echo(f"revoked {name}")


@agencies_app.command("token")
def agencies_token(org: str) -> None:
    """Issue an org's API token for the HTTP API (printed once; the old one stops working)."""
    if org not in default_catalog().orgs:
        typer.echo(f"error: unknown org {org!r}", err=True)
        raise typer.Exit(2)

    async def go() -> str:
        from renkei.app.web.api import issue_token

        async with _database(get_settings()) as pool:
            return await issue_token(pool, org)

    typer.echo(_run(go()))
    typer.echo(f"API token for {org}: {get_settings().web_base}/api/docs", err=True)


@app.command()
def runs(
    bpf: str | None = None,
    executor: str | None = None,
    trigger: str | None = None,
    status: Annotated[str | None, typer.Option(help="renkei status: running, waiting, …")] = None,
    waiting: Annotated[bool, typer.Option(help="only runs waiting for someone or a timer")] = False,
    limit: int = 50,
) -> None:
    """List runs by BPF, executor, trigger or status; waiting runs show what and until when."""

    async def go() -> None:
        settings = get_settings()
        with embedded(settings) as (address, _url, _):
            client = await RenkeiClient.connect(settings, address)
            found = await client.runs(
                bpf=bpf,
                executor=executor,
                trigger=trigger,
                status=status,
                waiting=waiting,
                limit=limit,
            )
        for r in found:
            wait = (
                f"\twaiting {r.waiting_for} until {r.deadline:%Y-%m-%d %H:%M}"
                if r.waiting_for and r.deadline
                else ""
            )
            typer.echo(
                f"{r.workflow_id}\t{r.renkei_status or r.status.lower()}\t{r.trigger or '-'}\t"
                f"{r.started:%Y-%m-%d %H:%M}{wait}"
            )
        typer.echo(f"{len(found)} runs", err=True)

    _run(go())


@schedules_app.command("sync")
def schedules_sync() -> None:
    """Create, update and delete life-event schedules to match the BPF definitions."""
    from renkei.app.schedules import sync

    async def go() -> None:
        settings = get_settings()
        async with _stack(settings) as (client, pool, _):
            report = await sync(client, pool, settings, default_catalog())
        for kind in ("created", "updated", "deleted", "unchanged"):
            for sid in getattr(report, kind):
                typer.echo(f"{kind}\t{sid}")

    _run(go())


@app.command()
def notify(
    publisher: Annotated[str, typer.Option("--as", help="the publishing org")],
    event: Annotated[str, typer.Option(help="death, move or birth")],
    event_id: Annotated[str, typer.Option(help="the publisher's unique id of the change")],
    occurred_on: Annotated[str, typer.Option(help="YYYY-MM-DD")],
    subject: Annotated[
        str, typer.Option(prompt=True, hide_input=True, help="the subject's code at the publisher")
    ],
) -> None:
    """Publish a change of a subject; the flows subscribed to it start (once)."""
    from renkei.app.notifications import Notification, publish
    from renkei.kernel.pseudonyms import Pseudonyms

    n = Notification.model_validate(
        {
            "publisher": publisher,
            "event": event,
            "event_id": event_id,
            "occurred_on": occurred_on,
            "subject": subject,
        }
    )

    async def go() -> None:
        settings = get_settings()
        async with _stack(settings) as (client, pool, _):
            hub = Pseudonyms(pool, keys.load(settings).hub_key)
            done = await publish(client, pool, settings, default_catalog(), hub, n)
        for wid in done.started:
            typer.echo(wid)
        typer.echo(
            ("already delivered; " if done.duplicate else "") + f"{len(done.started)} flows",
            err=True,
        )

    _run(go())


@keys_app.command("new")
def keys_new(
    file: Annotated[Path, typer.Argument(help="where to write the new keys (must not exist)")],
) -> None:
    """Create an installation's keys (hub key, payload key ring, checkpoint key) in FILE, mode
    0600: the secret every process of one deployment mounts as RENKEI_KEYS_FILE."""
    if file.exists():
        typer.echo(f"error: {file} exists; keys are never overwritten", err=True)
        raise typer.Exit(2)
    keys.save(file, keys.new_keys())
    typer.echo(f"keys written to {file}")


@keys_app.command("rotate")
def keys_rotate() -> None:
    """Make a new payload key the active one; older keys keep decrypting. Restart workers after."""
    ring = keys.rotate_codec_key(get_settings())
    typer.echo(f"active payload key: {ring.active} ({len(ring.keys)} keys in the ring)")


@subjects_app.command("sample")
def subjects_sample(
    org: Annotated[str, typer.Option(help="the org whose codes to show")],
    count: int = 5,
) -> None:
    """Show a few sample residents' codes at an org (synthetic data, for trying flows)."""
    from activities.agencies.synthetic import generate
    from renkei.kernel.pseudonyms import derive_code

    settings = get_settings()
    for h in generate(settings.sample_residents)[:count]:
        members = ", ".join(
            f"{m.relationship}={derive_code(keys.load(settings).hub_key, org, m.subject_id)}"
            for m in h.members
        )
        typer.echo(f"{h.id} ({h.municipality}, {h.kind}): {members}")


billing_app = typer.Typer(help="Metering and billing of linkages.", no_args_is_help=True)
app.add_typer(billing_app, name="billing")


@billing_app.command("report")
def billing_report(
    month: Annotated[str, typer.Option(help="YYYY-MM (Japan time)")],
    format: Annotated[str, typer.Option("--format", help="json or csv")] = "json",
    tariffs: Annotated[
        Path | None, typer.Option(help="tariff file (default: RENKEI_TARIFF_FILE)")
    ] = None,
) -> None:
    """Queries per requester and provisions per provider, by task and info item, priced by the
    tariff in force, with the record ranges and chain hashes the counts come from."""
    from renkei.app import billing

    if format not in ("json", "csv"):
        typer.echo("error: --format is json or csv", err=True)
        raise typer.Exit(2)
    settings = get_settings()
    try:
        billing.month_bounds(month)
        table = billing.load_tariffs(tariffs or settings.tariff_file)
    except (ValueError, OSError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None

    async def go() -> billing.BillingReport:
        async with _database(settings) as pool:
            return await billing.report(pool, month, table)

    try:
        found = _run(go())
    except ValueError as err:  # no tariff in force on a day with records
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None
    typer.echo(found.model_dump_json(indent=2) if format == "json" else billing.to_csv(found))


worker_app = typer.Typer(
    help="One worker as its own process, joining running servers.", no_args_is_help=True
)
app.add_typer(worker_app, name="worker")


def _joined(settings: Settings) -> Any:
    """The running servers this process joins, or exit 2 saying there are none."""
    from workers.process import NoStack, servers

    try:
        return servers(settings)
    except NoStack as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None


@app.command()
def init() -> None:
    """Prepare running servers (RENKEI_TEMPORAL_ADDRESS, RENKEI_DATABASE_URL) for workers: schema,
    whitelist, definitions, search attributes, sample promotion, schedules. Idempotent."""
    settings = get_settings()
    found = _joined(settings)

    async def go() -> None:
        _, pool = await _init(settings, found.temporal, found.database)
        await pool.close()

    _run(go())


def _worker(kind: Any, org: str | None = None, providers: str | None = None) -> None:
    from workers.process import NoStack, run_worker

    try:
        _run(run_worker(kind, get_settings(), org=org, providers=providers, ready=typer.echo))
    except (NoStack, ValueError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None


@worker_app.command("control")
def worker_control() -> None:
    """The control worker: BPF interpreter workflows and the hub's activities."""
    _worker("control")


@worker_app.command("agency")
def worker_agency(
    org: str,
    providers: Annotated[
        str | None,
        typer.Option(help="package.module:factory returning the org's providers (default: sample)"),
    ] = None,
) -> None:
    """One org's worker: its providers behind the whitelist interceptor."""
    _worker("agency", org, providers)


@app.command()
def serve() -> None:
    """The HTTP API, the codec server and the citizen's pages, without workers."""
    from renkei.app.web import serving

    settings = get_settings()
    found = _joined(settings)

    async def go() -> None:
        pool = await create_pool(found.database, max_size=20)
        try:
            await _check_keys(pool, settings)
            client = await connect(settings, found.temporal)
            async with serving(settings, pool, client) as web:
                typer.echo(f"serving {web} (API {web}/api, codec {settings.codec_endpoint})")
                await _until_signalled()
        finally:
            await pool.close()

    _run(go())


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
