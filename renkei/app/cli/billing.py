"""``renkei billing``: invoices per org and month under the billing model, issued, shown and
recounted from the signed records; ``renkei usage``: usage per procedure and org."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from renkei.app.cli.runtime import database, run_async
from renkei.kernel import keys
from renkei.kernel.settings import get_settings

if TYPE_CHECKING:
    from renkei.app.billing import CostModel

billing_app = typer.Typer(
    help="Billing: invoices per org and month, reconciled to the access records.",
    no_args_is_help=True,
)
usage_app = typer.Typer(help="Usage per procedure (BPF), org and month.", no_args_is_help=True)

Month = Annotated[str, typer.Option(help="YYYY-MM (Japan time)")]
ModelFile = Annotated[
    Path | None,
    typer.Option("--model", help="billing model file (default: RENKEI_TARIFF_FILE)"),
]


def _model(path: Path | None) -> CostModel:
    from renkei.app import billing

    try:
        return billing.load_model(path or get_settings().tariff_file)
    except (ValueError, OSError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None


def _month(month: str) -> None:
    from renkei.app import billing

    try:
        billing.month_bounds(month)
    except ValueError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None


def _catalog_orgs() -> list[str]:
    from whitelist.catalog import default_catalog

    return sorted(default_catalog().orgs)


@billing_app.command("report")
@run_async
async def billing_report(
    month: Month,
    format: Annotated[str, typer.Option("--format", help="json or csv")] = "json",
    model: ModelFile = None,
) -> int | None:
    """Every org's invoice for the month as the records say now, not issued (a preview)."""
    from renkei.app import billing

    if format not in ("json", "csv"):
        typer.echo("error: --format is json or csv", err=True)
        return 2
    _month(month)
    cost = _model(model)
    try:
        async with database(get_settings()) as pool:
            found = await billing.compute(pool, month, cost, catalog_orgs=_catalog_orgs())
    except ValueError as err:  # no version of the model in force on a day with records
        typer.echo(f"error: {err}", err=True)
        return 2
    if format == "json":
        typer.echo(json.dumps([b.model_dump(mode="json") for b in found.values()], indent=2))
    else:
        typer.echo("\n".join(billing.to_csv(b) for b in found.values()))
    return None


@billing_app.command("issue")
@run_async
async def billing_issue(month: Month, model: ModelFile = None) -> int | None:
    """Issue the month's invoices: a new revision for each org whose invoice changed since the
    last issue (or that has none), the others as they were. Issued invoices never change."""
    from renkei.app import billing

    _month(month)
    cost = _model(model)
    if billing.month_bounds(month)[1] > dt.datetime.now(dt.UTC):
        typer.echo(
            f"note: {month} has not ended; later attempts will need a new revision", err=True
        )
    try:
        async with database(get_settings()) as pool:
            issued = await billing.issue(pool, month, cost, _catalog_orgs())
    except ValueError as err:
        typer.echo(f"error: {err}", err=True)
        return 2
    for i in issued:
        inv = i.invoice
        typer.echo(
            f"{inv.number}\t{inv.body.org}\t{month}\trevision {inv.revision}"
            f"\t{inv.body.total:,} {inv.body.currency}\t{'issued' if i.new else 'unchanged'}"
        )
    typer.echo(f"{sum(i.new for i in issued)} issued, {len(issued)} invoices", err=True)
    return None


@billing_app.command("list")
@run_async
async def billing_list(
    month: Annotated[str | None, typer.Option(help="YYYY-MM")] = None,
    org: Annotated[str | None, typer.Option()] = None,
) -> None:
    """Issued invoices, every revision."""
    from renkei.app import billing

    async with database(get_settings()) as pool:
        found = await billing.listing(pool, month, org)
    for inv in found:
        typer.echo(
            f"{inv.number}\t{inv.body.org}\t{inv.body.month}\trevision {inv.revision}"
            f"\t{inv.body.total:,} {inv.body.currency}\t{inv.issued_at:%Y-%m-%d %H:%M}"
        )
    typer.echo(f"{len(found)} invoices", err=True)


