"""renkei's HTTP app: the codec server for the Temporal UI and CLI, and the citizen's view.

``renkei up`` serves it (``RENKEI_WEB_PORT``, 8234 by default) next to the workers; tests run it
on a free port with :func:`serving`.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Callable, Generator
from pathlib import Path
from urllib.parse import unquote_plus

import asyncpg
import uvicorn
from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from temporalio.client import Client, WorkflowUpdateRPCTimeoutOrCancelledError
from temporalio.converter import PayloadCodec
from temporalio.service import RPCError, RPCStatusCode

from renkei.app.client import RenkeiClient
from renkei.app.web import api, codec_server, controls, operator, orgs, portal
from renkei.app.web.unavailable import TEMPORAL_GONE, pool_probe, unavailable
from renkei.app.web.unavailable import install as answer_503_while_unreachable
from renkei.kernel import keys
from renkei.kernel.pseudonyms import Pseudonyms
from renkei.kernel.settings import Settings
from whitelist.catalog import default_catalog
from whitelist.models import Catalog
from whitelist.store import LiveWhitelist

# C0 and C1 control characters, and DEL: never part of an id, a code or a filter.
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


class RefuseControlCharacters:
    """Answer 422 to a request whose path or query has a control character (``%00`` …), before
    any route sees it: no id, code or filter of renkei holds one, and PostgreSQL refuses NUL."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and (
            CONTROL.search(scope.get("path", ""))
            or CONTROL.search(
                unquote_plus(scope.get("query_string", b"").decode("utf-8", "replace"))
            )
        ):
            # In the shape of FastAPI's own validation errors, as the API document declares.
            refused = JSONResponse(
                {
                    "detail": [
                        {
                            "loc": ["path" if CONTROL.search(scope.get("path", "")) else "query"],
                            "msg": "a path or query parameter holds a control character",
                            "type": "value_error",
                        }
                    ]
                },
                422,
            )
            await refused(scope, receive, send)
            return
        await self.app(scope, receive, send)


# The largest request body a route reads. Every JSON body of the API and the portal is a few
# KiB at most (a start's inputs, an answer, a hold, a notice); the codec server's is a batch of
# payloads for the Temporal UI or CLI, each at most Temporal's own 2 MiB limit.
MAX_BODY = 256 * 1024
MAX_CODEC_BODY = 16 * 1024 * 1024


class RefuseLargeBodies:
    """Answer 413 to a request whose body is larger than its path takes, before any route or
    authentication reads it: by its ``Content-Length``, or, sent in chunks, as soon as what
    arrived passes the limit. The body is read here (never more than the limit) and handed on
    whole."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = MAX_CODEC_BODY if scope.get("path", "").startswith("/codec/") else MAX_BODY
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            await self._refuse(scope, receive, send, limit)
            return
        chunks: list[bytes] = []
        seen = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away: the app hears it
                await self.app(scope, _replaying([message], receive), send)
                return
            chunk = message.get("body", b"")
            seen += len(chunk)
            if seen > limit:
                await self._refuse(scope, receive, send, limit)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        whole: Message = {"type": "http.request", "body": b"".join(chunks), "more_body": False}
        await self.app(scope, _replaying([whole], receive), send)

    @staticmethod
    async def _refuse(scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        refused = JSONResponse(
            {"detail": f"the request's body is larger than this path takes ({limit} bytes)"},
            413,
            headers={"Connection": "close"},
        )
        await refused(scope, receive, send)


def _replaying(first: list[Message], receive: Receive) -> Receive:
    """``receive``, giving ``first`` before anything else (a body read ahead, whole)."""
    pending = list(first)

    async def replay() -> Message:
        return pending.pop(0) if pending else await receive()

    return replay


def create_app(
    settings: Settings,
    pool: asyncpg.Pool,
    client: Client | None = None,
    catalog: Catalog | None = None,
) -> FastAPI:
    """The app; ``catalog`` (the shipped one by default) is what starts are checked against: a
    live one (:meth:`whitelist.store.LiveWhitelist.bind`) knows the org registry's orgs."""
    catalog = catalog or default_catalog()
    k = keys.load(settings)
    app = FastAPI(
        title="renkei",
        description="Whitelist-gated information linkage: flows, codec, citizen records.",
        docs_url="/api/docs",
        redoc_url=None,
        openapi_url="/api/openapi.json",
    )
    # Innermost: a body read within the deadline the next one keeps (a body sent slowly is cut
    # off as a slow route is).
    app.add_middleware(RefuseLargeBodies)
    # then: the middlewares added next wrap its 503s
    answer_503_while_unreachable(app, pool_probe(pool))
    app.add_middleware(RefuseControlCharacters)
    app.add_middleware(
        CORSMiddleware,
        allow_origins=settings.ui_origins,
        allow_credentials=True,
        allow_methods=["POST", "GET"],
        allow_headers=["Content-Type", "X-Namespace", "Authorization", "Authorization-Extras"],
    )
    app.include_router(codec_server.router(pool, _codecs(settings)))
    app.include_router(controls.router(pool, default_catalog(), k.signer()))
    app.include_router(operator.router(pool))
    app.include_router(orgs.router(pool, settings))
    if client is not None:  # parties registered after this process started are found too
        from workers.plugin import attach_registry

        attach_registry(client, pool, settings)
    sdk = RenkeiClient(client, settings, catalog) if client is not None else None
    app.include_router(
        portal.router(
            pool,
            Pseudonyms(pool, k.hub_key),
            catalog,
            portal.Sessions(k.hub_key),
            sdk,
            k.signer(),  # the portal signs the citizen's own answers (renkei.kernel.attest)
        )
    )
    if sdk is not None:
        app.include_router(api.router(pool, sdk, catalog))

    app.add_exception_handler(RPCError, temporal_refused)
    app.add_exception_handler(WorkflowUpdateRPCTimeoutOrCancelledError, temporal_refused)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        """Liveness and readiness: the database answers."""
        await pool.fetchval("SELECT 1")
        return {"status": "ok"}

    app.mount("/static", StaticFiles(directory=Path(__file__).parent / "static"), name="static")
    return app


