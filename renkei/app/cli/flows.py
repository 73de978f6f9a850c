"""Running flows: start one and follow it (``start``, ``status``, ``runs``), publish a change
that starts the flows subscribed to it (``notify``), and check definitions and providers
(``conformance``, ``contract``)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import enum
import os
from pathlib import Path
from typing import Annotated

import asyncpg
import typer
from temporalio.client import WorkflowFailureError

from renkei.app.bootstrap import prepare
from renkei.app.cli.runtime import (
    check_keys,
    database,
    parse_inputs,
    run_async,
    temporal_and_database,
)
from renkei.app.client import CaseConflict, FlowNotFound, RenkeiClient
from renkei.app.stack import embedded
from renkei.contracts.messages import StartFlow
from renkei.kernel import keys
from renkei.kernel.db import create_pool
from renkei.kernel.settings import Settings, get_settings
from whitelist import controls_store, store
from whitelist.catalog import default_catalog
from whitelist.store import LiveWhitelist
from workers.plugin import attach_registry, own_parties, party_client


class Transport(enum.StrEnum):
    QUEUE = "queue"
    DIRECT = "direct"


@run_async
async def conformance(
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
    transport: Annotated[
        Transport,
        typer.Option(
            help="how the scenarios' linkages reach the kit's stubs: through the providers'"
            " queues, or over the direct channel (about 25 times as long: the kit's clock"
            " waits for each parked stub's held task)"
        ),
    ] = Transport.QUEUE,
) -> int:
    """Run a BPF version's conformance scenarios (the shipped set and those the conformance
    body added to the version's kit); store the report, as the signed-in operator's party's when
    RENKEI_OPERATOR_TOKEN is set; exit 1 if any fails."""
    from renkei.app import approvals
    from renkei.app.actors import TOKEN_VARIABLE, NotSignedIn, signed_in
    from renkei.app.kit import record_histories as record
    from renkei.app.kit import run_scenarios, scenarios_for, store_report

    settings = get_settings()
    try:
        shipped = scenarios_for(bpf, scenarios)
    except FileNotFoundError:
        shipped = None
    except ValueError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None

    async with temporal_and_database(settings) as (client, pool, url):
        run_by = None
        if os.environ.get(TOKEN_VARIABLE):
            try:
                run_by = (await signed_in(pool)).party
            except NotSignedIn as err:
                typer.echo(f"refused: {err}", err=True)
                return 1
        for rejected in (await prepare(pool, settings)).rejected:
            typer.echo(f"definition rejected: {rejected}", err=True)
        # the whitelist as the hub sealed it (a first run has just loaded and sealed it)
        whitelist = await LiveWhitelist(
            url, sealed_by=keys.load(settings).signer().public_key()
        ).start()
        try:
            # A first run has just issued the sample orgs' keys: the kit reads their flows.
            client = party_client(client, settings, own_parties(settings))
            attach_registry(client, pool, settings)
            pinned = version or await pool.fetchval(
                "SELECT max(version) FROM registry.bpf_versions WHERE bpf = $1", bpf
            )
            try:
                scenario_set = (
                    await approvals.kit_for(pool, bpf, pinned, shipped) if pinned else shipped
                )
                if scenario_set is None:
                    raise FileNotFoundError(f"no scenario set for {bpf}")
            except FileNotFoundError as err:
                typer.echo(f"error: {err}", err=True)
                return 2
            result = await run_scenarios(
                client,
                pool,
                settings,
                default_catalog(),
                whitelist,
                bpf,
                version,
                scenario_set,
                transport=transport.value,
            )
            digest = await store_report(pool, result, run_by)
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


@run_async
async def contract(
    org: str,
    wait: Annotated[
        float,
        typer.Option(
            "--timeout",
            min=1,
            max=600,
            help="seconds the org's worker has to answer each probe (one attempt each)",
        ),
    ] = 10.0,
) -> int:
    """Check an org's own worker, on its task queue, against the contract of every item it
    serves (each probe through its whitelist gate, with a probe permit for its probe subject),
    and record the run with its report hash: a passing run makes a registered org
    contract-tested (signed in as a platform operator, or as the org's own executor). The org's
    worker must be running (renkei worker agency ORG)."""
    from renkei.app import onboarding
    from renkei.app.actors import NotEntitled, NotSignedIn, signed_in
    from whitelist import orgs

    settings = get_settings()
    async with temporal_and_database(settings) as (client, pool, _):
        await check_keys(pool, settings)  # it signs the probe permits with the hub's key
        try:
            actor = await signed_in(pool)
            if actor.role != "platform-operator" and not (
                actor.role == "executor" and actor.party == org
            ):
                raise NotEntitled(f"{actor} may not run {org}'s contract test")
            catalog = default_catalog().model_copy(
                update={"orgs": await orgs.load_orgs(pool) or default_catalog().orgs}
            )
            run = await onboarding.contract_test_through_worker(
                client,
                pool,
                settings,
                catalog,
                await store.load_index(pool),
                org,
                actor.name,
                dt.timedelta(seconds=wait),
            )
        except (NotSignedIn, NotEntitled, orgs.OrgChangeRefused, ValueError) as err:
            typer.echo(f"refused: {err}", err=True)
            return 1
    for c in run.checks:
        typer.echo(
            f"{'PASS' if c.passed else 'FAIL'}  {c.info}: {c.check}"
            + (f" — {c.detail}" if c.detail and not c.passed else "")
        )
    typer.echo(f"report {run.report_hash} ({'passed' if run.passed else 'failed'}, recorded)")
    return 0 if run.passed else 1


@run_async
async def start(
    bpf: str,
    executor: Annotated[str, typer.Option(help="org running the flow (the requester)")],
    subject: Annotated[str, typer.Option(help="the subject's code at the executor")],
    case_ref: Annotated[str, typer.Option(help="your case reference (no personal data)")],
    input: Annotated[list[str] | None, typer.Option("--input", "-i", help="key=value")] = None,
    trigger: Annotated[str, typer.Option()] = "counter",
    version: Annotated[int | None, typer.Option()] = None,
    wait: Annotated[bool, typer.Option(help="wait for the result")] = True,
) -> int:
    """Start a BPF (idempotent per case reference) and print its result."""
    settings = get_settings()
    try:
        client = await _sdk(settings)
        req = StartFlow(
            bpf=bpf,
            version=version,
            executor=executor,
            subject=subject,
            inputs=parse_inputs(input or []),
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
    except (ValueError, CaseConflict) as err:
        typer.echo(f"error: {_one_line(err)}", err=True)
        return 2


def _one_line(err: Exception) -> str:
    """An error as one line (a pydantic error lists each problem on lines of its own)."""
    return "; ".join(line.strip() for line in str(err).splitlines() if line.strip())


@run_async
async def status(workflow_id: str) -> int:
    """Describe a run."""
    client = await _sdk(get_settings())
    try:
        typer.echo((await client.describe(workflow_id)).model_dump_json(indent=2))
    except FlowNotFound as err:
        typer.echo(f"error: {err}", err=True)
        return 1
    return 0


async def _sdk(settings: Settings) -> RenkeiClient:
    """The SDK on the configured Temporal server, or on a running ``renkei up``."""
    from renkei.kernel.servers import running_stack
    from workers.process import registered_orgs

    stack = running_stack(settings.data_dir) or {}
    address = settings.temporal_address or stack.get("temporal")
    # Starts are checked against the org registry where its database answers (an org added
    # at run time is known), else against the shipped orgs (the hub checks again in any case).
    catalog = None
    dsn = settings.database_url or stack.get("database")
    if dsn:
        with contextlib.suppress(OSError, TimeoutError, asyncpg.PostgresError):
            if orgs := await asyncio.wait_for(registered_orgs(dsn), 10):
                catalog = default_catalog().model_copy(update={"orgs": orgs})
    try:
        return await RenkeiClient.connect(settings, address, catalog)
    except RuntimeError as err:  # no server answers there
        typer.echo(f"error: Temporal cannot be reached ({_one_line(err)})", err=True)
        raise typer.Exit(2) from None


@run_async
async def runs(
    bpf: str | None = None,
    executor: str | None = None,
    trigger: str | None = None,
    status: Annotated[str | None, typer.Option(help="renkei status: running, waiting, …")] = None,
    waiting: Annotated[bool, typer.Option(help="only runs waiting for someone or a timer")] = False,
    conformance: Annotated[
        bool, typer.Option(help="the conformance kit's runs (left out otherwise)")
    ] = False,
    limit: int = 50,
) -> None:
    """List runs by BPF, executor, trigger or status; waiting runs show what and until when,
    running ones a suspension that stops them (their BPF version, or their executor). The
    conformance kit's runs are left out (``--conformance`` lists them alone)."""
    settings = get_settings()
    with embedded(settings) as (address, url, _):
        client = await RenkeiClient.connect(settings, address)
        try:
            found = await client.runs(
                bpf=bpf,
                executor=executor,
                trigger=trigger,
                status=status,
                waiting=waiting,
                conformance=conformance,
                limit=limit,
            )
        except ValueError as err:
            typer.echo(f"error: --{err}", err=True)
            raise typer.Exit(2) from None
        pool = await create_pool(url, max_size=1)
        try:  # what a platform operator suspended (the emergency stop): shown beside its runs
            stops = await controls_store.load_controls(
                pool, hub=keys.load(settings).signer().public_key()
            )
        finally:
            await pool.close()
    for r in found:
        wait = (
            f"\twaiting {r.waiting_for} until {r.deadline:%Y-%m-%d %H:%M}"
            if r.waiting_for and r.deadline
            else ""
        )
        stop = (stops.bpf_suspension(r.bpf, r.version) if r.version else None) or (
            stops.requester_suspension(r.executor) if r.executor else None
        )
        stopped = f"\tsuspended: {stop.what} ({stop.reason})" if stop and r.closed is None else ""
        typer.echo(
            f"{r.workflow_id}\t{r.renkei_status or r.status.lower()}\t{r.trigger or '-'}\t"
            f"{r.started:%Y-%m-%d %H:%M}{wait}{stopped}"
        )
    typer.echo(f"{len(found)} runs", err=True)


@run_async
async def notify(
    event: Annotated[str, typer.Option(help="death, move or birth")],
    event_id: Annotated[str, typer.Option(help="the publisher's unique id of the change")],
    occurred_on: Annotated[str, typer.Option(help="YYYY-MM-DD")],
    subject: Annotated[
        str, typer.Option(prompt=True, hide_input=True, help="the subject's code at the publisher")
    ],
) -> None:
    """Publish a change of a subject held by the signed-in operator's org (an executor operator
    of the publishing org, RENKEI_OPERATOR_TOKEN); the flows subscribed to it start (once)."""
    from pydantic import ValidationError

    from renkei.app.actors import NotEntitled, NotSignedIn, require, signed_in
    from renkei.app.notifications import Notification, NotificationConflict, publish
    from renkei.kernel.pseudonyms import Pseudonyms, UnknownSubject

    try:
        n = Notification.model_validate(
            {
                "publisher": "signed-in",  # replaced by the operator's org below
                "event": event,
                "event_id": event_id,
                "occurred_on": occurred_on,
                "subject": subject,
            }
        )
    except ValidationError as err:  # names the fields, never the subject's code
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors(include_input=False)
        )
        typer.echo(f"error: {problems}", err=True)
        raise typer.Exit(2) from None
    settings = get_settings()
    # Who signs in, and whether the code is a subject of the org's, need no Temporal: a change
    # refused is refused at once, whether or not Temporal is there (or still starting).
    async with database(settings) as pool:
        try:
            actor = require(await signed_in(pool), "executor")
        except (NotSignedIn, NotEntitled) as err:
            typer.echo(f"error: {err}", err=True)
            raise typer.Exit(2) from None
        try:
            await Pseudonyms(pool, keys.load(settings).hub_key).subject_of(actor.party, subject)
        except UnknownSubject as err:
            typer.echo(f"error: {err}", err=True)
            raise typer.Exit(1) from None
    async with temporal_and_database(settings) as (client, pool, _):
        n = n.model_copy(update={"publisher": actor.party})
        hub = Pseudonyms(pool, keys.load(settings).hub_key)
        try:
            done = await publish(client, pool, settings, default_catalog(), hub, n)
        except (UnknownSubject, NotificationConflict) as err:
            typer.echo(f"error: {err}", err=True)
            raise typer.Exit(1) from None
    for wid in done.started:
        typer.echo(wid)
    typer.echo(
        ("already delivered; " if done.duplicate else "") + f"{len(done.started)} flows",
        err=True,
    )
