"""The fields a permit lets an act send: part of what the hub signs, and left out of the signed
form when the permit names none, so a permit signed before the field existed verifies as it
did."""

from __future__ import annotations

import base64
import datetime as dt

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from renkei.contracts.messages import LinkageRequest
from renkei.kernel import permits

HUB = Ed25519PrivateKey.generate()
NOW = dt.datetime(2026, 11, 29, tzinfo=dt.UTC)


def _permit(**changes: object) -> permits.Permit:
    fields: dict[str, object] = {
        "workflow_id": "move-one-stop/city-minato/case-1",
        "run_id": "run",
        "step": "notify",
        "requester": "city-minato",
        "provider": "sample-denki",
        "task": "move-one-stop",
        "info": "electricity-move-notice",
        "whitelist_row": "r",
        "legal_reference": "l",
        "bpf": "move-one-stop",
        "bpf_version": 1,
        "content_hash": "h",
        "subject_seal": "none",
        "issued_at": NOW,
        "expires_at": NOW,
        "key_id": "k",
    }
    return permits.Permit.model_validate({**fields, **changes})


def test_the_fields_an_act_may_send_are_signed() -> None:
    signed = permits.sign(_permit(fields=("customer_number", "moved_on")), HUB)
    assert permits.verify(signed, HUB.public_key(), "k").fields == ("customer_number", "moved_on")
    widened = signed.model_copy(
        update={
            "permit": signed.permit.model_copy(
                update={"fields": ("customer_number", "moved_on", "new_address")}
            )
        }
    )
    with pytest.raises(permits.PermitRefused, match="not the hub's"):
        permits.verify(widened, HUB.public_key(), "k")
    # taken away altogether (a permit naming none lets nothing be sent, but the signature is
    # over the fields named)
    dropped = signed.model_copy(
        update={"permit": signed.permit.model_copy(update={"fields": None})}
    )
    with pytest.raises(permits.PermitRefused, match="not the hub's"):
        permits.verify(dropped, HUB.public_key(), "k")


def test_a_permit_naming_no_fields_is_signed_as_before_they_existed() -> None:
    """The signed form of a permit with no fields has no ``fields`` key: the bytes a hub signed
    before this field existed are the same bytes verified now."""
    old_form = permits._canonical(_permit())
    assert b'"fields"' not in old_form
    signature = base64.b64encode(HUB.sign(old_form)).decode()
    signed = permits.SignedPermit(permit=_permit(), signature=signature)
    assert permits.verify(signed, HUB.public_key(), "k").fields is None


@pytest.mark.parametrize(
    "send",
    [
        {"x" * 201: 1},  # a name past its bound
        {"new\naddress": "x"},  # a line of the sender's making, in a refusal naming it
        {f"f{i}": i for i in range(201)},  # more fields than any action takes
    ],
)
def test_what_a_request_sends_is_named_within_bounds(send: dict[str, object]) -> None:
    """A refusal at the partner's gate names the fields sent beyond the permit: their names
    are bounded, printable and few, or the request is not read at all."""
    with pytest.raises(ValueError, match="send"):
        LinkageRequest(
            requester="city-minato",
            provider="sample-denki",
            task="move-one-stop",
            info="electricity-move-notice",
            subject="",
            bpf="move-one-stop",
            bpf_version=1,
            content_hash="h",
            step="notify",
            send=send,
        )
