"""Each party's keys, in a file of its own.

**The hub's file** (``RENKEI_KEYS_FILE``, by default ``<data dir>/keys.json``, mode 0600) holds
the subject-code secret, the payload key ring, the hub's signing key (permits, checkpoints) and
its sealing key. It is created with fresh random keys the first time the hub needs it, and only
the hub's processes (the control worker, the platform's tools) read it. ``RENKEI_HUB_KEY``
overrides the subject-code secret (e.g. from a secret manager). Rotation of the payload key ring
adds a key and makes it the active one; older keys stay to decrypt what they encrypted.

**An org's file** (``<keys dir>/<org>.json``, issued by ``renkei keys issue ORG``) holds that
org's own signing and sealing keys, the payload key ring every participant's worker needs to
read Temporal's payloads at all, and the hub's *public* signing key, pinned at issuance: the
org's gate checks every permit against it. It holds no subject-code secret, so an agency's key
file cannot derive any code, not even its own.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import functools
import hashlib
import json
import os
import secrets
import threading
from pathlib import Path

import asyncpg
from cachetools import LRUCache
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)
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


def key_id(public: bytes) -> str:
    """A public key's id: the first 16 hex digits of its SHA-256."""
    return hashlib.sha256(public).hexdigest()[:16]


def public_raw(key: Ed25519PublicKey | X25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


# Public keys read from their base64, once per process each: a linkage checks and seals with
# the same few parties' keys over and over. Keys are immutable values, so a cached one is the
# key itself; a malformed one raises (ValueError) every time, as it is not cached.
_PARSED = 4096


@functools.lru_cache(maxsize=_PARSED)
def signing_public(b64: str) -> Ed25519PublicKey:
    """The Ed25519 public key of ``b64``."""
    return Ed25519PublicKey.from_public_bytes(base64.b64decode(b64))


@functools.lru_cache(maxsize=_PARSED)
def sealing_public(b64: str) -> X25519PublicKey:
    """The X25519 public key of ``b64``."""
    return X25519PublicKey.from_public_bytes(base64.b64decode(b64))


@functools.lru_cache(maxsize=_PARSED)
def key_id_of(b64: str) -> str:
    """:func:`key_id` of the public key ``b64``."""
    return key_id(base64.b64decode(b64))


def signature_holds(public: Ed25519PublicKey, signature: str, message: bytes) -> bool:
    """Whether ``signature`` (base64) is ``public``'s over ``message``. Remembered, for a
    bounded number of them: the registry's entries and the hub's revocations are checked again
    at every read of the registry (every party's, at each batch of receipts the hub collects),
    and whether a signature holds over a message for a key never changes. What is remembered
    is a digest of the key, the signature and the message: rows anyone with the
    application's role may add to the registry's tables, however long, cost a bounded memory."""
    raw = public_raw(public)
    seen = _seen(raw, signature, message)
    with _HOLDS_LOCK:
        if seen in _SIGNED:
            return True
        known = _HOLDS.get(seen)
        if known is not None:
            return known
    try:
        Ed25519PublicKey.from_public_bytes(raw).verify(base64.b64decode(signature), message)
        holds = True
    except (InvalidSignature, ValueError):
        holds = False
    _remember(seen, holds)
    return holds


def signed_here(public: Ed25519PublicKey, signature: str, message: bytes) -> None:
    """Remember that ``signature`` is ``public``'s over ``message``: this process has just made
    it (a party checking its own signatures again, as the hub its permits in the receipts it
    collects, is then spared the check)."""
    seen = _seen(public_raw(public), signature, message)
    with _HOLDS_LOCK:  # apart from the checks remembered: many permits push none of them out
        _SIGNED[seen] = None


def _seen(raw: bytes, signature: str, message: bytes) -> bytes:
    sig = signature.encode("utf-8", "surrogatepass")  # any text: no error before the check
    return hashlib.sha256(b"%d|%s|%d|%s" % (len(raw), raw, len(sig), sig) + message).digest()


def _remember(seen: bytes, holds: bool) -> None:
    with _HOLDS_LOCK:
        _HOLDS[seen] = holds


_HOLDS: LRUCache[bytes, bool] = LRUCache(_PARSED * 4)
_SIGNED: LRUCache[bytes, None] = LRUCache(_PARSED * 4)  # made by this process (signed_here)
_HOLDS_LOCK = threading.Lock()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class _Party(BaseModel):
    signing_key: str = Field(description="base64 of the party's Ed25519 signing key")
    sealing_key: str = Field(
        default_factory=lambda: _b64(_x25519_bytes()),
        description="base64 of the party's X25519 key: values sealed to the party open with it",
    )
    former_sealing_keys: list[str] = Field(
        default_factory=list,
        description="base64 of the party's earlier X25519 keys (rotated): what was written to"
        " them still opens",
    )

    def signer(self) -> Ed25519PrivateKey:
        return Ed25519PrivateKey.from_private_bytes(base64.b64decode(self.signing_key))

    def opener(self) -> X25519PrivateKey:
        return X25519PrivateKey.from_private_bytes(base64.b64decode(self.sealing_key))

    def openers(self) -> list[X25519PrivateKey]:
        """The current sealing key first, then the former ones."""
        return [self.opener()] + [
            X25519PrivateKey.from_private_bytes(base64.b64decode(k))
            for k in self.former_sealing_keys
        ]

    def public(self, party: str) -> PublicKeys:
        return PublicKeys(
            party=party,
            signing=_b64(public_raw(self.signer().public_key())),
            sealing=_b64(public_raw(self.opener().public_key())),
        )


class Keys(_Party):
    """The hub's keys."""

    hub_key: str
    codec: KeyRing


class OrgKeys(_Party):
    """One org's keys: its own, the hub's public key pinned, and (an org that joined before
    channels) the shared payload ring of runs from before."""

    org: str
    codec: KeyRing | None = Field(
        default=None, description="the legacy payload ring; absent for an org that made its keys"
    )
    hub_signing: str = Field(description="base64 of the hub's public Ed25519 key")

    def hub_verifier(self) -> Ed25519PublicKey:
        return signing_public(self.hub_signing)

    @property
    def hub_key_id(self) -> str:
        return key_id_of(self.hub_signing)


class PublicKeys(BaseModel):
    """A party's public keys, as the registry publishes them (base64)."""

    party: str
    signing: str
    sealing: str

    @property
    def signing_id(self) -> str:
        return key_id_of(self.signing)

    @property
    def sealing_id(self) -> str:
        return key_id_of(self.sealing)

    def verifier(self) -> Ed25519PublicKey:
        return signing_public(self.signing)

    def sealer(self) -> X25519PublicKey:
        return sealing_public(self.sealing)


def _x25519_bytes() -> bytes:
    return X25519PrivateKey.generate().private_bytes(
        Encoding.Raw, PrivateFormat.Raw, NoEncryption()
    )


def _fresh_key() -> str:
    return base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode()


def new_keys() -> Keys:
    first = KeyRing(active="k1", keys={"k1": _fresh_key()})
    return Keys(hub_key=secrets.token_urlsafe(32), codec=first, signing_key=_fresh_key())


def keys_path(settings: Settings) -> Path:
    return settings.keys_file or settings.data_dir / "keys.json"


def save(path: Path, keys: BaseModel) -> None:
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
        text = path.read_text()
        keys = Keys.model_validate_json(text)
        if "sealing_key" not in json.loads(text):  # a file from before sealing: keep the key
            # A read-only mount (a container secret) keeps its file: nothing is sealed to the
            # hub yet, so a sealing key of this process's own does no harm there.
            with contextlib.suppress(OSError):
                save(path, keys)
                stamp = (path.resolve(), path.stat().st_mtime)
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


# -- the orgs' key files --------------------------------------------------------------------


def org_keys_path(settings: Settings, org: str) -> Path:
    """``<keys dir>/<org>.json``; the keys dir defaults to ``keys/`` beside the hub's file."""
    folder = settings.keys_dir or keys_path(settings).parent / "keys"
    return folder / f"{org}.json"


def issue(settings: Settings, org: str) -> OrgKeys:
    """``org``'s key file: fresh keys, the current payload ring, the hub's public key pinned.

    Issued once; a later call returns the file as it is (``renkei keys issue --rotate`` is the
    way to replace an org's keys, revoking the old ones in the registry).
    """
    path = org_keys_path(settings, org)
    hub = load(settings)
    if path.exists():
        found = load_org(settings, org)
        if found.hub_signing != _b64(public_raw(hub.signer().public_key())):
            raise KeyMismatch(
                f"{path} pins another hub's key: it was issued by another installation"
            )
        return found
    keys = OrgKeys(
        org=org,
        signing_key=_fresh_key(),
        codec=hub.codec,
        hub_signing=_b64(public_raw(hub.signer().public_key())),
    )
    save(path, keys)
    return keys


def load_org(settings: Settings, org: str) -> OrgKeys:
    """``org``'s own keys, read from its key file only (never the hub's)."""
    path = org_keys_path(settings, org)
    if not path.exists():
        raise FileNotFoundError(
            f"no key file for {org} at {path}: the platform issues it (renkei keys issue {org})"
        )
    return OrgKeys.model_validate_json(path.read_text())


def request(org: str, hub: PublicKeys) -> OrgKeys:
    """``org``'s own keys, made on the org's side: nothing of them is ever on the hub's.

    The org keeps the file; it sends only ``public(org)`` (its public keys) for the hub to
    sign into the registry (``renkei keys register``). ``hub`` is the hub's public keys, as the
    platform publishes them (``renkei keys hub-public``): the signing key is pinned.
    """
    return OrgKeys(org=org, signing_key=_fresh_key(), hub_signing=hub.signing)