@billing_app.command("show")
@run_async
async def billing_show(
    number: int,
    format: Annotated[str, typer.Option("--format", help="json, csv or html")] = "json",
) -> int | None:
    """An issued invoice, rendered again from what was stored."""
    from renkei.app import billing

    if format not in ("json", "csv", "html"):
        typer.echo("error: --format is json, csv or html", err=True)
        return 2
    async with database(get_settings()) as pool:
        found = await billing.get(pool, number)
    if found is None:
        typer.echo(f"error: no invoice {number}", err=True)
        return 2
    if format == "json":
        typer.echo(found.model_dump_json(indent=2))
    elif format == "csv":
        typer.echo(billing.to_csv(found.body, found.number, found.revision))
    else:
        from renkei.app.web.operator import invoice_html

        typer.echo(invoice_html(found))
    return None


@billing_app.command("verify")
@run_async
async def billing_verify(
    number: Annotated[int | None, typer.Argument(help="one invoice (default: see --month)")] = None,
    month: Annotated[
        str | None, typer.Option(help="every org's latest revision of this month")
    ] = None,
    chains: Annotated[
        bool,
        typer.Option(
            "--chains", help="also walk the chains counted: hashes, signatures, witnesses"
        ),
    ] = False,
) -> int:
    """Recompute issued invoices from the records, with the model each was issued with; exit 1
    and name every difference when one no longer matches (then issue the month again). With
    --chains, also verify the chains they count, as renkei records verify does."""
    from renkei.app import billing

    settings = get_settings()
    if (number is None) == (month is None):
        typer.echo("error: give an invoice number or --month", err=True)
        return 2
    if month is not None:
        _month(month)
    async with database(settings) as pool:
        if number is not None:
            one = await billing.get(pool, number)
            if one is None:
                typer.echo(f"error: no invoice {number}", err=True)
                return 2
            chosen = [one]
        else:
            latest: dict[str, billing.Invoice] = {}
            for inv in await billing.listing(pool, month):
                latest[inv.body.org] = inv  # revisions in order: the last is the latest
            chosen = list(latest.values())
        checks = [await billing.verify(pool, inv) for inv in chosen]
        breaks = (
            await billing.verify_chains(pool, keys.load(settings).signer().public_key(), chosen)
            if chains
            else []
        )
    for c in checks:
        typer.echo(
            f"{c.number}\t{c.org}\t{c.month}\trevision {c.revision}\t"
            f"{'matches the records' if c.ok else 'MISMATCH'}"
        )
        for p in c.problems:
            typer.echo(f"  {p}", err=True)
    for b in breaks:
        typer.echo(f"BROKEN {b.keeper} at record {b.chain_seq}: {b.problem}", err=True)
    if chains and not breaks:
        typer.echo("every chain counted is intact")
    return 0 if all(c.ok for c in checks) and not breaks else 1


@usage_app.command("report")
@run_async
async def usage_report(
    month: Annotated[str, typer.Option(help="YYYY-MM (Japan time): the first month")],
    to: Annotated[
        str | None, typer.Option(help="YYYY-MM: the last month (default: --month alone)")
    ] = None,
    format: Annotated[str, typer.Option("--format", help="table, csv or json")] = "table",
) -> int | None:
    """Per month, procedure (BPF) and requesting org: queries, denials by reason, outcomes, median
    and p99 latency; and the registered procedures and catalog tasks no one used."""
    from renkei.app import usage
    from whitelist.catalog import default_catalog

    if format not in ("table", "csv", "json"):
        typer.echo("error: --format is table, csv or json", err=True)
        return 2
    _month(month)
    if to is not None:
        _month(to)
        if to < month:
            typer.echo(f"error: --to {to} is before --month {month}", err=True)
            return 2
    async with database(get_settings()) as pool:
        found = await usage.report(pool, month, default_catalog().tasks, to)
    if format == "json":
        typer.echo(found.model_dump_json(indent=2))
    elif format == "csv":
        typer.echo(usage.to_csv(found), nl=False)
    else:
        typer.echo(usage.to_table(found))
    return None
