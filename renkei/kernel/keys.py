"""The hub's secrets: the subject-code key, the payload key ring, the record-signing key.

They live in one JSON file (``RENKEI_KEYS_FILE``, by default ``<data dir>/keys.json``, mode 0600)
created with fresh random keys the first time any renkei process needs them. ``RENKEI_HUB_KEY``
overrides the subject-code key (e.g. from a secret manager). Rotation of the payload key ring adds
a key and makes it the active one; older keys stay to decrypt what they encrypted.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import os
import secrets
from pathlib import Path

import asyncpg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from pydantic import BaseModel, Field

from renkei.kernel.settings import Settings

KEY_BYTES = 32  # AES-256


class KeyRing(BaseModel):
    """Payload encryption keys by id; ``active`` encrypts, every key decrypts."""

    active: str
    keys: dict[str, str] = Field(description="key id -> base64 of 32 random bytes")

    def key(self, key_id: str) -> bytes:
        return base64.b64decode(self.keys[key_id])

    def rotated(self) -> KeyRing:
        """This ring with a new active key."""
        new_id = f"k{dt.datetime.now(dt.UTC):%Y%m%d%H%M%S}-{secrets.token_hex(2)}"
        return KeyRing(active=new_id, keys={**self.keys, new_id: _fresh_key()})


class Keys(BaseModel):
    hub_key: str
    codec: KeyRing
    signing_key: str = Field(description="base64 of the Ed25519 key signing record checkpoints")

    def signer(self) -> Ed25519PrivateKey:
        return Ed25519PrivateKey.from_private_bytes(base64.b64decode(self.signing_key))


def _fresh_key() -> str:
    return base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode()


def new_keys() -> Keys:
    first = KeyRing(active="k1", keys={"k1": _fresh_key()})
    return Keys(hub_key=secrets.token_urlsafe(32), codec=first, signing_key=_fresh_key())


def keys_path(settings: Settings) -> Path:
    return settings.keys_file or settings.data_dir / "keys.json"


def save(path: Path, keys: Keys) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(keys.model_dump_json(indent=2))
    tmp.replace(path)


_loaded: dict[tuple[Path, float], Keys] = {}


def load(settings: Settings) -> Keys:
    """The keys of this installation, created on first use."""
    path = keys_path(settings)
    if not path.exists():
        save(path, new_keys())
    stamp = (path.resolve(), path.stat().st_mtime)
    keys = _loaded.get(stamp)
    if keys is None:
        keys = Keys.model_validate_json(path.read_text())
        _loaded[stamp] = keys
    if settings.hub_key:
        keys = keys.model_copy(update={"hub_key": settings.hub_key})
    return keys


def rotate_codec_key(settings: Settings) -> KeyRing:
    """Add a new active payload key; return the new ring."""
    path = keys_path(settings)
    load(settings)  # creates the file if this is the first use
    stored = Keys.model_validate_json(path.read_text())
    ring = stored.codec.rotated()
    save(path, stored.model_copy(update={"codec": ring}))
    return ring


class KeyMismatch(RuntimeError):
    """This process holds other keys than the ones the database was first used with."""


def fingerprints(keys: Keys) -> dict[str, str]:
    """Public fingerprints of the keys that must never change under a database."""
    hub = hashlib.sha256(b"renkei/fingerprint/" + keys.hub_key.encode()).hexdigest()[:32]
    public = keys.signer().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return {"hub_key": hub, "signing_key": hashlib.sha256(public).hexdigest()[:32]}


async def check_against(pool: asyncpg.Pool, keys: Keys, where: str) -> None:
    """Remember the keys' fingerprints on first use; refuse other keys afterwards."""
    for name, fingerprint in fingerprints(keys).items():
        await pool.execute(
            "INSERT INTO hub.key_fingerprints (name, fingerprint) VALUES ($1, $2)"
            " ON CONFLICT (name) DO NOTHING",
            name,
            fingerprint,
        )
        stored = await pool.fetchval(
            "SELECT fingerprint FROM hub.key_fingerprints WHERE name = $1", name
        )
        if stored != fingerprint:
            raise KeyMismatch(
                f"the {name} in {where} is not the one this database was first used with;"
                " point RENKEI_KEYS_FILE (or RENKEI_DATA_DIR) at the installation's keys"
            )
