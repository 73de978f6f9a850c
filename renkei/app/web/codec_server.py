"""The codec server: decrypts payloads for an authorised operator, and no one else.

The Temporal Web UI and CLI call ``POST /codec/decode`` and ``/codec/encode`` with a JSON
``{"payloads": [...]}`` body (Temporal's remote codec protocol). A caller is authorised by an
operator's bearer token, sent either as ``Authorization: Bearer …`` (``temporal workflow show
--codec-endpoint … --codec-auth 'Bearer …'``) or, for the Web UI, as the cookie set by signing in
at ``/codec/login`` (the UI's "include cross-origin credentials" setting sends it). Tokens are
stored only as hashes and can be revoked. Every request, granted or refused, is logged with the
operator's name, the namespace, the number of payloads and the caller's address.

Each operator acts for one party (the hub's platform operators, or an org's own), and the server
decodes with that party's keys only: an operator reads what is sealed to its party (see
``renkei.kernel.channels``) and sees everything else as it is stored. The log names the party,
the channels asked for and how many payloads were opened.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Annotated, Any

import asyncpg
from fastapi import APIRouter, Form, HTTPException, Request, Security
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.security import HTTPAuthorizationCredentials
from google.protobuf import json_format
from temporalio.api.common.v1 import Payload, Payloads
from temporalio.converter import PayloadCodec

from renkei.app.web.contract import OPERATOR_COOKIE, OPERATOR_SESSION, OPERATOR_TOKEN, refusals
from renkei.contracts.names import HUB
from renkei.kernel.channels import CHANNEL, ChannelError
from renkei.kernel.codec import UNENCRYPTED, PayloadDecryptError
from renkei.kernel.tokens import new_token, token_hash

COOKIE = OPERATOR_COOKIE
TOKEN_PREFIX = "rko_"

# Temporal's remote codec protocol: payloads as protobuf JSON (metadata values and data base64;
# null, as in protobuf JSON, is the empty value).
PAYLOADS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "payloads": {
            "type": ["array", "null"],
            "items": {
                "type": "object",
                "properties": {
                    "metadata": {
                        "type": ["object", "null"],
                        "additionalProperties": {"type": "string", "format": "byte"},
                    },
                    "data": {"type": ["string", "null"], "format": "byte"},
                },
            },
        }
    },
}
PAYLOADS_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": PAYLOADS_SCHEMA}},
    }
}
# Who calls: an operator's token, or the cookie of the operator's sign-in.
Token = Annotated[HTTPAuthorizationCredentials | None, Security(OPERATOR_TOKEN)]
Cookie = Annotated[str | None, Security(OPERATOR_SESSION)]
CODEC_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The payloads, decoded or encoded, in the same order.",
        "content": {"application/json": {"schema": PAYLOADS_SCHEMA}},
    },
    **refusals(400, 401, 403, 422),
}


async def add_operator(
    pool: asyncpg.Pool, name: str, party: str = HUB, role: str | None = None
) -> str:
    """Create (or re-issue) ``party``'s operator ``name`` in ``role`` (a platform operator for
    the hub, an executor for an org, by default); the token is returned once and kept hashed.
    The operator reads only what is sealed to ``party``."""
    token, hashed = new_token(TOKEN_PREFIX)
    role = role or ("platform-operator" if party == HUB else "executor")
    await pool.execute(
        "INSERT INTO codec.operators (name, token_hash, party, role) VALUES ($1, $2, $3, $4)"
        " ON CONFLICT (name) DO UPDATE SET token_hash = excluded.token_hash,"
        " party = excluded.party, role = excluded.role, created_at = now(), revoked_at = NULL",
        name,
        hashed,
        party,
        role,
    )
    return token


async def revoke_operator(pool: asyncpg.Pool, name: str) -> bool:
    status = await pool.execute(
        "UPDATE codec.operators SET revoked_at = now() WHERE name = $1 AND revoked_at IS NULL",
        name,
    )
    return bool(status.endswith(" 1"))


async def operator_of(pool: asyncpg.Pool, token: str | None) -> str | None:
    found = await operator_and_party(pool, token)
    return found[0] if found else None


async def operator_and_party(pool: asyncpg.Pool, token: str | None) -> tuple[str, str] | None:
    """(operator, the party it acts for), for a current token."""
    if not token:
        return None
    row = await pool.fetchrow(
        "SELECT name, party FROM codec.operators WHERE token_hash = $1 AND revoked_at IS NULL",
        token_hash(token),
    )
    return (row["name"], row["party"]) if row else None


def router(pool: asyncpg.Pool, codec_for: Callable[[str], PayloadCodec | None]) -> APIRouter:
    """The codec routes; ``codec_for(party)`` is that party's codec, or ``None`` where this
    server does not hold the party's keys (a party's own codec server holds only its own)."""
    r = APIRouter(prefix="/codec")

    async def _log(
        request: Request,
        operator: tuple[str, str] | None,
        action: str,
        payloads: Sequence[Payload],
        granted: bool,
        opened: int = 0,
    ) -> None:
        channels = sorted(
            {
                p.metadata[CHANNEL].decode(errors="replace")[:200]
                for p in payloads
                if CHANNEL in p.metadata
            }
        )
        await pool.execute(
            "INSERT INTO codec.requests"
            " (operator, action, namespace, payloads, granted, client_addr, user_agent,"
            " party, channels, opened)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            operator[0] if operator else None,
            action,
            request.headers.get("x-namespace"),
            len(payloads),
            granted,
            request.client.host if request.client else None,
            request.headers.get("user-agent", "")[:200],
            operator[1] if operator else None,
            channels,
            opened,
        )

    async def _handle(request: Request, action: str, credential: str | None) -> Response:
        try:
            body = json.loads(await request.body())  # a ValueError if not JSON (or not text)
            if not isinstance(body, dict):
                raise ValueError("not an object")
            payloads = json_format.ParseDict(body, Payloads())
        except (ValueError, json_format.ParseError):
            raise HTTPException(400, 'the body must be {"payloads": [...]}') from None
        operator = await operator_and_party(pool, credential)
        codec = codec_for(operator[1]) if operator else None
        if operator is None or codec is None:
            await _log(request, operator, action, payloads.payloads, False)
            if operator is None:
                raise HTTPException(401, "an operator token is required")
            raise HTTPException(403, f"this codec server does not hold {operator[1]}'s keys")
        try:
            if action == "decode":
                decoded = await codec.decode(payloads.payloads)
                # What is not sealed to the operator's party is shown as it is stored.
                out = [
                    sent if got.metadata.get("encoding") == UNENCRYPTED else got
                    for sent, got in zip(payloads.payloads, decoded, strict=True)
                ]
                opened = sum(a is not b for a, b in zip(out, payloads.payloads, strict=True))
            else:
                out, opened = await codec.encode(payloads.payloads), 0
        except (PayloadDecryptError, ChannelError) as err:
            await _log(request, operator, action, payloads.payloads, False)
            raise HTTPException(422, str(err)) from None
        await _log(request, operator, action, payloads.payloads, True, opened)
        return JSONResponse(
            json_format.MessageToDict(
                Payloads(payloads=out), always_print_fields_with_no_presence=True
            )
        )

    def credential(token: HTTPAuthorizationCredentials | None, cookie: str | None) -> str | None:
        return token.credentials if token is not None else cookie

    @r.post("/decode", openapi_extra=PAYLOADS_BODY, responses=CODEC_RESPONSES, tags=["codec"])
    async def decode(request: Request, token: Token, cookie: Cookie) -> Response:
        """Decrypt payloads for a signed-in operator (the request is logged)."""
        return await _handle(request, "decode", credential(token, cookie))

    @r.post("/encode", openapi_extra=PAYLOADS_BODY, responses=CODEC_RESPONSES, tags=["codec"])
    async def encode(request: Request, token: Token, cookie: Cookie) -> Response:
        """Encrypt payloads for a signed-in operator (the request is logged)."""
        return await _handle(request, "encode", credential(token, cookie))

    @r.get("/login", response_class=HTMLResponse, include_in_schema=False)
    async def login_form(request: Request) -> Response:
        who = await operator_of(pool, request.cookies.get(COOKIE))
        return HTMLResponse(_login_page(who))

    @r.post("/login", include_in_schema=False)
    async def login(token: str = Form(...)) -> Response:
        who = await operator_of(pool, token.strip())
        if who is None:
            return HTMLResponse(_login_page(None, "This token is not valid."), status_code=401)
        response = RedirectResponse("/codec/login", status_code=303)
        response.set_cookie(
            COOKIE, token.strip(), httponly=True, samesite="lax", path="/codec", max_age=8 * 3600
        )
        return response

    @r.post("/logout", include_in_schema=False)
    async def logout() -> Response:
        response = RedirectResponse("/codec/login", status_code=303)
        response.delete_cookie(COOKIE, path="/codec")
        return response

    return r


def _login_page(who: str | None, error: str | None = None) -> str:
    from html import escape

    if who:
        body = (
            f"<p>Signed in as <strong>{escape(who)}</strong> for eight hours.</p>"
            "<p>In the Temporal Web UI, open the codec server settings and turn on"
            " <em>Include cross-origin credentials</em>: payloads then show decrypted, and every"
            " decode is logged under your name.</p>"
            '<form method="post" action="/codec/logout"><button>Sign out</button></form>'
        )
    else:
        body = (
            (f'<p class="error">{escape(error)}</p>' if error else "")
            + '<form method="post" action="/codec/login">'
            '<label>Operator token <input name="token" type="password" autocomplete="off"'
            " required></label> <button>Sign in</button></form>"
        )
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<title>renkei codec server</title><link rel="stylesheet" href="/static/portal.css">'
        f"</head><body><main><h1>renkei codec server</h1>{body}</main></body></html>"
    )
