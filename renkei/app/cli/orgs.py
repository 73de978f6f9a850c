"""``renkei orgs``: the participants (the org registry) and their onboarding.

Every command acts as the signed-in operator (``RENKEI_OPERATOR_TOKEN``): the platform operator
adds, changes, merges, activates and retires orgs; the conformance body certifies them. Running
workers follow every change without a restart (see :mod:`whitelist.orgs`).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

import asyncpg
import typer
from pydantic import ValidationError

from renkei.app import onboarding
from renkei.app.actors import Actor, NotEntitled, NotSignedIn, require, signed_in
from renkei.app.cli.runtime import database, run_async
from renkei.kernel import keys
from renkei.kernel.settings import get_settings
from whitelist import orgs
from whitelist.catalog import default_catalog
from whitelist.decide import JST
from whitelist.models import ORG_KINDS, Acting, Held
from whitelist.seal import WhitelistUnsealed

orgs_app = typer.Typer(
    help="The participants: add, change, merge, certify, activate and retire orgs.",
    no_args_is_help=True,
)

_HELD = re.compile(r"^([a-z0-9-]+)(?:@(\d{4}-\d{2}-\d{2})?(?:\.\.(\d{4}-\d{2}-\d{2}))?)?$")
_ROLE = typer.Option(
    "--role", help="a role held: ROLE, ROLE@FROM or ROLE@FROM..TO (dates YYYY-MM-DD, TO exclusive)"
)
_SERVES = typer.Option("--serves", help="an info item served: ITEM, ITEM@FROM or ITEM@FROM..TO")

T = TypeVar("T")


def _day_option(*names: str, help: str) -> Any:
    """A day option (YYYY-MM-DD), read as typer reads dates; :func:`_day` makes it a date."""
    return typer.Option(*names, formats=["%Y-%m-%d"], help=help)


def _day(value: dt.datetime | None) -> dt.date | None:
    return value.date() if value else None


class BadArgument(ValueError):
    pass


def parse_held(option: str, spec: str) -> Held:
    """``id``, ``id@FROM`` or ``id@FROM..TO`` → a :class:`Held`."""
    m = _HELD.match(spec.strip())
    if m is None:
        raise BadArgument(f"{option} {spec!r}: expected ID, ID@YYYY-MM-DD or ID@FROM..TO")
    try:
        return Held(
            id=m[1],
            valid_from=dt.date.fromisoformat(m[2]) if m[2] else None,
            valid_to=dt.date.fromisoformat(m[3]) if m[3] else None,
        )
    except ValueError as err:
        raise BadArgument(f"{option} {spec!r}: {err}") from None


def parse_ends(option: str, specs: list[str]) -> dict[str, dt.date]:
    out: dict[str, dt.date] = {}
    for spec in specs:
        held = parse_held(option, spec)
        if held.valid_from is None or held.valid_to is not None:
            raise BadArgument(f"{option} {spec!r}: expected ID@YYYY-MM-DD (the day it ends)")
        out[held.id] = held.valid_from
    return out


async def _acting(*roles: str, then: Callable[[asyncpg.Pool, Actor], Awaitable[str]]) -> int:
    """Run ``then`` as the signed-in operator of one of ``roles``; print its line, or why not."""
    async with database(get_settings()) as pool:
        try:
            actor = require(await signed_in(pool), *roles)  # type: ignore[arg-type]
            typer.echo(await then(pool, actor))
        except (
            NotSignedIn,
            NotEntitled,
            orgs.OrgChangeRefused,
            onboarding.NotCertifiable,
            WhitelistUnsealed,
        ) as err:
            typer.echo(f"refused: {err}", err=True)
            return 1
        except ValidationError as err:
            typer.echo(f"error: {_first(err)}", err=True)
            return 2
    return 0


def _first(err: ValidationError) -> str:
    return "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors())


def _options(build: Callable[[], T]) -> T | None:
    """What ``build`` makes of a command's options; None once it printed why they are bad
    (the command then exits 2, before it signs in)."""
    try:
        return build()
    except BadArgument as err:
        typer.echo(f"error: {err}", err=True)
    except ValidationError as err:
        typer.echo(f"error: {_first(err)}", err=True)
    return None


@orgs_app.command("list")
@run_async
async def orgs_list() -> None:
    """Every org: id, kind, status, the roles it holds and the items it serves today."""
    async with database(get_settings()) as pool:
        for o in (await orgs.load_orgs(pool)).values():
            merged = f"\tmerged into {o.successor} on {o.merged_on}" if o.successor else ""
            typer.echo(
                f"{o.id}\t{o.kind}\t{o.status}\troles: {', '.join(o.roles) or '-'}"
                f"\tserves: {', '.join(o.serves) or '-'}"
                + (f"\tacts: {', '.join(o.acts)}" if o.acts else "")
                + merged
            )


@orgs_app.command("show")
@run_async
async def orgs_show(org: str) -> int:
    """One org: its roles and items with their periods, its certificates and its history."""
    async with database(get_settings()) as pool:
        found = (await orgs.load_orgs(pool)).get(org)
        if found is None:
            typer.echo(f"error: unknown org {org!r}", err=True)
            return 1
        typer.echo(f"{found.id}\t{found.ja} / {found.en}\t{found.kind}\t{found.status}")
        for label, held in (("role", found.held), ("serves", found.serving)):
            for h in held:
                typer.echo(f"  {label}\t{h.id}\t{h.valid_from or '-'} .. {h.valid_to or 'open'}")
        for a in found.acting:
            typer.echo(
                f"  acts\t{a.id}\t{a.valid_from or '-'} .. {a.valid_to or 'open'}\t{a.basis}"
            )
        for c in await onboarding.certificates(pool, org):
            typer.echo(f"  certificate\t{c.signer}\t{c.report_hash}\t{', '.join(c.served)}")
        for e in await orgs.events(pool, org):
            typer.echo(f"  {e.at:%Y-%m-%d %H:%M:%S}\t{e.action}\t{e.actor} ({e.actor_role})")
    return 0


@orgs_app.command("add")
@run_async
async def orgs_add(
    org: str,
    ja: Annotated[str, typer.Option(help="the name in Japanese")],
    en: Annotated[str, typer.Option(help="the name in English")],
    kind: Annotated[str, typer.Option(help=f"one of: {', '.join(ORG_KINDS)}")],
    role: Annotated[list[str] | None, _ROLE] = None,
    serves: Annotated[list[str] | None, _SERVES] = None,
) -> int:
    """Register an org (platform operator). It is `registered`: it asks and answers nothing
    until it passed its contract test, was certified and was activated."""
    new = _options(
        lambda: orgs.NewOrg(
            id=org,
            ja=ja,
            en=en,
            kind=kind,
            roles=tuple(parse_held("--role", r) for r in role or []),
            serves=tuple(parse_held("--serves", s) for s in serves or []),
        )
    )
    if new is None:
        return 2

    async def then(pool: asyncpg.Pool, actor: Actor) -> str:
        version = await orgs.add(
            pool,
            default_catalog(),
            new,
            actor.name,
            actor.role,
            hub=keys.load(get_settings()).signer(),
        )
        return f"{org}: registered (whitelist version {version})"

    return await _acting("platform-operator", then=then)


@orgs_app.command("change")
@run_async
async def orgs_change(
    org: str,
    ja: Annotated[str | None, typer.Option()] = None,
    en: Annotated[str | None, typer.Option()] = None,
    add_role: Annotated[list[str] | None, typer.Option(help="ROLE[@FROM[..TO]]")] = None,
    end_role: Annotated[list[str] | None, typer.Option(help="ROLE@DATE: held until DATE")] = None,
    add_serves: Annotated[list[str] | None, typer.Option(help="ITEM[@FROM[..TO]]")] = None,
    end_serves: Annotated[list[str] | None, typer.Option(help="ITEM@DATE")] = None,
) -> int:
    """Rename an org, or give it roles or items from a date, or end them on one."""
    what = _options(
        lambda: orgs.OrgChange(
            ja=ja,
            en=en,
            add_roles=tuple(parse_held("--add-role", r) for r in add_role or []),
            end_roles=parse_ends("--end-role", end_role or []),
            add_serves=tuple(parse_held("--add-serves", s) for s in add_serves or []),
            end_serves=parse_ends("--end-serves", end_serves or []),
        )
    )
    if what is None:
        return 2

    async def then(pool: asyncpg.Pool, actor: Actor) -> str:
        version = await orgs.change(
            pool,
            default_catalog(),
            org,
            what,
            actor.name,
            actor.role,
            hub=keys.load(get_settings()).signer(),
        )
        return f"{org}: changed (whitelist version {version})"

    return await _acting("platform-operator", then=then)


@orgs_app.command("add-act")
@run_async
async def orgs_add_act(
    org: str,
    action: Annotated[str, typer.Argument(help="an action of the catalog (actions.yaml)")],
    basis: Annotated[
        str,
        typer.Option(help="what the org carries it out under: a provision, a contract, terms"),
    ],
    valid_from: Annotated[
        dt.datetime | None, _day_option("--from", help="from (YYYY-MM-DD)")
    ] = None,
    valid_to: Annotated[
        dt.datetime | None, _day_option("--to", help="until, exclusive (YYYY-MM-DD)")
    ] = None,
) -> int:
    """ORG carries out ACTION (a partner's act step) on a basis, from a date (platform
    operator). Running workers take it at once: the hub and ORG's own gate admit the act."""
    act = _options(
        lambda: Acting(id=action, basis=basis, valid_from=_day(valid_from), valid_to=_day(valid_to))
    )
    if act is None:
        return 2

    async def then(pool: asyncpg.Pool, actor: Actor) -> str:
        version = await orgs.add_act(
            pool,
            default_catalog(),
            org,
            act,
            actor.name,
            actor.role,
            hub=keys.load(get_settings()).signer(),
        )
        return f"{org}: carries out {action} (whitelist version {version})"

    return await _acting("platform-operator", then=then)


