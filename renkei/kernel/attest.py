"""Attestations: the platform's signed word for what only it may say.

Two claims in a flow's input are worth nothing unless the platform vouches for them:

* a response **by the citizen** (consent, a document): only the citizen's own portal session
  makes one, and the portal signs it; an agency, or any process that reaches Temporal, cannot;
* a start **by a life event or a change notification**: only the platform's scan and its
  notification path start such flows, and they sign the start.

The signature is the hub's Ed25519 key over a canonical message; the interpreter checks a
citizen's response against the hub key pinned in the run (deterministic, so it replays), the hub
checks a start's trigger when it resolves the run.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import uuid
from collections.abc import Mapping
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from renkei.kernel import keys


def _text(value: object) -> object:
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    return str(value) if isinstance(value, uuid.UUID) else value


def fields_message(kind: str, content: Mapping[str, object]) -> bytes:
    """The message the hub signs of a row's fields: ``renkei/<kind>|`` and the canonical JSON
    of ``content`` (keys sorted, times in UTC, dates and ids as text: the same bytes whether the
    values come from the code that writes the row or from the database that read it back)."""
    canonical = json.dumps(
        {k: _text(v) for k, v in content.items()},
        sort_keys=True,
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return f"renkei/{kind}|{canonical}".encode()


def _digest(payload: dict[str, Any]) -> str:
    body = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(body.encode()).hexdigest()


def _citizen(
    workflow_id: str, run_id: str, step: str, payload: dict[str, Any], person: str | None
) -> bytes:
    digest = _digest(payload)
    if person is None:  # the first form: bound to the run, not to the person
        return f"renkei/citizen-response/v2|{workflow_id}|{run_id}|{step}|{digest}".encode()
    return f"renkei/citizen-response/v3|{workflow_id}|{run_id}|{step}|{person}|{digest}".encode()


def _trigger(workflow_id: str, trigger: str, bpf: str, executor: str, subject: str) -> bytes:
    return f"renkei/trigger/v1|{workflow_id}|{trigger}|{bpf}|{executor}|{subject}".encode()


def sign(key: Ed25519PrivateKey, message: bytes) -> str:
    """``key``'s signature over ``message``, as base64 text."""
    return base64.b64encode(key.sign(message)).decode()


def holds(public: Ed25519PublicKey | str, signature: str | None, message: bytes) -> bool:
    """Whether ``signature`` (base64 text) is ``public``'s over ``message``; anything malformed
    does not hold."""
    if not signature:
        return False
    if isinstance(public, str):
        try:
            public = keys.signing_public(public)
        except ValueError:
            return False
    try:
        public.verify(base64.b64decode(signature), message)
    except (InvalidSignature, ValueError):
        return False
    return True


def citizen_response(
    key: Ed25519PrivateKey,
    workflow_id: str,
    run_id: str,
    step: str,
    payload: dict[str, Any],
    person: str,
) -> str:
    """The portal's signature on the citizen's own answer to ``step`` of this run of
    ``workflow_id``, given by ``person`` (their code at the flow's executor: the citizen signed
    in, as the portal found them to be the flow's person). Bound to the run, so it cannot be
    replayed into another, and to the person, so it is no one else's answer: a run that claims
    to be about someone else cannot use it."""
    return sign(key, _citizen(workflow_id, run_id, step, payload, person))


def is_citizens(
    hub: Ed25519PublicKey | str,
    signature: str | None,
    workflow_id: str,
    run_id: str,
    step: str,
    payload: dict[str, Any],
    person: str | None,
) -> bool:
    """Whether ``signature`` is the portal's on this answer by ``person`` (``None``: on the
    first form, from before answers named their person, bound to the run only)."""
    return holds(hub, signature, _citizen(workflow_id, run_id, step, payload, person))


def trigger_start(
    key: Ed25519PrivateKey, workflow_id: str, trigger: str, bpf: str, executor: str, subject: str
) -> str:
    """The platform's signature on a start it made for a life event or a notification."""
    return sign(key, _trigger(workflow_id, trigger, bpf, executor, subject))


def is_platform_start(
    hub: Ed25519PublicKey,
    signature: str | None,
    workflow_id: str,
    trigger: str,
    bpf: str,
    executor: str,
    subject: str,
) -> bool:
    return holds(hub, signature, _trigger(workflow_id, trigger, bpf, executor, subject))


def _scan(bpf: str, version: int | None, executor: str, age: int, on: str) -> bytes:
    return f"renkei/scan/v1|{bpf}|{version or ''}|{executor}|{age}|{on}".encode()


def scan_request(
    key: Ed25519PrivateKey, bpf: str, version: int | None, executor: str, age: int, on: str
) -> str:
    """The platform's signature on a life-event scan it schedules (or runs by hand)."""
    return sign(key, _scan(bpf, version, executor, age, on))


def is_platform_scan(
    hub: Ed25519PublicKey,
    signature: str | None,
    bpf: str,
    version: int | None,
    executor: str,
    age: int,
    on: str,
) -> bool:
    return holds(hub, signature, _scan(bpf, version, executor, age, on))


