"""``renkei whitelist``: load Annex Table 2 into the store, list its rows, decide one linkage."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

import typer

from renkei.app.bootstrap import load_whitelist
from renkei.app.cli.runtime import database, run_async
from renkei.bpf.models import did_you_mean
from renkei.kernel.settings import get_settings
from whitelist import store
from whitelist.catalog import default_catalog
from whitelist.decide import permitting_hint
from whitelist.models import role_of

whitelist_app = typer.Typer(help="The whitelist (番号法 別表第二).", no_args_is_help=True)


@whitelist_app.command("load")
@run_async
async def whitelist_load() -> None:
    """Load Annex Table 2 into the store (workers pick it up without a restart)."""
    async with database(get_settings()) as pool:
        rows, version = await load_whitelist(pool)
        typer.echo(f"{rows} rows from annex2-2015; whitelist version {version}")


@whitelist_app.command("list")
@run_async
async def whitelist_list(
    role: Annotated[str | None, typer.Option(help="requester or provider role")] = None,
    task: Annotated[str | None, typer.Option()] = None,
    info: Annotated[str | None, typer.Option()] = None,
    item: Annotated[str | None, typer.Option(help="item number, e.g. 五十七")] = None,
) -> None:
    """List whitelist rows, optionally filtered."""
    async with database(get_settings()) as pool:
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


@whitelist_app.command("check")
@run_async
async def whitelist_check(
    requester: Annotated[str, typer.Argument(help="requester org id (or role:<id>)")],
    task: str,
    provider: Annotated[str, typer.Argument(help="provider org id (or role:<id>)")],
    info: str,
    at: Annotated[str | None, typer.Option("--at", help="date to decide on (YYYY-MM-DD)")] = None,
) -> int:
    """Decide one linkage: prints allow/deny with the matching row or the reason."""
    catalog = default_catalog()
    day = dt.date.fromisoformat(at) if at else dt.date.today()

    def roles(who: str) -> frozenset[str]:
        role = role_of(who)
        if role is not None:
            return frozenset({role})
        if who not in catalog.orgs:
            raise typer.BadParameter(f"unknown org {who!r}{did_you_mean(who, catalog.orgs)}")
        return catalog.org_roles(who)

    async with database(get_settings()) as pool:
        if not len(index := await store.load_index(pool)):  # a fresh data folder
            await load_whitelist(pool)
            index = await store.load_index(pool)
    # One org on both sides is one body using its own records (a 番号法第9条第2項 row may apply).
    same_body = requester == provider and role_of(requester) is None
    d = index.decide(roles(requester), task, roles(provider), info, day, same_body=same_body)
    if d.allowed and d.row:
        typer.echo(
            f"ALLOW  {d.reason}\n  row: {d.row.id}\n  valid: {d.row.valid_from} – {d.row.valid_to or 'open'}\n  {d.row.legal_text}"
        )
        return 0
    typer.echo(f"DENY   {d.reason}\n  {permitting_hint(index, task, info, day)}")
    return 1
