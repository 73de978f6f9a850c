"""Sealing a value to one party: the ephemeral key a sealer keeps a while, the secret an opener
remembers, and that neither opens anything for anyone else."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from renkei.kernel import sealing
from renkei.kernel.sealing import SealError, open_sealed, seal


def test_a_sealer_keeps_one_ephemeral_key_per_recipient_for_a_while() -> None:
    a, b = X25519PrivateKey.generate(), X25519PrivateKey.generate()
    one = seal(a.public_key(), "a", b"code-1", "ctx/1")
    two = seal(a.public_key(), "a", b"code-2", "ctx/2")
    other = seal(b.public_key(), "b", b"code-3", "ctx/3")
    assert one.ephemeral == two.ephemeral != other.ephemeral
    assert open_sealed(a, one, "ctx/1") == b"code-1"
    assert open_sealed(a, two, "ctx/2") == b"code-2"
    assert open_sealed(b, other, "ctx/3") == b"code-3"


def test_each_value_still_has_its_own_key_and_nonce() -> None:
    a = X25519PrivateKey.generate()
    one = seal(a.public_key(), "a", b"same", "ctx/1")
    again = seal(a.public_key(), "a", b"same", "ctx/1")
    assert one.ephemeral == again.ephemeral
    assert one.ciphertext != again.ciphertext  # a fresh nonce
    with pytest.raises(SealError):  # the context is bound: not movable to another purpose
        open_sealed(a, one, "ctx/2")


def test_the_ephemeral_key_is_replaced_after_its_time_or_its_uses(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    a = X25519PrivateKey.generate()
    first = seal(a.public_key(), "a", b"x", "c").ephemeral
    monkeypatch.setattr(sealing, "EPHEMERAL_FOR", 0.0)
    second = seal(a.public_key(), "a", b"x", "c").ephemeral
    assert second != first
    monkeypatch.setattr(sealing, "EPHEMERAL_FOR", 3600.0)
    monkeypatch.setattr(sealing, "EPHEMERAL_USES", 2)
    assert seal(a.public_key(), "a", b"x", "c").ephemeral == second  # its second use
    third = seal(a.public_key(), "a", b"x", "c").ephemeral  # its two uses are spent
    assert third != second
    assert seal(a.public_key(), "a", b"x", "c").ephemeral == third


def test_a_remembered_secret_opens_nothing_for_another_private_key() -> None:
    a, b = X25519PrivateKey.generate(), X25519PrivateKey.generate()
    sealed = seal(a.public_key(), "a", b"code", "ctx")
    assert open_sealed(a, sealed, "ctx") == b"code"  # a's agreed secret is now remembered
    with pytest.raises(SealError):
        open_sealed(b, sealed, "ctx")
    # a tampered ciphertext under a remembered ephemeral key still fails its tag
    blob = sealed.ciphertext
    tampered = sealed.model_copy(
        update={"ciphertext": blob[:-4] + ("AAAA" if blob[-4:] != "AAAA" else "BBBB")}
    )
    with pytest.raises(SealError):
        open_sealed(a, tampered, "ctx")


def test_an_invalid_ephemeral_key_is_a_seal_error_and_is_not_remembered() -> None:
    a = X25519PrivateKey.generate()
    sealed = seal(a.public_key(), "a", b"code", "ctx")
    for bad in ("", "AAAA", "A" * 43 + "=", "not base64 at all!"):
        with pytest.raises(SealError):
            open_sealed(a, sealed.model_copy(update={"ephemeral": bad}), "ctx")
    assert open_sealed(a, sealed, "ctx") == b"code"


def test_what_is_kept_is_bounded() -> None:
    for _ in range(sealing._KEPT + 50):
        key = X25519PrivateKey.generate()
        open_sealed(key, seal(key.public_key(), "k", b"x", "c"), "c")
    assert len(sealing._EPHEMERALS) <= sealing._KEPT
    assert len(sealing._AGREED) <= sealing._KEPT
