"""Sealing a value to one party: only the holder of that party's private sealing key opens it.

An ephemeral X25519 key agrees a secret with the recipient's public sealing key; HKDF-SHA256
turns it into an AES-256-GCM key, bound to a context string (what the value is, for which
attempt), so a sealed value cannot be moved to another purpose.

A sealer keeps its ephemeral key for one recipient key a short while (:data:`EPHEMERAL_FOR`
seconds, :data:`EPHEMERAL_USES` values), and an opener the secret it agreed with an ephemeral
key: two scalar multiplications of X25519 a value saved, most of what sealing cost. Nothing is
weaker for it: every value still has a key of its own (its context goes into HKDF) and a random
nonce; whoever reads the sealer's memory could open what it sealed with that ephemeral key, but
the only sealer, the hub, derives the codes it seals in the first place; whoever reads the
opener's memory holds its private key too. The payload codec's shared ring
protects what Temporal stores from outsiders; sealing protects one party's secret from every
other party that holds that ring (another agency's worker, the platform's operators).
"""

from __future__ import annotations

import base64
import hashlib
import os
import threading
import time

from cachetools import LRUCache
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from pydantic import BaseModel, ConfigDict

_NONCE = 12

EPHEMERAL_FOR = 60.0  # seconds a sealer keeps one ephemeral key for one recipient key
EPHEMERAL_USES = 4096  # values a sealer seals with one ephemeral key at most
_KEPT = 4096  # recipient keys (sealer), agreed secrets (opener) kept at most


class SealError(ValueError):
    """A sealed value that does not open: another recipient, another context, or tampered."""


class Sealed(BaseModel):
    """A value sealed to one recipient key (all fields base64)."""

    model_config = ConfigDict(frozen=True)

    recipient: str  # the key id of the recipient's public sealing key
    ephemeral: str
    ciphertext: str


def public_bytes(key: X25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def _key(shared: bytes, context: str) -> bytes:
    return HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=b"renkei/seal/v1|" + context.encode()
    ).derive(shared)


class _Ephemeral:
    """An ephemeral key's public half (base64) and the secret it agreed with one recipient."""

    __slots__ = ("born", "public", "shared", "uses")

    def __init__(self, recipient: X25519PublicKey) -> None:
        eph = X25519PrivateKey.generate()
        self.public = base64.b64encode(public_bytes(eph.public_key())).decode()
        self.shared = eph.exchange(recipient)
        self.uses = 0
        self.born = time.monotonic()


_EPHEMERALS: LRUCache[bytes, _Ephemeral] = LRUCache(_KEPT)
_AGREED: LRUCache[bytes, bytes] = LRUCache(_KEPT)
_LOCK = threading.Lock()


def _ephemeral(recipient: X25519PublicKey) -> tuple[str, bytes]:
    """The ephemeral key to seal to ``recipient`` with now, and the secret it agreed."""
    raw = public_bytes(recipient)
    with _LOCK:
        kept = _EPHEMERALS.get(raw)
        if (
            kept is None
            or kept.uses >= EPHEMERAL_USES
            or time.monotonic() - kept.born >= EPHEMERAL_FOR
        ):
            kept = _EPHEMERALS[raw] = _Ephemeral(recipient)
        kept.uses += 1
        return kept.public, kept.shared


def _agreed(private: X25519PrivateKey, ephemeral: bytes) -> bytes:
    """The secret ``private`` agrees with the ephemeral key ``ephemeral`` (raw), remembered."""
    seen = hashlib.sha256(private.private_bytes_raw() + ephemeral).digest()
    with _LOCK:
        shared = _AGREED.get(seen)
        if shared is not None:
            return shared
    shared = private.exchange(X25519PublicKey.from_public_bytes(ephemeral))
    with _LOCK:
        _AGREED[seen] = shared
    return shared


def seal(recipient: X25519PublicKey, recipient_id: str, data: bytes, context: str) -> Sealed:
    """``data`` sealed to ``recipient`` for ``context``."""
    ephemeral, shared = _ephemeral(recipient)
    nonce = os.urandom(_NONCE)
    sealed = AESGCM(_key(shared, context)).encrypt(nonce, data, context.encode())
    return Sealed(
        recipient=recipient_id,
        ephemeral=ephemeral,
        ciphertext=base64.b64encode(nonce + sealed).decode(),
    )


def open_sealed(private: X25519PrivateKey, sealed: Sealed, context: str) -> bytes:
    """The data of ``sealed``, or :class:`SealError`."""
    try:
        shared = _agreed(private, base64.b64decode(sealed.ephemeral))
        blob = base64.b64decode(sealed.ciphertext)
        key = _key(shared, context)
        return AESGCM(key).decrypt(blob[:_NONCE], blob[_NONCE:], context.encode())
    except (InvalidTag, ValueError) as err:
        raise SealError("the sealed value does not open with this key for this purpose") from err
