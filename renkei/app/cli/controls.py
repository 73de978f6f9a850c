"""``renkei pia`` (the PIA registry), ``renkei suspend`` / ``renkei lift`` (the emergency stop)
and ``renkei suspensions``: a platform operator's commands, made as the signed-in operator
(``RENKEI_OPERATOR_TOKEN``: an operator of the platform's party, in that role) and recorded with
its name; running workers take every change without a restart."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

import typer
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import BaseModel, ValidationError

from renkei.app import controls
from renkei.app.actors import NotSignedIn
from renkei.app.cli.runtime import database, run_async
from renkei.kernel import keys
from renkei.kernel.settings import get_settings
from whitelist import controls_store
from whitelist.catalog import default_catalog
from whitelist.controls import LEVEL_JA, stamp
from whitelist.decide import JST

pia_app = typer.Typer(
    help="The PIA registry (特定個人情報保護評価, 番号法第28条): each org's PIA per task.",
    no_args_is_help=True,
)
suspend_app = typer.Typer(
    help="Suspend at once an org, a BPF version or a whitelist row (a platform operator).",
    no_args_is_help=True,
)
lift_app = typer.Typer(help="Lift a suspension (a platform operator).", no_args_is_help=True)

_REASON = typer.Option(help="why, in one line (recorded with the change)")


def _fail(message: str) -> int:
    typer.echo(f"error: {message}", err=True)
    return 2


def _model(model: type[BaseModel], **fields: Any) -> Any:
    """``model`` from the options, or a located error and exit 2 (never a traceback)."""
    try:
        return model.model_validate(fields)
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'input'}: {e['msg'].removeprefix('Value error, ')}"
            for e in err.errors(include_input=False)
        )
        raise typer.Exit(_fail(problems)) from None


def _day(option: str, value: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise typer.Exit(_fail(f"--{option} is a day, YYYY-MM-DD")) from None


_SHOWN = "%Y-%m-%d %H:%M:%S"


def _unsigned(holds: bool) -> str:
    return "" if holds else "\tNOT THE HUB'S (decides nothing)"


def _hub() -> Ed25519PrivateKey:
    """The hub's key: it signs each change, and only its signatures count."""
    return keys.load(get_settings()).signer()


def _today() -> dt.date:
    return dt.datetime.now(JST).date()


@pia_app.command("list")
@run_async
async def pia_list(
    org: Annotated[str | None, typer.Option(help="only this org's")] = None,
    task: Annotated[str | None, typer.Option(help="only for this task")] = None,
) -> int:
    """The PIAs on record (each org's latest for each task) and whether each stands today."""
    today = _today()
    async with database(get_settings()) as pool:
        found = await controls_store.pias(pool, org, task, hub=_hub().public_key())
    for p in found:
        lapse = p.lapse(today)
        typer.echo(
            f"{p.org}\t{p.task}\t{p.level} ({LEVEL_JA[p.level]})\t{p.approved_on}\t"
            f"{p.review_due}\t{lapse or 'in force'}"
        )
    typer.echo(f"{len(found)} PIAs", err=True)
    return 0


@pia_app.command("history")
@run_async
async def pia_history(org: str, task: str) -> int:
    """Every change of ORG's PIA for TASK: who recorded what, when (an event not signed by the
    hub is marked NOT THE HUB'S: it decides nothing)."""
    async with database(get_settings()) as pool:
        events = await controls_store.pia_history(pool, org, task, hub=_hub().public_key())
    if not events:
        return _fail(f"{org} has no PIA recorded for task {task!r}")
    for e in events:
        at = stamp(e.recorded_at, _SHOWN, JST) if e.recorded_at else "-"
        typer.echo(
            f"{at}\t{e.status}\t{e.level}\t{e.approved_on}\t{e.review_due}\t"
            f"{e.recorded_by}" + (f"\t{e.note}" if e.note else "") + _unsigned(e.holds)
        )
    return 0


@pia_app.command("set")
@run_async
async def pia_set(
    org: str,
    task: str,
    level: Annotated[
        str, typer.Option(help="basic (基礎項目評価), priority (重点項目評価), full (全項目評価)")
    ],
    approved: Annotated[str, typer.Option(help="the day it was approved, YYYY-MM-DD")],
    review_due: Annotated[str, typer.Option(help="the day its next review is due, YYYY-MM-DD")],
    note: Annotated[str, typer.Option(help="a line to keep with it")] = "",
) -> int:
    """Record ORG's PIA for TASK as approved (the earlier ones stay in its history)."""
    change = _model(
        controls.PiaChange,
        level=level,
        approved_on=_day("approved", approved),
        review_due=_day("review-due", review_due),
        note=note,
    )
    async with database(get_settings()) as pool:
        try:
            operator = await controls.signed_in_platform_operator(pool)
            done = await controls.set_pia(
                pool, default_catalog(), org, task, change, operator, hub=_hub()
            )
        except (NotSignedIn, controls.NotAPlatformOperator, controls.Refused) as err:
            return _fail(str(err))
    typer.echo(f"{org}\t{task}\t{done.pia.describe(_today())}\t(version {done.version})")
    return 0


