"""Permits: the hub's signed word that one linkage attempt is lawful.

The hub issues a permit for every attempt it allows, after deciding it against the whitelist.
The permit binds the attempt (workflow id, run id, step), the parties, the task, the info item,
the whitelist row, the pinned definition, the provider's sealed code for the subject, the fields
an act may send and an expiry, and is signed with the hub's Ed25519 key. The provider's gate
verifies it before anything else, against the hub's public key pinned in the provider's own key
file, and compares every bound field with what Temporal says about the activity: an unsigned,
forged, expired, replayed (another workflow, run or step) or altered request, or one sending
what its permit does not name, is refused and recorded as such.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import BaseModel, ConfigDict, Field

from renkei.kernel import keys
from renkei.kernel.sealing import Sealed


class PermitRefused(ValueError):
    """A request whose permit does not hold; the message says why (no personal data)."""


class Permit(BaseModel):
    """What the hub permits: one attempt of one linkage."""

    model_config = ConfigDict(frozen=True)

    workflow_id: str
    run_id: str
    step: str
    requester: str
    provider: str
    task: str
    info: str
    whitelist_row: str
    legal_reference: str
    bpf: str
    bpf_version: int
    content_hash: str
    subject_seal: str  # SHA-256 of the sealed subject code, binding it to this permit
    issued_at: dt.datetime
    expires_at: dt.datetime
    key_id: str  # the hub signing key's id
    # A contract probe's permit (renkei.contracts.probe): the gate admits it only in a probe run,
    # for a probe subject and an item the org serves, and records it apart from real exchanges.
    # Left out of the signed form when false, so a permit signed before it verifies unchanged.
    probe: bool = False
    # The ordinance-level task (主務省令で定める事務) the query names under ``task``, as the hub
    # took it from the registered definition: the provider's record keeps both levels too.
    # Left out of the signed form when none, as ``probe`` is.
    sub_task: str | None = None
    # Issued by a hub in test mode (the conformance kit's own, which runs drafts): a gate in
    # operation refuses it, so a kit's permit reaches the kit's stubs only, never a provider's
    # real data. Left out of the signed form when false, as ``probe`` is.
    kit: bool = False
    # An act's: the names of the fields it may send the partner, as the hub took them from the
    # registered definition's step (a contract probe's, from the probe). The partner's gate
    # refuses a request that sends any other; a permit naming none lets a request send nothing
    # (a query). Left out of the signed form when none, as ``probe`` is.
    fields: tuple[str, ...] | None = None


class SignedPermit(BaseModel):
    model_config = ConfigDict(frozen=True)

    permit: Permit
    signature: str


class AnswerReceipt(BaseModel):
    """The provider's receipt for one permitted attempt, as the flow forwards it to the hub:
    the permit it answered, the digest of its answer and its signature over both (the very
    signature the answer carries, see :func:`renkei.kernel.attest.signed_answer`). The hub
    checks it without the answer: it never sees content."""

    model_config = ConfigDict(frozen=True)

    permit: SignedPermit
    digest: str = Field(pattern=r"^[0-9a-f]{64}$")
    signature: str = Field(max_length=200)


def _canonical(permit: Permit) -> bytes:
    body = json.dumps(
        permit.model_dump(mode="json", exclude_defaults=True), sort_keys=True, separators=(",", ":")
    )
    return b"renkei/permit/v1|" + body.encode()


def seal_digest(sealed: Sealed | None) -> str:
    """The digest a permit binds: of the sealed subject code, or of nothing (a cohort query)."""
    if sealed is None:
        return "none"
    return hashlib.sha256(sealed.model_dump_json().encode()).hexdigest()


def sign(permit: Permit, key: Ed25519PrivateKey) -> SignedPermit:
    message = _canonical(permit)
    signature = base64.b64encode(key.sign(message)).decode()
    keys.signed_here(key.public_key(), signature, message)  # for the hub's :func:`is_hubs`
    return SignedPermit(permit=permit, signature=signature)


def verify(signed: SignedPermit | None, hub: Ed25519PublicKey, hub_key_id: str) -> Permit:
    """The permit, if the hub signed it with the key it names; else :class:`PermitRefused`."""
    if signed is None:
        raise PermitRefused("no permit: the hub did not broker this request")
    if signed.permit.key_id != hub_key_id:
        # the id as the request gives it, before any signature holds: cut short, and after the
        # colon, so the refusal's kind (the metric's label) is fixed
        raise PermitRefused(f"permit signed with an unknown key: {signed.permit.key_id[:24]!r}")
    try:
        hub.verify(base64.b64decode(signed.signature), _canonical(signed.permit))
    except (InvalidSignature, ValueError):
        raise PermitRefused("the permit's signature is not the hub's") from None
    return signed.permit


def is_hubs(signed: SignedPermit, hub: Ed25519PublicKey) -> bool:
    """Whether the hub signed ``signed`` (a permit it issued, whichever of its keys' ids it
    names): how the hub knows a receipt forwarded to it answers one of its own permits. The
    permits this process signed are remembered (:func:`renkei.kernel.keys.signed_here`): the
    hub's collector checks its own signature again only for a permit another of its processes
    issued."""
    return keys.signature_holds(hub, signed.signature, _canonical(signed.permit))
