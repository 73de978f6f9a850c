"""What the commands share: running an ``async def`` command, the database and the servers a
command works on, the keys check, and ``--input`` parsing."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any, ParamSpec

import asyncpg
import typer

from renkei.app.stack import embedded
from renkei.kernel import keys
from renkei.kernel.db import create_pool, migrate
from renkei.kernel.settings import Settings
from workers.plugin import connect

P = ParamSpec("P")


def run_async(command: Callable[P, Coroutine[Any, Any, int | None]]) -> Callable[P, None]:
    """An ``async def`` command as the plain function typer calls (stack it under
    ``@group.command(...)``): run it to completion with warnings-level logging, then exit with
    the code it returns (returning None ends the command normally, exit code 0).

    ``functools.wraps`` sets ``__wrapped__``, from which typer reads the parameters, their
    annotations and defaults, and the docstring for the help text."""

    @functools.wraps(command)
    def run(*args: P.args, **kwargs: P.kwargs) -> None:
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
        # A denied linkage is an expected outcome, recorded and reported; the SDK logs each
        # failed activity with a traceback, which would bury the report.
        logging.getLogger("temporalio.activity").setLevel(logging.ERROR)
        code = asyncio.run(command(*args, **kwargs))
        if code is not None:
            raise typer.Exit(code)

    return run


async def check_keys(pool: asyncpg.Pool, settings: Settings) -> None:
    """Stop (exit 3) if this process's keys are not the ones the database was started with."""
    try:
        await keys.check_against(pool, keys.load(settings), str(keys.keys_path(settings)))
    except keys.KeyMismatch as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(3) from None


@contextlib.asynccontextmanager
async def database(settings: Settings) -> AsyncIterator[asyncpg.Pool]:
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
            await check_keys(pool, settings)
            yield pool
        finally:
            await pool.close()


@contextlib.asynccontextmanager
async def temporal_and_database(
    settings: Settings,
) -> AsyncIterator[tuple[Any, asyncpg.Pool, str]]:
    """(Temporal client, pool, database url) on the configured or embedded servers."""
    with embedded(settings) as (address, url, _):
        await migrate(url, retention_years=settings.records_retention_years)
        pool = await create_pool(url, max_size=20)
        try:
            yield await connect(settings, address), pool, url
        finally:
            await pool.close()


def joined(settings: Settings) -> Any:
    """The running servers this process joins, or exit 2 saying there are none."""
    from workers.process import NoStack, servers

    try:
        return servers(settings)
    except NoStack as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None


def parse_inputs(pairs: list[str]) -> dict[str, Any]:
    """``--input key=value`` pairs; a value is read as JSON if it is JSON, else kept as text."""
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
