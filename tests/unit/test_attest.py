"""The platform's signed words hold only for what they were said about."""

from __future__ import annotations

import base64

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from renkei.kernel import attest

HUB = Ed25519PrivateKey.generate()
PUBLIC = HUB.public_key()
PUBLIC_B64 = base64.b64encode(PUBLIC.public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()
OTHER = Ed25519PrivateKey.generate()


def test_a_citizens_answer_holds_for_its_run_step_payload_and_person_only() -> None:
    said = attest.citizen_response(HUB, "wf", "run-1", "consent", {"agree": True}, "P1")
    assert attest.is_citizens(PUBLIC_B64, said, "wf", "run-1", "consent", {"agree": True}, "P1")
    for wid, run, step, payload, person in (
        ("wf", "run-2", "consent", {"agree": True}, "P1"),  # replayed into another run
        ("other", "run-1", "consent", {"agree": True}, "P1"),
        ("wf", "run-1", "documents", {"agree": True}, "P1"),
        ("wf", "run-1", "consent", {"agree": False}, "P1"),
        ("wf", "run-1", "consent", {"agree": True}, "P2"),  # someone else's answer
        ("wf", "run-1", "consent", {"agree": True}, None),  # taken as the first form
    ):
        assert not attest.is_citizens(PUBLIC_B64, said, wid, run, step, payload, person)
    forged = attest.citizen_response(OTHER, "wf", "run-1", "consent", {"agree": True}, "P1")
    assert not attest.is_citizens(
        PUBLIC_B64, forged, "wf", "run-1", "consent", {"agree": True}, "P1"
    )
    assert not attest.is_citizens(PUBLIC_B64, None, "wf", "run-1", "consent", {"agree": True}, "P1")


def test_a_platform_start_holds_for_its_flow_trigger_and_subject_only() -> None:
    word = attest.trigger_start(HUB, "wf", "notification", "bpf", "city-minato", "CODE")
    assert attest.is_platform_start(
        PUBLIC, word, "wf", "notification", "bpf", "city-minato", "CODE"
    )
    assert not attest.is_platform_start(
        PUBLIC, word, "wf", "life-event", "bpf", "city-minato", "CODE"
    )
    assert not attest.is_platform_start(
        PUBLIC, word, "wf", "notification", "bpf", "city-minato", "OTHER"
    )


def test_a_providers_answer_holds_for_its_permit_and_payload_only() -> None:
    signed = attest.signed_answer(HUB, "permit-sig", {"income": 1})
    assert attest.is_providers(PUBLIC_B64, signed, "permit-sig") == {"income": 1}
    assert attest.is_providers(PUBLIC_B64, signed, "another-permit") is None
    tampered = {**signed, "answer": {"income": 2}}
    assert attest.is_providers(PUBLIC_B64, tampered, "permit-sig") is None
    assert attest.is_providers(PUBLIC_B64, {"income": 1}, "permit-sig") is None  # unsigned


def test_a_resumed_state_holds_for_its_workflow_and_content_only() -> None:
    state = '{"next_step": 3}'
    word = attest.resume_state(HUB, "wf", state)
    assert attest.is_hubs_resume(PUBLIC, word, "wf", state)
    assert not attest.is_hubs_resume(PUBLIC, word, "other", state)
    assert not attest.is_hubs_resume(PUBLIC, word, "wf", '{"next_step": 4}')


def test_a_scan_holds_for_its_rule_only() -> None:
    word = attest.scan_request(HUB, "bpf", None, "city-minato", 18, "birthday")
    assert attest.is_platform_scan(PUBLIC, word, "bpf", None, "city-minato", 18, "birthday")
    assert not attest.is_platform_scan(PUBLIC, word, "bpf", None, "city-shibuya", 18, "birthday")


def test_a_public_key_read_once_is_the_same_key_and_a_malformed_one_is_refused_each_time() -> None:
    """Keys are parsed once per process (``keys.signing_public``): a cached key still verifies
    only its own signatures, another party's key string gets its own entry, and a malformed
    one is refused at every use, never kept."""
    from renkei.kernel import keys

    other_b64 = base64.b64encode(
        OTHER.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    ).decode()
    said = attest.citizen_response(HUB, "wf", "run-1", "consent", {"agree": True}, "P1")
    for _ in range(2):  # the second time from the cache
        assert attest.is_citizens(PUBLIC_B64, said, "wf", "run-1", "consent", {"agree": True}, "P1")
        assert not attest.is_citizens(
            other_b64, said, "wf", "run-1", "consent", {"agree": True}, "P1"
        )
    assert keys.signing_public(PUBLIC_B64) is keys.signing_public(PUBLIC_B64)
    assert keys.signing_public(other_b64) is not keys.signing_public(PUBLIC_B64)
    for bad in ("not base64!", base64.b64encode(b"short").decode()):
        for _ in range(2):
            assert not attest.is_citizens(
                bad, said, "wf", "run-1", "consent", {"agree": True}, "P1"
            )
    assert keys.signing_public.cache_info().maxsize is not None  # bounded


def test_a_remembered_signature_check_holds_for_its_own_key_signature_and_message_only() -> None:
    """``keys.signature_holds`` remembers its answers by a digest of the key, the signature and
    the message (fixed size, however long a row someone wrote): the same answer again from
    memory, and no answer carried over to another key, signature or message."""
    from renkei.kernel import keys

    message = b"renkei/party/v1|city-minato|A|B"
    signature = base64.b64encode(HUB.sign(message)).decode()
    for _ in range(2):  # the second time remembered
        assert keys.signature_holds(PUBLIC, signature, message)
        assert not keys.signature_holds(OTHER.public_key(), signature, message)
        assert not keys.signature_holds(PUBLIC, signature, message + b"x")
        other = base64.b64encode(OTHER.sign(message)).decode()
        assert not keys.signature_holds(PUBLIC, other, message)
        assert not keys.signature_holds(PUBLIC, "not base64!", message)
    long = b"x" * 100_000
    assert not keys.signature_holds(PUBLIC, signature, long)
    assert all(len(k) == 32 for k in keys._HOLDS)  # digests, not the messages