async def temporal_refused(request: Request, err: Exception) -> JSONResponse:
    """A Temporal error a route did not answer itself: no such run is a 404 (the answer for a
    flow of someone else's too), Temporal out of reach or too slow a 503; anything else stays a
    server error. The reason names no workflow and nothing of the request."""
    if isinstance(err, WorkflowUpdateRPCTimeoutOrCancelledError):
        return unavailable("the flow did not take the answer in time (is its worker running?)")
    if isinstance(err, RPCError) and err.status == RPCStatusCode.NOT_FOUND:
        return JSONResponse({"detail": "no such flow of yours"}, status_code=404)
    if isinstance(err, RPCError) and err.status in TEMPORAL_GONE:
        return unavailable(f"Temporal did not answer ({err.status.name}); send the request again")
    raise err


class _Server(uvicorn.Server):
    """A uvicorn server that leaves signal handling to its host process."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


@contextlib.asynccontextmanager
async def serving(
    settings: Settings,
    pool: asyncpg.Pool,
    client: Client | None = None,
    whitelist: LiveWhitelist | None = None,
) -> AsyncIterator[str]:
    """Serve the app on ``settings.web_port`` until the block exits; yields its base URL.

    With a Temporal ``client``, the agencies' flow API is served too; with a live ``whitelist``,
    starts are checked against the org registry as it is now (an org added since is known).
    """
    config = uvicorn.Config(
        create_app(
            settings, pool, client, whitelist.bind(default_catalog()) if whitelist else None
        ),
        host=settings.web_host,
        port=settings.web_port,
        log_level="warning",
        lifespan="off",
    )
    server = _Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()  # raises what stopped it (e.g. the port is taken)
            raise RuntimeError(f"the web app did not start on port {settings.web_port}")
        await asyncio.sleep(0.05)
    try:
        yield settings.web_base
    finally:
        server.should_exit = True
        await task


def _codecs(settings: Settings) -> Callable[[str], PayloadCodec | None]:
    """Each party's codec for its operators, for the parties whose keys this process holds."""
    from workers.plugin import channel_codec, own_parties

    held = set(own_parties(settings))
    made: dict[str, PayloadCodec] = {}

    def codec_for(party: str) -> PayloadCodec | None:
        if party not in held:
            return None
        if party not in made:
            made[party] = channel_codec(settings, [party], accept_plaintext=True)
        return made[party]

    return codec_for