@orgs_app.command("end-act")
@run_async
async def orgs_end_act(
    org: str,
    action: str,
    on: Annotated[
        dt.datetime | None, _day_option(help="the first day it does not (default: today)")
    ] = None,
) -> int:
    """ORG stops carrying out ACTION on a day (platform operator); the period is kept, closed."""
    day = _day(on) or dt.datetime.now(JST).date()

    async def then(pool: asyncpg.Pool, actor: Actor) -> str:
        version = await orgs.end_act(
            pool, org, action, day, actor.name, actor.role, hub=keys.load(get_settings()).signer()
        )
        return f"{org}: carries out {action} until {day} (whitelist version {version})"

    return await _acting("platform-operator", then=then)


@orgs_app.command("merge")
@run_async
async def orgs_merge(
    org: str,
    into: Annotated[str, typer.Option(help="the successor org")],
    on: Annotated[dt.datetime, _day_option(help="the merger's date (YYYY-MM-DD)")],
) -> int:
    """Merge ORG into another on a date (市町村合併): from that date the successor holds ORG's
    roles and serves its items, and ORG is refused."""

    async def then(pool: asyncpg.Pool, actor: Actor) -> str:
        version = await orgs.merge(
            pool,
            org,
            into,
            on.date(),
            actor.name,
            actor.role,
            hub=keys.load(get_settings()).signer(),
        )
        return f"{org}: merged into {into} on {on.date()} (whitelist version {version})"

    return await _acting("platform-operator", then=then)


