"""``renkei schedules``: the life-event schedules, kept in line with the BPF definitions."""

from __future__ import annotations

import typer

from renkei.app.cli.runtime import run_async, temporal_and_database
from renkei.kernel.settings import get_settings
from whitelist.catalog import default_catalog

schedules_app = typer.Typer(help="Life-event schedules.", no_args_is_help=True)


@schedules_app.command("sync")
@run_async
async def schedules_sync() -> None:
    """Create, update and delete life-event schedules to match the BPF definitions."""
    from renkei.app.schedules import sync

    settings = get_settings()
    async with temporal_and_database(settings) as (client, pool, _):
        report = await sync(client, pool, settings, default_catalog())
    for kind in ("created", "updated", "deleted", "unchanged"):
        for sid in getattr(report, kind):
            typer.echo(f"{kind}\t{sid}")
