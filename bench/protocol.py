"""What the zero-trust protocol costs per linkage, in CPU: ``python -m bench protocol``.

One linkage (a query step) does, besides the whitelist decision: the hub signs a permit and
seals the provider's code to it; the provider verifies the permit, opens the code and signs its
answer; the executor verifies the answer; three parties sign one record each. Every payload it
sends or receives is sealed for its channel (AES-256-GCM under a cached channel key). The
provider's signature over its answer is also its receipt: the executor forwards it with the
digest of the answer, and the hub checks it (the permit is the hub's, the receipt the
provider's) before it records "provided" — no second signature, two verifications and a digest
more. This times each operation alone, in this process, with the keys renkei uses.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from temporalio.api.common.v1 import Payload
from temporalio.converter import ActivitySerializationContext

from renkei.contracts.names import agency_queue, workflow_id
from renkei.kernel import attest, permits
from renkei.kernel.channels import ChannelCodec, Directory, Identity
from renkei.kernel.sealing import open_sealed, seal
from workers.plugin import ROUTING


def _us(fn: Callable[[], object], n: int) -> float:
    fn()
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n * 1e6


async def _async_us(fn: Callable[[], object], n: int) -> float:
    await fn()  # type: ignore[misc]
    t0 = time.perf_counter()
    for _ in range(n):
        await fn()  # type: ignore[misc]
    return (time.perf_counter() - t0) / n * 1e6


async def protocol(quick: bool) -> list[str]:
    n = 300 if quick else 3000
    signer = Ed25519PrivateKey.generate()
    verifier = signer.public_key()
    message = json.dumps({"permit": "x" * 400}).encode()
    signature = signer.sign(message)
    provider = X25519PrivateKey.generate()
    code = b"S-0123456789ABCDEFGHIJ"
    sealed = seal(provider.public_key(), "k", code, "ctx")
    executor, jps = X25519PrivateKey.generate(), X25519PrivateKey.generate()
    directory = Directory({"city-minato": executor.public_key(), "jps": jps.public_key()})
    context = ActivitySerializationContext(
        namespace="default",
        activity_id="pension",
        activity_type="query.pension",
        activity_task_queue=agency_queue("renkei", "jps"),
        workflow_id=workflow_id("child-allowance-check", "city-minato", "case-1"),
        workflow_type="child-allowance-check",
        is_local=False,
    )
    writer = ChannelCodec(Identity().add("city-minato", executor), directory, ROUTING).with_context(
        context
    )
    reader = ChannelCodec(Identity().add("jps", jps), directory, ROUTING).with_context(context)
    payload = Payload(metadata={"encoding": b"json/plain"}, data=b"{" + b'"k": 1,' * 150 + b"}")
    [wire] = await writer.encode([payload])
    answer = {"benefits": [{"kind": "old-age", "monthly": 123_456 + i} for i in range(12)]}
    permit = _permit(signer)
    signed = attest.signed_answer(signer, permit.signature, answer)
    digest = attest.answer_digest(answer)

    def hub_checks_receipt() -> bool:
        return permits.is_hubs(permit, verifier) and attest.is_receipt(
            verifier, permit.signature, digest, signed["signature"]
        )

    assert hub_checks_receipt()
    receipt_rows = [
        (
            "provider: sign its answer (= its receipt)",
            _us(lambda: attest.signed_answer(signer, permit.signature, answer), n),
        ),
        (
            "executor: digest of the answer, for the receipt",
            _us(lambda: attest.answer_digest(answer), n),
        ),
        ("hub: check a receipt (permit + provider signature)", _us(hub_checks_receipt, n)),
    ]
    rows = [
        ("Ed25519 sign (permit, answer, record)", _us(lambda: signer.sign(message), n)),
        ("Ed25519 verify", _us(lambda: verifier.verify(signature, message), n)),
        (
            "seal a code to a party (X25519 + HKDF + AES-GCM)",
            _us(lambda: seal(provider.public_key(), "k", code, "ctx"), n),
        ),
        ("open a sealed code", _us(lambda: open_sealed(provider, sealed, "ctx"), n)),
        ("channel: encode a 1 kB payload", await _async_us(lambda: writer.encode([payload]), n)),
        ("channel: decode a 1 kB payload", await _async_us(lambda: reader.decode([wire]), n)),
    ]
    sign, verify, seal_us, open_us, enc, dec = (r[1] for r in rows)
    # Per linkage: permit (sign + verify), code (seal + open), answer (sign + verify), three
    # records signed; about ten payloads written and read across the parties.
    per_linkage = 5 * sign + 2 * verify + seal_us + open_us + 10 * (enc + dec)
    lines = ["| operation | µs |", "| --- | --- |"]
    lines += [f"| {name} | {us:.1f} |" for name, us in rows]
    lines.append(f"| **one linkage, all of the above** | **{per_linkage:.0f}** |")
    lines += [f"| {name} | {us:.1f} |" for name, us in receipt_rows]
    receipt_cost = receipt_rows[1][1] + receipt_rows[2][1]
    lines.append(
        f"| **receipts, added per linkage (digest + hub's check)** | **{receipt_cost:.0f}** |"
    )
    return lines


def _permit(hub: Ed25519PrivateKey) -> permits.SignedPermit:
    import datetime as dt

    now = dt.datetime(2026, 11, 27, tzinfo=dt.UTC)
    return permits.sign(
        permits.Permit(
            workflow_id=workflow_id("child-allowance-check", "city-minato", "case-1"),
            run_id="run",
            step="pension",
            requester="city-minato",
            provider="jps",
            task="child-allowance",
            info="pension-benefit",
            whitelist_row="renkei-local/1",
            legal_reference="番号法別表 第1項",
            bpf="child-allowance-check",
            bpf_version=1,
            content_hash="sha256:" + "0" * 64,
            subject_seal="0" * 64,
            issued_at=now,
            expires_at=now,
            key_id="k",
        ),
        hub,
    )
