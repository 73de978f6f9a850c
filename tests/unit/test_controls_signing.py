"""The hub's signature on a PIA or suspension event binds the event's table, its number and each
field of its content: none of them can be changed, nor the signature moved to another event."""

from __future__ import annotations

import base64
import datetime as dt

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from whitelist import controls_store as cs

HUB = Ed25519PrivateKey.generate()
AT = dt.datetime(2026, 11, 28, 1, 2, 3, 456789, tzinfo=dt.UTC)
LIFT: dict[str, object] = {
    "kind": "org",
    "target": "city-minato",
    "version": None,
    "side": None,
    "action": "lift",
    "reason": "drill over",
    "operator": "alice",
    "at": AT,
}


def _signed(events: cs.Events, seq: int, fields: dict[str, object]) -> dict[str, object]:
    signature = base64.b64encode(HUB.sign(cs._message(events, seq, fields))).decode()
    return {**fields, "seq": seq, "signature": signature}


def test_an_event_the_hub_signed_holds_and_an_unsigned_one_does_not() -> None:
    row = _signed("suspension", 7, LIFT)
    assert cs._holds("suspension", row, HUB.public_key())  # type: ignore[arg-type]
    unsigned = {**LIFT, "seq": 3, "signature": None}
    assert not cs._holds("suspension", unsigned, HUB.public_key())  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "change",
    [
        {"seq": 8},
        {"target": "city-shibuya"},
        {"action": "suspend"},
        {"reason": "drill over."},
        {"operator": "bob"},
        {"at": AT + dt.timedelta(microseconds=1)},
        {"signature": base64.b64encode(b"\0" * 64).decode()},
        {"signature": "not base64 at all!"},
    ],
)
def test_no_field_of_a_signed_event_can_change(change: dict[str, object]) -> None:
    row = {**_signed("suspension", 7, LIFT), **change}
    assert not cs._holds("suspension", row, HUB.public_key())  # type: ignore[arg-type]


def test_a_signature_holds_for_its_own_table_and_key_only() -> None:
    row = _signed("suspension", 7, LIFT)
    other = Ed25519PrivateKey.generate()
    assert not cs._holds("suspension", row, other.public_key())  # type: ignore[arg-type]
    pia: dict[str, object] = {
        "org": "city-minato",
        "task": "t",
        "level": "full",
        "approved_on": dt.date(2026, 4, 1),
        "review_due": dt.date(2031, 3, 31),
        "status": "active",
        "note": "",
        "recorded_by": "alice",
        "recorded_at": AT,
    }
    signed = _signed("pia", 7, pia)
    assert cs._holds("pia", signed, HUB.public_key())  # type: ignore[arg-type]
    # a row with every column of both tables: its messages as either differ (the table is signed)
    both = {**pia, **LIFT}
    assert cs._message("pia", 7, both) != cs._message("suspension", 7, both)
    # the same time in another zone is the same instant: it holds
    shifted = {**signed, "recorded_at": AT.astimezone(dt.timezone(dt.timedelta(hours=9)))}
    assert cs._holds("pia", shifted, HUB.public_key())  # type: ignore[arg-type]
