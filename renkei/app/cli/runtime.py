"""What the commands share: running an ``async def`` command, the database and the servers a
command works on, the keys check, and ``--input`` parsing."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import json
import logging
import traceback
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Annotated, Any, ParamSpec

import asyncpg
import typer

from renkei.app.stack import embedded
from renkei.kernel import keys, telemetry
from renkei.kernel.db import create_pool, migrate
from renkei.kernel.settings import Settings, get_settings
from workers.plugin import attach_registry, connect

P = ParamSpec("P")


CORE_LOG_FILE = "temporal-core.log"
VERBOSE_HELP = "also show Temporal's own log on the terminal (always written to the data folder)"


def run_async(command: Callable[P, Coroutine[Any, Any, int | None]]) -> Callable[..., None]:
    """An ``async def`` command as the plain function typer calls (stack it under
    ``@group.command(...)``): run it to completion with warnings-level logging, let go of the
    Temporal runtime, then exit with the code it returns (returning None ends the command
    normally, exit code 0). Every such command takes ``--verbose``.

    ``functools.wraps`` sets ``__wrapped__`` and the docstring for the help text; typer reads
    the parameters from ``__signature__``: the command's own, and ``--verbose``."""

    @functools.wraps(command)
    def run(*args: Any, verbose: bool = False, **kwargs: Any) -> None:
        configure_logging(get_settings(), verbose)
        try:
            code = asyncio.run(command(*args, **kwargs))
        except BaseException as err:
            # The failed frames' locals hold the command's clients: let go of them now.
            _clear_frames(err)
            raise
        finally:
            # The runtime's threads stop here, not while the interpreter exits (where a
            # Temporal thread still running makes CPython abort, exit 134).
            if not telemetry.release_runtimes():
                logging.getLogger(__name__).debug("a Temporal runtime is still referenced")
        if code is not None:
            raise typer.Exit(code)

    own = inspect.signature(command, eval_str=True)
    flag = inspect.Parameter(
        "verbose",
        inspect.Parameter.KEYWORD_ONLY,
        default=False,
        annotation=Annotated[bool, typer.Option("--verbose", "-v", help=VERBOSE_HELP)],
    )
    run.__signature__ = own.replace(  # type: ignore[attr-defined]
        parameters=[*own.parameters.values(), flag], return_annotation=None
    )
    run.__annotations__ = {
        **{n: p.annotation for n, p in own.parameters.items()},
        "verbose": flag.annotation,
        "return": None,
    }
    return run


def _clear_frames(err: BaseException | None) -> None:
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        traceback.clear_frames(err.__traceback__)
        if err.__cause__ is not None:
            _clear_frames(err.__cause__)
        err = err.__context__


class _CoreLogFile(logging.FileHandler):
    """The Temporal core's log file, created (with its folder) at its first line only."""

    def _open(self) -> Any:
        Path(self.baseFilename).parent.mkdir(parents=True, exist_ok=True)
        return super()._open()


class _OneLine(logging.Filter):
    """A record's exception as a short reason at the end of its line, not a traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None:
            record.msg = f"{record.getMessage()} ({type(record.exc_info[1]).__name__})"
            record.args = None
            record.exc_info = None
            record.exc_text = None
        return True


def configure_logging(settings: Settings, verbose: bool = False) -> None:
    """Warnings and errors on the terminal; Temporal's own (core) log in
    ``<data dir>/temporal-core.log``, and on the terminal too if ``verbose``."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # A denied linkage is an expected outcome, recorded and reported; the SDK logs each
    # failed activity with a traceback, which would bury the report.
    logging.getLogger("temporalio.activity").setLevel(logging.ERROR)
    # While the database restarts, asyncpg's pool says each second it cannot reach it: one line.
    pool_log = logging.getLogger("asyncpg.pool")
    if not verbose and not any(isinstance(f, _OneLine) for f in pool_log.filters):
        pool_log.addFilter(_OneLine())
    core = telemetry.CORE_LOG
    path = str((settings.data_dir / CORE_LOG_FILE).absolute())
    for handler in list(core.handlers):
        if isinstance(handler, _CoreLogFile) and handler.baseFilename != path:
            core.removeHandler(handler)
            handler.close()
    if not any(isinstance(h, _CoreLogFile) for h in core.handlers):
        file = _CoreLogFile(path, encoding="utf-8", delay=True)
        file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        core.addHandler(file)
    core.propagate = verbose


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
            client = await connect(settings, address)
            # The orgs' public keys may be registered after this (a first run issues them):
            # the codec looks up a party it does not know in the hub-signed registry.
            attach_registry(client, pool, settings)
            yield client, pool, url
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


async def org_known(settings: Settings, org: str) -> bool:
    """Whether the org registry (the shipped orgs before `renkei init`) holds ``org``."""
    from whitelist.catalog import default_catalog
    from whitelist.orgs import load_orgs

    async with database(settings) as pool:
        return org in (await load_orgs(pool) or default_catalog().orgs)
