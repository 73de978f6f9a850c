"""``renkei outbox``: an executor's outbox (the reminders its flows ask it to send)."""

from __future__ import annotations

from typing import Annotated

import typer

from renkei.app.cli.runtime import database, run_async
from renkei.kernel.settings import get_settings
from whitelist.catalog import default_catalog

outbox_app = typer.Typer(help="An executor's outbox: reminders to send.", no_args_is_help=True)

Org = Annotated[str, typer.Option(help="the executor org whose outbox it is")]


def _known(org: str) -> bool:
    if org in default_catalog().orgs:
        return True
    typer.echo(f"error: unknown org {org!r}", err=True)
    return False


@outbox_app.command("list")
@run_async
async def outbox_list(org: Org) -> int | None:
    """The org's unacknowledged messages, one JSON object a line (the oldest first). Each is
    listed again until it is acknowledged (`renkei outbox ack ID --org ORG`)."""
    from renkei.app import outbox

    if not _known(org):
        return 2
    async with database(get_settings()) as pool:
        found = await outbox.pending(pool, org)
    for message in found:
        typer.echo(message.model_dump_json())
    typer.echo(f"{len(found)} message(s) for {org}", err=True)
    return None


@outbox_app.command("ack")
@run_async
async def outbox_ack(message_id: Annotated[int, typer.Argument(metavar="ID")], org: Org) -> int:
    """Acknowledge a message of the org's outbox: it is not listed again."""
    from renkei.app import outbox

    if not _known(org):
        return 2
    async with database(get_settings()) as pool:
        done = await outbox.ack(pool, org, message_id)
    if done is None:
        typer.echo(f"error: no message {message_id} in the outbox of {org}", err=True)
        return 1
    typer.echo(f"acknowledged {done.id} at {done.acknowledged_at.isoformat()}")
    return 0