# -- a provider's answer ------------------------------------------------------------------------

ANSWER_KEYS = frozenset({"answer", "signature"})


def _receipt(permit_signature: str, digest: str) -> bytes:
    return f"renkei/answer/v1|{permit_signature}|{digest}".encode()


def _answer(permit_signature: str, payload: dict[str, Any]) -> bytes:
    return _receipt(permit_signature, _digest(payload))


def signed_answer(
    key: Ed25519PrivateKey, permit_signature: str, payload: dict[str, Any]
) -> dict[str, Any]:
    """The provider's answer to one permitted attempt, signed with its own key: bound to the
    permit (its signature names the attempt) and to the payload."""
    return {"answer": payload, "signature": sign(key, _answer(permit_signature, payload))}


def answer_digest(payload: dict[str, Any]) -> str:
    """The digest of an answer the provider's signature binds: what its receipt names of the
    answer (the hub checks the receipt against it, and never sees the answer)."""
    return _digest(payload)


def is_receipt(
    provider: Ed25519PublicKey | str, permit_signature: str, digest: str, signature: str
) -> bool:
    """Whether ``signature`` is the provider's (``provider``: its public key) over an answer of
    digest ``digest`` to the permit signed ``permit_signature``: the provider's receipt for
    that attempt. The provider's signature over its answer *is* the receipt (one signature)."""
    return holds(provider, signature, _receipt(permit_signature, digest))


def is_providers(
    provider: str, signed: dict[str, Any], permit_signature: str
) -> dict[str, Any] | None:
    """The payload of ``signed`` if the provider (its public key, base64) signed it for this
    permit; else None."""
    if set(signed) != ANSWER_KEYS or not isinstance(signed["answer"], dict):
        return None
    payload: dict[str, Any] = signed["answer"]
    return (
        payload
        if holds(provider, signed["signature"], _answer(permit_signature, payload))
        else None
    )


# -- a flow continuing as new -------------------------------------------------------------------


def _resume(workflow_id: str, resume_json: str, form: str) -> bytes:
    digest = hashlib.sha256(resume_json.encode()).hexdigest()
    return f"renkei/resume/{form}|{workflow_id}|{digest}".encode()


def resume_state(
    key: Ed25519PrivateKey, workflow_id: str, resume_json: str, *, text: bool = False
) -> str:
    """The hub's signature on the state a flow carries into its next run (continue-as-new):
    on the state as dumped (the first form), or (``text``) on the exact text the continuation
    carries."""
    return sign(key, _resume(workflow_id, resume_json, "v2" if text else "v1"))


def is_hubs_resume(
    hub: Ed25519PublicKey,
    signature: str | None,
    workflow_id: str,
    resume_json: str,
    *,
    text: bool = False,
) -> bool:
    return holds(hub, signature, _resume(workflow_id, resume_json, "v2" if text else "v1"))


# -- an org's certificate -------------------------------------------------------------------


def _certificate(org: str, served: list[str], report_hash: str) -> bytes:
    return f"renkei/org-certificate/v1|{org}|{','.join(sorted(served))}|{report_hash}".encode()


def org_certificate(key: Ed25519PrivateKey, org: str, served: list[str], report_hash: str) -> str:
    """The conformance body's signature certifying that ``org``'s providers of ``served``
    passed the contract test whose report hashes to ``report_hash``."""
    return sign(key, _certificate(org, served, report_hash))


def is_org_certificate(
    body: Ed25519PublicKey | str, signature: str, org: str, served: list[str], report_hash: str
) -> bool:
    return holds(body, signature, _certificate(org, served, report_hash))


# -- a BPF version's approval -------------------------------------------------------------------


def _approval(bpf: str, version: int, content_hash: str, report_hash: str) -> bytes:
    return f"renkei/version-approval/v1|{bpf}|{version}|{content_hash}|{report_hash}".encode()


def version_approval(
    key: Ed25519PrivateKey, bpf: str, version: int, content_hash: str, report_hash: str
) -> str:
    """The conformance body's signature approving a BPF version's content on a kit report."""
    return sign(key, _approval(bpf, version, content_hash, report_hash))


def is_version_approval(
    body: Ed25519PublicKey | str,
    signature: str,
    bpf: str,
    version: int,
    content_hash: str,
    report_hash: str,
) -> bool:
    return holds(body, signature, _approval(bpf, version, content_hash, report_hash))


# -- an executor's putting a version into operation ---------------------------------------------


def _operation(bpf: str, version: int, content_hash: str, executor: str) -> bytes:
    return f"renkei/version-operation/v1|{bpf}|{version}|{content_hash}|{executor}".encode()


def version_operation(
    key: Ed25519PrivateKey, bpf: str, version: int, content_hash: str, executor: str
) -> str:
    """An executor's signature putting a BPF version's content into operation for itself."""
    return sign(key, _operation(bpf, version, content_hash, executor))


def is_version_operation(
    executor_key: Ed25519PublicKey | str,
    signature: str,
    bpf: str,
    version: int,
    content_hash: str,
    executor: str,
) -> bool:
    return holds(executor_key, signature, _operation(bpf, version, content_hash, executor))
