"""Sealing a value to one party: only the holder of that party's private sealing key opens it.

An ephemeral X25519 key agrees a secret with the recipient's public sealing key; HKDF-SHA256
turns it into an AES-256-GCM key, bound to a context string (what the value is, for which
attempt), so a sealed value cannot be moved to another purpose. The payload codec's shared ring
protects what Temporal stores from outsiders; sealing protects one party's secret from every
other party that holds that ring (another agency's worker, the platform's operators).
"""

from __future__ import annotations

import base64
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from pydantic import BaseModel, ConfigDict

_NONCE = 12


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


def seal(recipient: X25519PublicKey, recipient_id: str, data: bytes, context: str) -> Sealed:
    """``data`` sealed to ``recipient`` for ``context``."""
    eph = X25519PrivateKey.generate()
    key = _key(eph.exchange(recipient), context)
    nonce = os.urandom(_NONCE)
    sealed = AESGCM(key).encrypt(nonce, data, context.encode())
    return Sealed(
        recipient=recipient_id,
        ephemeral=base64.b64encode(public_bytes(eph.public_key())).decode(),
        ciphertext=base64.b64encode(nonce + sealed).decode(),
    )


def open_sealed(private: X25519PrivateKey, sealed: Sealed, context: str) -> bytes:
    """The data of ``sealed``, or :class:`SealError`."""
    try:
        eph = X25519PublicKey.from_public_bytes(base64.b64decode(sealed.ephemeral))
        blob = base64.b64decode(sealed.ciphertext)
        key = _key(private.exchange(eph), context)
        return AESGCM(key).decrypt(blob[:_NONCE], blob[_NONCE:], context.encode())
    except (InvalidTag, ValueError) as err:
        raise SealError("the sealed value does not open with this key for this purpose") from err
