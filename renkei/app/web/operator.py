"""Operator pages: issued invoices (printable HTML and CSV) and usage per procedure and org.

Served under ``/codec/operator/`` (``invoices``, ``invoices/N``, ``invoices/N/csv``, ``usage``)
beside the codec server, for a signed-in operator only: the same bearer token or sign-in cookie
(``/codec/login``) the codec server takes. The platform's
operators (party ``hub``) see every invoice and the usage page; an org's operator sees only its
own org's invoices. Nothing personal is on either page.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated, Any

import asyncpg
from fastapi import APIRouter, HTTPException, Query
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape

from renkei.app import billing, usage
from renkei.app.web.codec_server import operator_and_party
from renkei.app.web.contract import refusals
from renkei.contracts.names import HUB
from whitelist.catalog import default_catalog
from whitelist.decide import JST

from .codec_server import Cookie, Token

_pages = Environment(
    loader=FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=select_autoescape(["html"]),
)


def invoice_html(invoice: billing.Invoice) -> str:
    """The printable page of an issued invoice."""
    return _pages.get_template("invoice.html").render(
        b=invoice.body,
        number=invoice.number,
        revision=invoice.revision,
        issued_at=invoice.issued_at.astimezone(JST).strftime("%Y-%m-%d %H:%M JST"),
        csv_href=f"/codec/operator/invoices/{invoice.number}/csv",
    )


def usage_html(report: usage.UsageReport, operator: str = "") -> str:
    return _pages.get_template("usage.html").render(r=report, operator=operator)


MonthQuery = Annotated[
    str | None, Query(pattern=r"^[0-9]{4}-(0[1-9]|1[0-2])$", description="YYYY-MM, Japan time")
]
Number = Annotated[int, PathParam(ge=1, le=2**63 - 1, description="the invoice number")]


def _html(description: str) -> dict[str, Any]:
    # The page's own media type; refusals stay JSON (a route's response class would make
    # FastAPI document them as HTML too).
    return {"description": description, "content": {"text/html": {"schema": {"type": "string"}}}}


def router(pool: asyncpg.Pool) -> APIRouter:
    r = APIRouter(prefix="/codec/operator", tags=["operator"])

    async def signed_in(token: Token, cookie: Cookie) -> tuple[str, str]:
        found = await operator_and_party(pool, token.credentials if token is not None else cookie)
        if found is None:
            raise HTTPException(401, "an operator token or sign-in is required (/codec/login)")
        return found

    async def invoice_for(number: int, token: Token, cookie: Cookie) -> billing.Invoice:
        _, party = await signed_in(token, cookie)
        found = await billing.get(pool, number)
        # An org's operator learns nothing of another org's invoices, not even that they exist.
        if found is None or (party != HUB and party != found.body.org):
            raise HTTPException(404, f"no invoice {number} of yours")
        return found

    @r.get(
        "/invoices",
        response_class=Response,
        responses={200: _html("Issued invoices, every revision."), **refusals(401, 422)},
    )
    async def invoice_list(token: Token, cookie: Cookie, month: MonthQuery = None) -> Response:
        """Issued invoices: every org's for the platform's operators, an org's own for its."""
        name, party = await signed_in(token, cookie)
        found = await billing.listing(pool, month, None if party == HUB else party)
        page = _pages.get_template("invoices.html").render(
            invoices=found, month=month, operator=name, party=party
        )
        return HTMLResponse(page)

    @r.get(
        "/invoices/{number}",
        response_class=Response,
        responses={200: _html("The invoice, printable."), **refusals(401, 404, 422)},
    )
    async def invoice_page(number: Number, token: Token, cookie: Cookie) -> Response:
        """An issued invoice as a printable page."""
        return HTMLResponse(invoice_html(await invoice_for(number, token, cookie)))

    @r.get(
        "/invoices/{number}/csv",
        response_class=Response,
        responses={
            200: {"description": "The invoice as CSV.", "content": {"text/csv": {}}},
            **refusals(401, 404, 422),
        },
    )
    async def invoice_csv(number: Number, token: Token, cookie: Cookie) -> Response:
        """An issued invoice as CSV."""
        found = await invoice_for(number, token, cookie)
        return Response(
            billing.to_csv(found.body, found.number, found.revision),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="invoice-{found.number}.csv"'},
        )

    @r.get(
        "/usage",
        response_class=Response,
        responses={200: _html("The month's usage."), **refusals(401, 403, 422)},
    )
    async def usage_page(
        token: Token,
        cookie: Cookie,
        month: MonthQuery = None,
        to: MonthQuery = None,
    ) -> Response:
        """Usage per month, procedure and requesting org, from ``month`` (default: this one)
        through ``to`` (default: that month alone), for the platform's operators."""
        name, party = await signed_in(token, cookie)
        if party != HUB:
            raise HTTPException(403, "usage across orgs is for the platform's operators")
        chosen = month or dt.datetime.now(JST).strftime("%Y-%m")
        try:
            found = await usage.report(pool, chosen, default_catalog().tasks, to)
        except ValueError as err:  # a month such as 2026-13
            raise HTTPException(422, str(err)) from None
        return HTMLResponse(usage_html(found, name))

    return r
