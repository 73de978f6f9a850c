"""The app's 503s while a server is out of reach (renkei.app.web.unavailable), on a small app
of its own: a route that hangs, one whose database connection is gone, one that answers slowly
once it has begun, a route's own 503."""

from __future__ import annotations

import asyncio

import asyncpg
import httpx
import pytest
from fastapi import FastAPI, HTTPException
from fastapi.responses import StreamingResponse
from temporalio.service import RPCError, RPCStatusCode

from renkei.app.web.unavailable import (
    RETRY_AFTER,
    AnswerInTime,
    install,
    pool_probe,
    probe_fails,
)

DEADLINE = 0.5


def _app(cancelled: asyncio.Event, database: dict[str, bool] | None = None) -> FastAPI:
    app = FastAPI()
    state = database if database is not None else {"up": True}

    async def probe() -> None:
        if not state["up"]:
            raise ConnectionRefusedError(111, "Connection refused")

    install(app, probe)
    # The deadline of this test, not the app's 30 s: the middleware installed last is outermost.
    app.user_middleware = [m for m in app.user_middleware if m.cls is not AnswerInTime]
    app.add_middleware(AnswerInTime, deadline=DEADLINE, probe=probe)

    @app.get("/hangs")
    async def hangs() -> dict[str, str]:
        try:
            await asyncio.Event().wait()  # a server that neither answers nor refuses
        finally:
            cancelled.set()
        return {}

    @app.get("/refused")
    async def refused() -> dict[str, str]:
        raise ConnectionRefusedError(111, "Connection refused")

    @app.get("/lost")
    async def lost() -> dict[str, str]:
        raise asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed")

    @app.get("/closed")
    async def closed() -> dict[str, str]:
        raise asyncpg.InterfaceError("cannot perform operation: connection is closed")

    @app.get("/bug")
    async def bug() -> dict[str, str]:
        raise asyncpg.InterfaceError("cannot perform operation: another operation is in progress")

    @app.get("/file")
    async def file() -> dict[str, str]:
        raise FileNotFoundError(2, "No such file", "templates/x.html")

    @app.get("/wrapped")
    async def wrapped() -> dict[str, str]:
        try:
            raise ConnectionRefusedError(111, "Connection refused")
        except ConnectionRefusedError as err:  # a library's own error, raised from the outage
            raise RuntimeError("the key registry could not be read") from err

    @app.get("/grouped")
    async def grouped() -> dict[str, str]:
        raise ExceptionGroup("lanes", [ValueError("x"), asyncpg.CrashShutdownError("crash")])

    @app.get("/unlisted")
    async def unlisted() -> dict[str, str]:  # a driver's error of a shape not listed
        raise asyncpg.exceptions.InternalClientError("cannot switch to state 15")

    @app.get("/no-worker")
    async def no_worker() -> dict[str, str]:  # a query while the flow's workers are not back
        raise RPCError(
            "no poller seen for task queue recently, worker may be down",
            RPCStatusCode.FAILED_PRECONDITION,
            b"",
        )

    @app.get("/precondition")
    async def precondition() -> dict[str, str]:
        raise RPCError("some other precondition", RPCStatusCode.FAILED_PRECONDITION, b"")

    @app.get("/own-503")
    async def own() -> dict[str, str]:
        raise HTTPException(503, "Temporal refused the start: UNAVAILABLE")

    @app.get("/slow-stream")
    async def slow_stream() -> StreamingResponse:
        async def parts():  # type: ignore[no-untyped-def]
            yield b"begun "
            await asyncio.sleep(DEADLINE * 3)
            yield b"and finished"

        return StreamingResponse(parts())

    return app


@pytest.fixture
def cancelled() -> asyncio.Event:
    return asyncio.Event()


@pytest.fixture
def database() -> dict[str, bool]:
    """Whether the test's database answers the app's probe."""
    return {"up": True}


@pytest.fixture
async def http(cancelled: asyncio.Event, database: dict[str, bool]) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=_app(cancelled, database), raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://renkei")


def _is_a_503(answer: httpx.Response, reason: str = "send the request again") -> None:
    assert answer.status_code == 503, answer.text
    assert answer.headers["Retry-After"] == str(RETRY_AFTER)
    assert reason in answer.json()["detail"]


async def test_a_request_with_no_answer_by_the_deadline_is_a_503_and_the_route_stops(
    http: httpx.AsyncClient, cancelled: asyncio.Event
) -> None:
    async with asyncio.timeout(DEADLINE * 20):  # a liveness bound: an answer, not a hang
        _is_a_503(await http.get("/hangs"))
    assert cancelled.is_set()


@pytest.mark.parametrize("path", ["/refused", "/lost", "/closed", "/wrapped", "/grouped"])
async def test_a_database_out_of_reach_is_a_503(http: httpx.AsyncClient, path: str) -> None:
    _is_a_503(await http.get(path))


async def test_a_query_no_worker_can_answer_yet_is_a_503(http: httpx.AsyncClient) -> None:
    """After Temporal restarts, a query fails until the flow's workers poll again: that worker
    is out of reach for now (503, send again), not the caller's fault nor a server error."""
    _is_a_503(await http.get("/no-worker"))


@pytest.mark.parametrize("path", ["/bug", "/file", "/unlisted", "/precondition"])
async def test_other_errors_stay_server_errors(http: httpx.AsyncClient, path: str) -> None:
    assert (await http.get(path)).status_code == 500


@pytest.mark.parametrize("path", ["/bug", "/file", "/unlisted"])
async def test_any_error_while_the_database_is_out_of_reach_is_a_503(
    http: httpx.AsyncClient, database: dict[str, bool], path: str
) -> None:
    """An error no handler takes, of a shape not listed (a driver's state error as a connection
    breaks under a query), while the database does not answer: the outage's, not a bug's."""
    database["up"] = False
    _is_a_503(await http.get(path))


async def test_a_routes_own_503_says_when_to_try_again(http: httpx.AsyncClient) -> None:
    _is_a_503(await http.get("/own-503"), "Temporal refused the start")


async def test_an_answer_once_begun_is_sent_to_its_end(http: httpx.AsyncClient) -> None:
    answer = await http.get("/slow-stream")
    assert answer.status_code == 200 and answer.text == "begun and finished"


class _Pool:
    """A pool as the app's probe sees it: every connection taken, or the database gone."""

    def __init__(self, taken: bool) -> None:
        self.taken = taken

    async def acquire(self, *, timeout: float) -> object:  # noqa: ASYNC109 (asyncpg's)
        if self.taken:
            raise TimeoutError
        raise ConnectionRefusedError(111, "Connection refused")


async def test_a_pool_with_every_connection_taken_is_not_the_database_out_of_reach() -> None:
    """The code holding every connection (a leak, a stuck query) while the database answers
    stays a server error, not a 503 that tells clients to try again and hides the bug."""
    assert not await probe_fails(pool_probe(_Pool(taken=True)))  # type: ignore[arg-type]
    assert await probe_fails(pool_probe(_Pool(taken=False)))  # type: ignore[arg-type]


async def test_the_outages_503_reaches_a_browser(database: dict[str, bool]) -> None:
    """The 503 decided after an error no handler took is answered inside CORS, as every other."""
    from fastapi.middleware.cors import CORSMiddleware

    app = _app(asyncio.Event(), database)
    app.add_middleware(CORSMiddleware, allow_origins=["https://ui.example"])
    database["up"] = False
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://renkei") as http:
        answer = await http.get("/unlisted", headers={"Origin": "https://ui.example"})
    _is_a_503(answer)
    assert answer.headers["access-control-allow-origin"] == "https://ui.example"