@pia_app.command("withdraw")
@run_async
async def pia_withdraw(
    org: str,
    task: str,
    reason: Annotated[str, _REASON],
) -> int:
    """Withdraw ORG's PIA for TASK: from now its linkages under TASK are denied."""
    asked = _model(controls.Withdrawal, reason=reason)
    async with database(get_settings()) as pool:
        try:
            operator = await controls.signed_in_platform_operator(pool)
            done = await controls.withdraw_pia(
                pool, default_catalog(), org, task, asked.reason, operator, hub=_hub()
            )
        except (NotSignedIn, controls.NotAPlatformOperator, controls.Refused) as err:
            return _fail(str(err))
    typer.echo(f"{org}\t{task}\twithdrawn by {operator}\t(version {done.version})")
    return 0


async def _suspend(**fields: Any) -> int:
    asked = _model(controls.SuspensionAsked, **fields)
    async with database(get_settings()) as pool:
        try:
            operator = await controls.signed_in_platform_operator(pool)
            done = await controls.suspend(pool, default_catalog(), asked, operator, hub=_hub())
        except (NotSignedIn, controls.NotAPlatformOperator, controls.Refused) as err:
            return _fail(str(err))
    typer.echo(f"{done.suspension.describe()}\t(version {done.version})")
    return 0


async def _lift(**fields: Any) -> int:
    asked = _model(controls.LiftAsked, **fields)
    async with database(get_settings()) as pool:
        try:
            operator = await controls.signed_in_platform_operator(pool)
            done = await controls.lift(pool, asked, operator, hub=_hub())
        except (NotSignedIn, controls.NotAPlatformOperator, controls.Refused) as err:
            return _fail(str(err))
    e = done.lifted
    typer.echo(f"{e.what} lifted by {e.operator}: {e.reason}\t(version {done.version})")
    return 0


@suspend_app.command("org")
@run_async
async def suspend_org(
    org: str,
    reason: Annotated[str, _REASON],
    side: Annotated[str, typer.Option(help="requester, provider or both")] = "both",
) -> int:
    """Suspend ORG's linkages at once: as requester, as provider, or both."""
    return await _suspend(kind="org", target=org, side=side, reason=reason)


@suspend_app.command("bpf")
@run_async
async def suspend_bpf(
    bpf: str,
    version: int,
    reason: Annotated[str, _REASON],
) -> int:
    """Suspend a BPF version at once: its runs' linkages are denied, no new run starts."""
    return await _suspend(kind="bpf", target=bpf, version=version, reason=reason)


@suspend_app.command("row")
@run_async
async def suspend_row(
    row: Annotated[str, typer.Argument(help="a whitelist row id (`renkei whitelist list`)")],
    reason: Annotated[str, _REASON],
) -> int:
    """Suspend a whitelist row at once: a linkage it would permit is denied."""
    return await _suspend(kind="row", target=row, reason=reason)


@lift_app.command("org")
@run_async
async def lift_org(org: str, reason: Annotated[str, _REASON]) -> int:
    """Lift ORG's suspension."""
    return await _lift(kind="org", target=org, reason=reason)


@lift_app.command("bpf")
@run_async
async def lift_bpf(
    bpf: str,
    version: int,
    reason: Annotated[str, _REASON],
) -> int:
    """Lift a BPF version's suspension."""
    return await _lift(kind="bpf", target=bpf, version=version, reason=reason)


@lift_app.command("row")
@run_async
async def lift_row(row: str, reason: Annotated[str, _REASON]) -> int:
    """Lift a whitelist row's suspension."""
    return await _lift(kind="row", target=row, reason=reason)


@run_async
async def suspensions(
    history: Annotated[
        bool, typer.Option(help="every suspension and lift, the oldest first")
    ] = False,
) -> int:
    """The suspensions in force: what, since when, by whom, why (--history: every change; an
    event not signed by the hub is marked NOT THE HUB'S: it decides nothing)."""
    async with database(get_settings()) as pool:
        if history:
            for e in await controls_store.suspension_history(pool, hub=_hub().public_key()):
                typer.echo(
                    f"{stamp(e.at, _SHOWN, JST)}\t{e.action}\t{e.what}\t"
                    f"{e.operator}\t{e.reason}" + _unsigned(e.holds)
                )
            return 0
        found = await controls_store.suspensions(pool, hub=_hub().public_key())
    for s in found:
        typer.echo(f"{stamp(s.at, _SHOWN, JST)}\t{s.what}\t{s.operator}\t{s.reason}")
    typer.echo(f"{len(found)} suspensions in force", err=True)
    return 0
