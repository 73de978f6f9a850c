"""Encrypted Temporal payloads: AES-256-GCM under a key ring, on top of the pydantic converter.

Every payload that leaves a renkei process (workflow and activity inputs and results, memo,
failure messages and stack traces, headers) is the serialised original payload, encrypted with
the ring's active key. The key id travels in clear in the payload metadata, so rotation is
painless: a new key encrypts, older keys still decrypt what they encrypted. Temporal, its
database and the Web UI see ciphertext only; the codec server (``renkei.app.web``) decrypts for an
authorised operator.

Use :func:`data_converter` on every client, worker and replayer, with
``header_codec_behavior=HeaderCodecBehavior.CODEC`` on the client (see ``renkei.app.client``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from temporalio.api.common.v1 import Payload
from temporalio.contrib.pydantic import PydanticPayloadConverter
from temporalio.converter import (
    DataConverter,
    DefaultFailureConverterWithEncodedAttributes,
    PayloadCodec,
)

from renkei.kernel.keys import KeyRing

ENCODING = b"binary/encrypted"
# What an unencrypted payload is replaced with when decoding (see EncryptionCodec.decrypt).
UNENCRYPTED = b"binary/renkei-unencrypted"
KEY_ID = "encryption-key-id"
_AAD = b"renkei/payload/v1"
_NONCE = 12


class PayloadDecryptError(Exception):
    """A payload could not be decrypted (unknown key id or tampered ciphertext)."""


class EncryptionCodec(PayloadCodec):
    """AES-256-GCM payload codec with key rotation.

    A payload that is not encrypted is not read when decoding: a worker acts on nothing a
    process without the ring wrote (a forged start, signal or linkage request from a plain
    client); it becomes a payload marked ``UNENCRYPTED`` that no converter reads. ``accept_plaintext`` lets them through: for the codec server, which only shows
    payloads (Temporal's own markers are not encrypted), and as an explicit migration switch
    (``RENKEI_ACCEPT_PLAINTEXT_PAYLOADS``) for histories written before encryption.
    """

    def __init__(self, ring: KeyRing, *, accept_plaintext: bool = False) -> None:
        self._accept_plaintext = accept_plaintext
        self._active = ring.active
        self._ciphers = {kid: AESGCM(ring.key(kid)) for kid in ring.keys}
        if self._active not in self._ciphers:
            raise ValueError(f"active key {self._active!r} is not in the key ring")

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self.encrypt(p) for p in payloads]

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self.decrypt(p) for p in payloads]

    def encrypt(self, payload: Payload) -> Payload:
        nonce = os.urandom(_NONCE)
        sealed = self._ciphers[self._active].encrypt(nonce, payload.SerializeToString(), _AAD)
        return Payload(
            metadata={"encoding": ENCODING, KEY_ID: self._active.encode()}, data=nonce + sealed
        )

    def decrypt(self, payload: Payload) -> Payload:
        if payload.metadata.get("encoding") != ENCODING:
            if self._accept_plaintext:
                return payload
            # Not read: replaced by a payload no converter reads, so only the message it came
            # in fails (a signal is dropped, an update refused, an activity refused) and not
            # the whole workflow task, which would retry for ever and freeze the flow.
            return Payload(metadata={"encoding": UNENCRYPTED})
        kid = payload.metadata.get(KEY_ID, b"").decode()
        cipher = self._ciphers.get(kid)
        if cipher is None:
            raise PayloadDecryptError(f"payload key {kid!r} is not in this key ring")
        try:
            clear = cipher.decrypt(payload.data[:_NONCE], payload.data[_NONCE:], _AAD)
        except InvalidTag:
            raise PayloadDecryptError(f"payload under key {kid!r} failed authentication") from None
        out = Payload()
        out.ParseFromString(clear)
        return out


def data_converter(ring: KeyRing, *, accept_plaintext: bool = False) -> DataConverter:
    """The data converter of every renkei client, worker and replayer."""
    return DataConverter(
        payload_converter_class=PydanticPayloadConverter,
        payload_codec=EncryptionCodec(ring, accept_plaintext=accept_plaintext),
        failure_converter_class=DefaultFailureConverterWithEncodedAttributes,
    )