@orgs_app.command("retire")
@run_async
async def orgs_retire(org: str) -> int:
    """Retire an org: it never asks nor answers again."""

    async def then(pool: asyncpg.Pool, actor: Actor) -> str:
        version = await orgs.transition(
            pool, org, "retired", actor.name, actor.role, hub=keys.load(get_settings()).signer()
        )
        return f"{org}: retired (whitelist version {version})"

    return await _acting("platform-operator", then=then)


@orgs_app.command("certify")
@run_async
async def orgs_certify(org: str) -> int:
    """Certify an org over its last passing contract test (the conformance body)."""

    async def then(pool: asyncpg.Pool, actor: Actor) -> str:
        cert = await onboarding.certify(pool, get_settings(), org, actor.name)
        return f"{org}: certified by {cert.signer} over report {cert.report_hash}"

    return await _acting("conformance-body", then=then)


@orgs_app.command("activate")
@run_async
async def orgs_activate(org: str) -> int:
    """Activate a certified org (platform operator): from now on it asks and answers."""

    async def then(pool: asyncpg.Pool, actor: Actor) -> str:
        version = await orgs.transition(
            pool, org, "active", actor.name, actor.role, hub=keys.load(get_settings()).signer()
        )
        return f"{org}: active (whitelist version {version})"

    return await _acting("platform-operator", then=then)


@orgs_app.command("verify")
@run_async
async def orgs_verify(org: str) -> int:
    """Check every certificate of an org: the conformance body's key, the kept report."""
    async with database(get_settings()) as pool:
        certs = await onboarding.certificates(pool, org)
        if not certs:
            typer.echo(f"{org}: no certificate", err=True)
            return 1
        bad = 0
        for c in certs:
            why = await onboarding.verify(pool, get_settings(), c)
            bad += why is not None
            typer.echo(
                f"{'OK ' if why is None else 'BAD'}  {c.report_hash}" + (f" — {why}" if why else "")
            )
    return 1 if bad else 0
