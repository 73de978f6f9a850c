"""``renkei billing``: metering and billing of linkages, per month and tariff."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from renkei.app.cli.runtime import database, run_async
from renkei.kernel.settings import get_settings

billing_app = typer.Typer(help="Metering and billing of linkages.", no_args_is_help=True)


@billing_app.command("report")
@run_async
async def billing_report(
    month: Annotated[str, typer.Option(help="YYYY-MM (Japan time)")],
    format: Annotated[str, typer.Option("--format", help="json or csv")] = "json",
    tariffs: Annotated[
        Path | None, typer.Option(help="tariff file (default: RENKEI_TARIFF_FILE)")
    ] = None,
) -> int | None:
    """Queries per requester and provisions per provider, by task and info item, priced by the
    tariff in force, with the record ranges and chain hashes the counts come from."""
    from renkei.app import billing

    if format not in ("json", "csv"):
        typer.echo("error: --format is json or csv", err=True)
        return 2
    settings = get_settings()
    try:
        billing.month_bounds(month)
        table = billing.load_tariffs(tariffs or settings.tariff_file)
    except (ValueError, OSError) as err:
        typer.echo(f"error: {err}", err=True)
        return 2
    try:
        async with database(settings) as pool:
            found = await billing.report(pool, month, table)
    except ValueError as err:  # no tariff in force on a day with records
        typer.echo(f"error: {err}", err=True)
        return 2
    typer.echo(found.model_dump_json(indent=2) if format == "json" else billing.to_csv(found))
    return None
