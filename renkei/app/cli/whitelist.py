"""``renkei whitelist``: load the legal sources into the store, list them and their rows,
decide one linkage."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated

import asyncpg
import typer

from renkei.app.actors import Actor
from renkei.app.bootstrap import load_whitelist
from renkei.app.cli.runtime import database, run_async
from renkei.bpf.models import did_you_mean
from renkei.kernel import keys
from renkei.kernel.settings import get_settings
from whitelist import store
from whitelist.catalog import default_catalog
from whitelist.decide import japan_today, permitting_hint
from whitelist.models import role_of

whitelist_app = typer.Typer(
    help="The whitelist: its legal sources (番号法 別表第二, the Article 19(8) ordinance …).",
    no_args_is_help=True,
)

Day = Annotated[str | None, typer.Option(metavar="YYYY-MM-DD")]


def _day(option: str, value: str | None) -> dt.date | None:
    if value is None:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(
            f"{value!r} is not a day (YYYY-MM-DD)", param_hint=option
        ) from None


async def loader(pool: asyncpg.Pool) -> Actor:
    """The signed-in operator who may load a legal source: a platform operator (national law),
    or an org's definer or executor (its own body's ordinance only: ``check_body`` refuses the
    rest, at the file's ``body:`` line)."""
    from renkei.app.actors import require, signed_in

    return require(await signed_in(pool), "platform-operator", "definer", "executor")


@whitelist_app.command("load")
@run_async
async def whitelist_load(
    source: Annotated[
        str | None, typer.Option(help="the source's id (e.g. ordinance-2024); with --file")
    ] = None,
    file: Annotated[
        Path | None,
        typer.Option(help="rows file: .csv or .yaml (docs/whitelist.md), or law XML (.xml)"),
    ] = None,
    valid_from: Day = None,
    valid_to: Day = None,
    title: Annotated[str | None, typer.Option(help="the source's title")] = None,
    citation: Annotated[
        str | None, typer.Option(help="how a row is cited, with {item}: '番号法別表第二 {item}項'")
    ] = None,
    supersedes: Annotated[
        str | None, typer.Option(help="the source this one replaces (it ends where this begins)")
    ] = None,
    stand_in_from: Day = None,
    stand_in_note: Annotated[
        str | None, typer.Option(help="how a stand-in's citation is marked")
    ] = None,
    mapping: Annotated[
        Path | None, typer.Option(help="law XML only: the mapping of its wording to ids")
    ] = None,
    by: Annotated[
        str | None,
        typer.Option(help="shipped sources only: who installs them (default: the OS user)"),
    ] = None,
) -> int:
    """Load a legal source into the store and print what changed (workers pick it up without a
    restart). Without arguments, the shipped sources (Annex Table 2, 2015 text, each sample city's
    ordinance, the partner rows): the installation's step. Every operating BPF version is
    reviewed at the load's effective date.

    A file is loaded by a signed-in operator (``RENKEI_OPERATOR_TOKEN``): a platform operator
    loads national law; an operator of a local government (its definer or executor) loads that
    body's own ordinance only (番号法第9条第2項; the file says ``body:``). The load records who."""
    from renkei.app.sources import SourceOptions, load_defaults, load_file
    from whitelist.sources import SourceFileError

    if (source is None) != (file is None):
        typer.echo("error: --source and --file go together", err=True)
        return 2
    settings = get_settings()
    async with database(settings) as pool:
        if source is None or file is None:
            total, version, reports = await load_defaults(
                pool, by, hub=keys.load(settings).signer()
            )
            for report in reports:
                for line in report.lines():
                    typer.echo(line)
            typer.echo(f"{total} rows from the shipped sources; whitelist version {version}")
            return 0
        options = SourceOptions(
            title=title,
            citation=citation,
            valid_from=_day("--valid-from", valid_from),
            valid_to=_day("--valid-to", valid_to),
            supersedes=supersedes,
            stand_in_from=_day("--stand-in-from", stand_in_from),
            stand_in_note=stand_in_note,
            mapping=mapping,
        )
        try:
            actor = await loader(pool)
        except PermissionError as err:
            typer.echo(f"error: nothing loaded: {err}", err=True)
            return 2
        if by is not None:
            typer.echo("error: --by is for the shipped sources: a file's load names its operator")
            return 2
        as_org = None if actor.role == "platform-operator" else actor.party
        try:
            report = await load_file(
                pool,
                source,
                file,
                options,
                actor.name,
                hub=keys.load(settings).signer(),
                as_org=as_org,
            )
        except (SourceFileError, store.SourceRefused) as err:
            typer.echo(f"error: nothing loaded:\n{err}", err=True)
            return 1
    for line in report.lines():
        typer.echo(line)
    return 0


