"""Bearer tokens on HTTP: the one place that reads ``Authorization: Bearer …``.

Agencies (the API) and operators (the codec server) present tokens issued once and kept only as
their SHA-256 (:mod:`renkei.kernel.tokens`); a browser signed in to the codec server presents the
same token as a cookie instead.
"""

from __future__ import annotations

from fastapi import Request


def bearer(request: Request, cookie: str | None = None) -> str | None:
    """The bearer token of ``request``, else the value of ``cookie`` if named, else None."""
    auth = request.headers.get("authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip() or None
    return request.cookies.get(cookie) if cookie else None
