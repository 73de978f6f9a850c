"""The app's answer while Temporal or PostgreSQL is out of reach: 503 with ``Retry-After``.

Every route is covered, the ones added later too: the exception handlers turn a lost database
connection and an unreachable or too slow Temporal into 503; any other error is a 503 too if the
database is out of reach (its cause or context says so, or the database does not answer a probe
then: a driver's error of a shape not listed here, an error raised while handling a lost
connection), else a 500; and :class:`AnswerInTime` answers
503 to any request that has no answer started after ``deadline`` seconds (a server that hangs
rather than refuses: a stopped PostgreSQL whose connections never time out, a pool with every
connection stuck). Sending the request again is safe: a start is idempotent by its case
reference, a state read changes nothing, an answer to a wait is taken once.

Nothing of the request (no id, no code) is in the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

import asyncpg
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from temporalio.service import RPCError, RPCStatusCode

_log = logging.getLogger(__name__)

# Temporal's statuses that say it is out of reach or too slow (a 503, not the caller's fault).
TEMPORAL_GONE = frozenset(
    {
        RPCStatusCode.UNAVAILABLE,
        RPCStatusCode.DEADLINE_EXCEEDED,
        RPCStatusCode.RESOURCE_EXHAUSTED,
        RPCStatusCode.CANCELLED,
    }
)
# What Temporal answers a query while no worker polls the flow's task queue (its workers, or
# the server, restarting: the server knows of no poller until one polls again). The worker that
# answers is out of reach for now, the caller's request is not at fault: a 503 too.
NO_POLLER = "no poller seen"
# Seconds the database may take to answer the probe after an unexpected error.
PROBE_SECONDS = 2.0
# Raises while the database is out of reach (``SELECT 1`` on the app's pool).
Probe = Callable[[], Awaitable[object]]

# Seconds a client should wait before sending the request again.
RETRY_AFTER = 5
RETRY_HEADER = (b"retry-after", str(RETRY_AFTER).encode())
# Seconds a request may take before its answer starts; past it the answer is a 503. Longer than
# one Temporal call may take (renkei.app.client.RPC_TIMEOUT), so a slow call's own 503 comes first.
DEADLINE = 30.0

# Lost or refused database connections: the server stopped, crashed, restarting or out of reach.
DATABASE_GONE: tuple[type[Exception], ...] = (
    asyncpg.PostgresConnectionError,  # class 08, and a connection closed under a query
    asyncpg.exceptions.CannotConnectNowError,  # starting up, in recovery
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.exceptions.TooManyConnectionsError,
    ConnectionError,  # refused, reset
    TimeoutError,  # connecting or acquiring took too long
)


def unavailable(detail: str) -> JSONResponse:
    """A 503 with the reason and when to try again."""
    return JSONResponse(
        {"detail": detail}, status_code=503, headers={"Retry-After": str(RETRY_AFTER)}
    )


async def database_gone(request: Request, err: Exception) -> JSONResponse:
    return unavailable("the database is out of reach; send the request again")


async def socket_gone(request: Request, err: Exception) -> JSONResponse:
    """An ``OSError`` is the database's only when it is about its socket (a stopped server's
    socket file is gone); any other stays a server error."""
    if isinstance(err, ConnectionError | TimeoutError) or ".s.PGSQL." in str(err):
        return await database_gone(request, err)
    raise err


class AnswerInTime:
    """503 with ``Retry-After`` for a request whose answer has not started after ``deadline``
    seconds; the route is cancelled. An answer once started is sent to its end. Every 503 (a
    route's own too) carries ``Retry-After``. An error no handler took is a 503 too if it or
    the database (``probe``) says the database is out of reach."""

    def __init__(
        self, app: ASGIApp, deadline: float = DEADLINE, probe: Probe | None = None
    ) -> None:
        self.app = app
        self.deadline = deadline
        self.probe = probe

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = asyncio.Event()

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                started.set()
                headers = list(message.get("headers", []))
                if message["status"] == 503 and not any(
                    k.lower() == b"retry-after" for k, _ in headers
                ):  # a route's own 503 (an HTTPException) says when to try again too
                    message = {**message, "headers": [*headers, RETRY_HEADER]}
            await send(message)

        async def answer() -> None:
            try:
                await self.app(scope, receive, sending)
            except Exception as err:  # what no handler took: the outage's, or a server error
                if started.is_set() or not (
                    gone_in_chain(err) or await probe_fails(self.probe, type(err).__name__)
                ):
                    raise
                await unavailable(
                    "the platform is out of reach of a server; send the request again"
                )(scope, receive, sending)

        route = asyncio.create_task(answer())
        began = asyncio.create_task(started.wait())
        try:
            await asyncio.wait({route, began}, timeout=self.deadline, return_when="FIRST_COMPLETED")
        finally:
            began.cancel()
        if route.done() or started.is_set():
            await route
            return
        route.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await route
        if started.is_set():  # the route began its answer while it was being cancelled
            return
        await unavailable("the platform did not answer in time; send the request again")(
            scope, receive, send
        )


async def connection_closed(request: Request, err: Exception) -> JSONResponse:
    """asyncpg's "connection is closed" and "pool is closing" are the database gone; any other
    interface error is a fault of the code and stays a server error."""
    if "closed" in str(err) or "closing" in str(err):
        return await database_gone(request, err)
    raise err


def _says_gone(err: BaseException) -> bool:
    """Whether ``err`` is a server out of reach, as the handlers above read it."""
    if isinstance(err, DATABASE_GONE):
        return True
    if isinstance(err, asyncpg.InterfaceError):
        return "closed" in str(err) or "closing" in str(err)
    if isinstance(err, OSError):
        return ".s.PGSQL." in str(err)
    return isinstance(err, RPCError) and (
        err.status in TEMPORAL_GONE
        or (err.status == RPCStatusCode.FAILED_PRECONDITION and NO_POLLER in err.message)
    )


def gone_in_chain(err: BaseException) -> bool:
    """Whether ``err``, its causes and contexts (and the members of a group) say a server is
    out of reach: an error raised from, or while handling, a lost connection is the outage's."""
    seen: set[int] = set()
    stack: list[BaseException] = [err]
    while stack:
        e = stack.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        if _says_gone(e):
            return True
        if isinstance(e, BaseExceptionGroup):
            stack.extend(e.exceptions)
        stack.extend(x for x in (e.__cause__, e.__context__) if x is not None)
    return False


async def probe_fails(probe: Probe | None, after: str = "") -> bool:
    """Whether the database fails ``probe`` now (out of reach, or no answer in time); said in
    the log, with the type of the error ``after`` which it was asked, when it does."""
    if probe is None:
        return False
    try:
        await asyncio.wait_for(probe(), PROBE_SECONDS)
    except Exception as err:
        if not (isinstance(err, TimeoutError) or gone_in_chain(err)):
            return False
        _log.warning(
            "answered 503: the database did not answer after %s (%s)", after, type(err).__name__
        )
        return True
    return False


def pool_probe(pool: asyncpg.Pool) -> Probe:
    """``SELECT 1`` on a connection of ``pool``'s. A pool whose every connection is taken (the
    code holding them, the database answering) is not the database out of reach: waiting for
    a connection past a second is not the probe failing."""

    async def probe() -> None:
        try:
            conn = await pool.acquire(timeout=1.0)
        except TimeoutError:
            return  # no connection free: the pool's state, not the database's
        try:
            await conn.fetchval("SELECT 1")
        finally:
            await pool.release(conn)

    return probe


def install(app: FastAPI, probe: Probe | None = None) -> None:
    """Answer 503 with ``Retry-After`` on every route while a server is out of reach.
    ``probe`` raises while the database is out of reach: asked only after an error no handler
    took, so that a driver's error of a shape not listed here is still the outage's."""

    # What no handler took (or a handler raised on): its chain, then the database, decide,
    # inside the middlewares added next (CORS), so that a browser reads the 503 too.
    app.add_middleware(AnswerInTime, probe=probe)
    for kind in DATABASE_GONE:
        app.add_exception_handler(kind, database_gone)
    app.add_exception_handler(asyncpg.InterfaceError, connection_closed)
    app.add_exception_handler(OSError, socket_gone)