@whitelist_app.command("sources")
@run_async
async def whitelist_sources() -> None:
    """The legal sources in the store: validity, citation form, stand-in, last load."""
    async with database(get_settings()) as pool:
        sources = await store.fetch_sources(pool)
        counts = {
            r["source"]: r["n"]
            for r in await pool.fetch("SELECT source, count(*) AS n FROM whitelist.rows GROUP BY 1")
        }
    for s in sources:
        typer.echo(
            f"{s.id}\t{s.title}\t{s.period()}\tcited as {s.cite('{item}')}\t{counts.get(s.id, 0)} rows"
            + (f"\tstand-in from {s.stand_in_from}" if s.stand_in_from else "")
            + (f"\tsupersedes {s.supersedes}" if s.supersedes else "")
            + (f"\t{s.body}'s own ordinance" if s.body else "")
            + f"\tloaded {s.loaded_at:%Y-%m-%d %H:%M} by {s.loaded_by}, hash {s.content_hash[:12]}"
        )
    typer.echo(f"{len(sources)} sources", err=True)


@whitelist_app.command("period")
@run_async
async def whitelist_period(
    kind: Annotated[str, typer.Argument(help="task or info")],
    ident: Annotated[str, typer.Argument(metavar="ID", help="the task's or the info item's id")],
    valid_from: Day = None,
    valid_to: Day = None,
) -> int:
    """Set the period a task (事務) or an info item (特定個人情報) is in force (none: always):
    outside it every linkage of it is denied. A platform operator's act (signed in with
    ``RENKEI_OPERATOR_TOKEN``), recorded as a load in its name; then every operating BPF version
    is reviewed, as after a load."""
    from renkei.app.actors import require, signed_in
    from renkei.app.sources import set_period

    if kind not in ("task", "info"):
        raise typer.BadParameter(f"{kind!r}: task or info", param_hint="KIND")
    async with database(get_settings()) as pool:
        try:
            actor = require(await signed_in(pool), "platform-operator")
        except PermissionError as err:
            typer.echo(f"error: nothing set: {err}", err=True)
            return 2
        try:
            report = await set_period(
                pool,
                "task" if kind == "task" else "info",
                ident,
                _day("--valid-from", valid_from),
                _day("--valid-to", valid_to),
                actor.name,
                hub=keys.load(get_settings()).signer(),
            )
        except store.SourceRefused as err:
            typer.echo(f"error: nothing set: {err}", err=True)
            return 1
    for line in report.lines():
        typer.echo(line)
    return 0


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
        sub = "".join(
            f"\t{k} {v}" for k, v in (("sub_task", r.sub_task), ("sub_info", r.sub_info)) if v
        )
        typer.echo(
            f"{r.item}\t{r.requester_role}\t{r.task}\t{r.provider_role}\t{r.info}\t{r.valid_from}–{until}"
            f"\t{r.source}{sub}"
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
    day = dt.date.fromisoformat(at) if at else japan_today()

    def roles(who: str) -> frozenset[str]:
        role = role_of(who)
        if role is not None:
            return frozenset({role})
        if who not in catalog.orgs:
            raise typer.BadParameter(f"unknown org {who!r}{did_you_mean(who, catalog.orgs)}")
        return catalog.org_roles(who)

    async with database(get_settings()) as pool:
        if not len(index := await store.load_index(pool)):  # a fresh data folder
            await load_whitelist(pool, get_settings())
            index = await store.load_index(pool)
    # One org on both sides is one body using its own records (a 番号法第9条第2項 row may apply).
    same_body = requester == provider and role_of(requester) is None
    d = index.decide(
        roles(requester),
        task,
        roles(provider),
        info,
        day,
        same_body=same_body,
        body=requester if same_body else None,
    )
    if d.allowed and d.row:
        src = index.sources.get(d.row.source)
        shown = f"{src.id} ({src.period()})" if src else d.row.source
        if src is not None and src.body:
            shown += f", {src.body}'s own ordinance (番号法第9条第2項)"
        typer.echo(f"ALLOW  {d.reason}\n  row: {d.row.id}\n  source: {shown}\n  {d.row.legal_text}")
        return 0
    typer.echo(f"DENY   {d.reason}\n  {permitting_hint(index, task, info, day)}")
    return 1
