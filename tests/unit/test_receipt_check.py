"""The hub's check of a provider's receipt (records.receipt_problem), on its own: it reads no
answer, only the permit, the answer's digest and the provider's signature."""

from __future__ import annotations

import datetime as dt

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from renkei.kernel import attest, permits
from renkei.kernel.permits import AnswerReceipt
from renkei.kernel.records import receipt_problem

HUB = Ed25519PrivateKey.generate()
JPS = Ed25519PrivateKey.generate()
KEY = "child-allowance-check/city-minato/case-1/run/pension"


def _permit(step: str = "pension", provider: str = "jps") -> permits.SignedPermit:
    now = dt.datetime(2026, 11, 27, tzinfo=dt.UTC)
    return permits.sign(
        permits.Permit(
            workflow_id="child-allowance-check/city-minato/case-1",
            run_id="run",
            step=step,
            requester="city-minato",
            provider=provider,
            task="child-allowance",
            info="pension-benefit",
            whitelist_row="r",
            legal_reference="l",
            bpf="child-allowance-check",
            bpf_version=1,
            content_hash="h",
            subject_seal="none",
            issued_at=now,
            expires_at=now,
            key_id="k",
        ),
        HUB,
    )


def _receipt(signer: Ed25519PrivateKey, permit: permits.SignedPermit) -> AnswerReceipt:
    answer = {"benefits": []}
    return AnswerReceipt(
        permit=permit,
        digest=attest.answer_digest(answer),
        signature=attest.signed_answer(signer, permit.signature, answer)["signature"],
    )


def _problem(receipt: AnswerReceipt | None, keys: list[Ed25519PrivateKey] | None = None) -> str:
    found = receipt_problem(
        receipt,
        KEY,
        "jps",
        HUB.public_key(),
        [k.public_key() for k in (keys if keys is not None else [JPS])],
    )
    return found or ""


def test_the_providers_receipt_for_this_attempt_holds() -> None:
    assert _problem(_receipt(JPS, _permit())) == ""


def test_a_receipt_that_does_not_hold_says_why() -> None:
    assert _problem(None) == "no receipt from the provider"
    assert "registered (unrevoked) key" in _problem(
        _receipt(Ed25519PrivateKey.generate(), _permit())
    )
    assert _problem(_receipt(JPS, _permit(step="tax"))) == "the receipt is for another attempt"
    assert "for city-shibuya, not jps" in _problem(_receipt(JPS, _permit(provider="city-shibuya")))
    forged = permits.sign(_permit().permit, Ed25519PrivateKey.generate())
    assert _problem(_receipt(JPS, forged)) == "the receipt answers a permit the hub did not sign"
    # The provider's key revoked: it is not among the keys the hub passes.
    assert "registered (unrevoked) key" in _problem(_receipt(JPS, _permit()), keys=[])
    # Another answer's digest under the same signature.
    genuine = _receipt(JPS, _permit())
    other = genuine.model_copy(update={"digest": attest.answer_digest({"benefits": [1]})})
    assert "registered (unrevoked) key" in _problem(other)


def test_the_hubs_own_permits_remembered_make_no_other_permit_the_hubs() -> None:
    """The permits this process signed are remembered, so the hub's collector is spared
    checking its own signature again: a permit changed after signing, or signed here with
    another key, is still not the hub's; one signed elsewhere is checked afresh."""
    from renkei.kernel import keys

    signed = _permit()
    assert permits.is_hubs(signed, HUB.public_key())
    changed = permits.SignedPermit(
        permit=signed.permit.model_copy(update={"step": "tax"}), signature=signed.signature
    )
    assert not permits.is_hubs(changed, HUB.public_key())
    other = permits.sign(signed.permit, Ed25519PrivateKey.generate())  # remembered, for its key
    assert not permits.is_hubs(other, HUB.public_key())
    keys._HOLDS.clear()  # as in another of the hub's processes: checked, and it holds
    keys._SIGNED.clear()
    assert permits.is_hubs(signed, HUB.public_key())
    assert not permits.is_hubs(other, HUB.public_key())
