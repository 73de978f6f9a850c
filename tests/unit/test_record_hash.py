"""The hash chain of access records: what a record's hash covers, and how records link."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from renkei.kernel.records import GENESIS, HUB, AccessRecord, entry_hash, may_write, record_hash

JST = dt.timezone(dt.timedelta(hours=9))
AT = dt.datetime(2026, 11, 27, 3, 0, 0, 123456, tzinfo=dt.UTC)

# Set when the record is written, over the hash: not part of it.
# The signatures, and what a record written unchained carries besides (its entry hash, which
# covers the same content, and its chainer's link, which signs this hash).
NOT_HASHED = {
    "record_hash",
    "signer",
    "signature",
    "entry_hash",
    "chained_by",
    "link_signature",
    "link_from",
}
# What a record written unchained has when its writer signs it: no place in the chain yet.
PLACE = {"chain_seq", "prev_hash"}


def record(seq: int = 1, prev: str = GENESIS, **changes: Any) -> AccessRecord:
    """Attempt ``seq`` in city-minato's chain, as it is hashed when written."""
    return AccessRecord(
        keeper="city-minato",
        attempt_key=f"wf-{seq}/run/tax",
        decided_at=AT,
        requester="pref-tokyo",
        provider="city-minato",
        task="child-rearing-allowance",
        info="local-tax",
        legal_reference="番号法別表第二 五十七項",
        whitelist_row="annex2-57-local-tax",
        subject_code="ABCDEFGHIJKLMNOPQRST",
        bpf="child-rearing-allowance-income-check",
        bpf_version=1,
        content_hash="sha256:0",
        workflow_id=f"wf-{seq}",
        run_id="run",
        step="tax",
        outcome="allowed",
        reason="permitted",
        chain_seq=seq,
        prev_hash=prev,
        recorded_at=AT,
    ).model_copy(update=changes)


def other_value(name: str, value: Any) -> Any:
    """A value of field ``name`` different from ``value``."""
    if name == "outcome":
        return "denied" if value == "allowed" else "allowed"
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, dt.datetime):
        return value + dt.timedelta(microseconds=1)
    if isinstance(value, str):
        return value + "x"
    if name == "hold_until":
        return AT + dt.timedelta(days=30)
    return "set"  # an optional text field left unset


HASHED = [f for f in AccessRecord.model_fields if f not in NOT_HASHED]


def test_the_hash_is_a_sha256_hex_digest() -> None:
    digest = record_hash(record())
    assert len(digest) == 64 and int(digest, 16) >= 0


def test_the_same_record_always_hashes_the_same() -> None:
    assert record_hash(record()) == record_hash(record())


def test_the_hash_of_a_record_is_pinned() -> None:
    # Stored chains are verified against this function: a change to it breaks every chain.
    assert record_hash(record()) == (
        "e0ca39c09f389a2751e819df6e8c78cc690905a74660793269d7950854f235e2"
    )


@pytest.mark.parametrize("name", HASHED)
def test_changing_any_field_changes_the_hash(name: str) -> None:
    base = record()
    changed = base.model_copy(update={name: other_value(name, getattr(base, name))})
    assert record_hash(changed) != record_hash(base)


@pytest.mark.parametrize("name", sorted(NOT_HASHED))
def test_the_hash_and_signature_fields_are_not_hashed(name: str) -> None:
    base = record()
    assert record_hash(base.model_copy(update={name: "anything"})) == record_hash(base)


def test_the_same_instant_in_another_time_zone_hashes_the_same() -> None:
    base = record()
    moved = base.model_copy(
        update={"decided_at": AT.astimezone(JST), "recorded_at": AT.astimezone(JST)}
    )
    assert record_hash(moved) == record_hash(base)


def test_the_first_record_of_a_chain_follows_genesis() -> None:
    assert GENESIS == "0" * 64
    assert record_hash(record(prev=GENESIS)) != record_hash(record(prev="f" * 64))


def test_a_record_links_to_its_predecessors_hash() -> None:
    first = record(1)
    second = record(2, prev=record_hash(first))
    assert second.prev_hash == record_hash(first)
    assert record_hash(second) != record_hash(record(2, prev=GENESIS))


def test_changing_a_record_breaks_the_link_from_its_successor() -> None:
    first = record(1)
    second = record(2, prev=record_hash(first))
    forged = first.model_copy(update={"outcome": "denied"})
    assert record_hash(forged) != second.prev_hash


def test_a_party_writes_its_own_chain() -> None:
    assert may_write("city-minato", "city-minato")


def test_the_hub_writes_its_own_and_a_requesters_chain() -> None:
    assert may_write(HUB, HUB) and may_write(HUB, "pref-tokyo")


def test_no_party_writes_another_partys_chain() -> None:
    assert not may_write("city-minato", "pref-tokyo")
    assert not may_write("city-minato", HUB)


@pytest.mark.parametrize("name", [f for f in HASHED if f not in PLACE])
def test_changing_any_field_but_the_place_changes_the_entry_hash(name: str) -> None:
    base = record()
    changed = base.model_copy(update={name: other_value(name, getattr(base, name))})
    assert entry_hash(changed) != entry_hash(base)


def test_the_entry_hash_does_not_depend_on_the_place_the_chainer_gives() -> None:
    placed = record()
    unplaced = placed.model_copy(update={"chain_seq": None, "prev_hash": None})
    elsewhere = placed.model_copy(update={"chain_seq": 7, "prev_hash": "a" * 64})
    assert entry_hash(elsewhere) == entry_hash(unplaced) == entry_hash(placed)
    assert entry_hash(placed) != record_hash(placed)


def test_the_chainers_hash_of_stored_values_is_the_records() -> None:
    """The chainer hashes a stored row's values without building a record: the same hash."""
    from renkei.kernel.records._chain import _hash_of

    held = record(hold_until=AT, hold_reason="investigation", trigger="counter")
    stored = {**held.model_dump(), "id": 7, "stored_at": AT, "chained_at": None}
    assert _hash_of(stored) == record_hash(held)


def test_the_canonical_body_turns_exactly_the_times_and_nothing_else() -> None:
    """The body converts only the fields that hold a time: the same bytes as converting every
    value (how it was defined), for a record with every optional field set, times in JST."""
    import json

    from renkei.kernel.records._chain import _HASHED, _LATER, _TIMES, _body, _canonical

    full = record(
        decided_at=AT.astimezone(JST),
        recorded_at=AT.astimezone(JST),
        hold_until=AT.astimezone(JST) + dt.timedelta(days=3),
        hold_reason='調査中\n"引用"\\',
        trigger="counter",
        parent_workflow_id="wf-0",
        parent_bpf="portal",
        purpose_task="child-allowance",
        sub_task="sub",
    )
    for values in (full.__dict__, record().__dict__):
        defined = json.dumps(
            {f: _canonical(values[f]) for f in _HASHED if not (values[f] is None and f in _LATER)},
            sort_keys=True,
            ensure_ascii=False,
            separators=(",", ":"),
        )
        assert _body(values, _HASHED) == defined
    assert _TIMES == {f for f, v in full.__dict__.items() if isinstance(v, dt.datetime)}
