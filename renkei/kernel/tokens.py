"""Bearer tokens (operators', agencies'): shown once, kept only as their SHA-256."""

from __future__ import annotations

import hashlib
import secrets


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token(prefix: str) -> tuple[str, str]:
    """A fresh token with a recognisable prefix, and the hash to store."""
    token = prefix + secrets.token_urlsafe(32)
    return token, token_hash(token)
