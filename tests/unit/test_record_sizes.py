"""What a party's request names, and what the platform writes into a record, stays within what a
record's text columns hold (8,192 bytes each, migration 0071): a request past its bounds is
refused as it is read, a reason is cut where the record is made, a definition's names are
bounded where it is validated."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from activities.attempts import REASON_LIMIT, clipped_reason
from renkei.bpf.loader import BpfFileError, parse_text
from renkei.contracts.messages import (
    NAME_LIMIT,
    SUBJECT_LIMIT,
    BrokerRequest,
    LinkageRequest,
    carried,
)

TEXT_LIMIT = 8192  # bytes, a record's text column

REQUEST = {
    "requester": "pref-tokyo",
    "provider": "city-shibuya",
    "task": "child-rearing-allowance",
    "info": "local-tax",
    "subject": "CODE",
    "bpf": "probe",
    "bpf_version": 1,
    "content_hash": "sha256:0",
    "step": "tax",
}


def test_a_reason_is_cut_to_what_a_record_holds_in_any_script() -> None:
    assert clipped_reason("refused: no permit") == "refused: no permit"
    at_limit = "x" * REASON_LIMIT
    assert clipped_reason(at_limit) == at_limit
    for char in ("x", "理", "😀"):  # one, three and four bytes in UTF-8
        cut = clipped_reason(char * 10**6)
        assert len(cut) == REASON_LIMIT and cut.endswith("…") and cut.startswith(char * 10)
        assert len(cut.encode()) <= TEXT_LIMIT


@pytest.mark.parametrize("field", ["requester", "provider", "task", "info", "bpf", "step"])
def test_a_request_naming_more_than_its_bound_is_refused_as_it_is_read(field: str) -> None:
    LinkageRequest.model_validate({**REQUEST, field: "x" * NAME_LIMIT})
    with pytest.raises(ValidationError, match=field):
        LinkageRequest.model_validate({**REQUEST, field: "x" * (NAME_LIMIT + 1)})
    # what the hub is asked too, with the fields only it reads
    broker = {**REQUEST, "workflow_id": "w", "run_id": "r"}
    with pytest.raises(ValidationError, match=field):
        BrokerRequest.model_validate({**broker, field: "x" * (NAME_LIMIT + 1)})
    for extra in ({"send_fields": ["x" * (NAME_LIMIT + 1)]}, {"workflow_id": "w" * 601}):
        with pytest.raises(ValidationError):
            BrokerRequest.model_validate({**broker, **extra})


def test_a_definitions_names_are_bounded_where_it_is_validated() -> None:
    text = """
bpf: sizes
version: 1
title: {{ja: 大きさ, en: Sizes}}
task: child-allowance
owners: {{definer: mhlw, executors: [role:municipal-mayor]}}
triggers: [counter]
steps:
  - id: {step}
    query: {{info: local-tax, provider: city-shibuya}}
"""
    parse_text(text.format(step="s" * 200), "sizes.yaml")
    with pytest.raises(BpfFileError, match="200"):
        parse_text(text.format(step="s" * 201), "sizes.yaml")


@pytest.mark.parametrize(
    "char", ["\x00", "\n", "\x1b", "\x7f", "\x85", "\x9f", "\u2028", "\u2029", "\u202e", "\u2067"]
)
def test_a_request_naming_a_control_character_is_refused_as_it_is_read(char: str) -> None:
    """PostgreSQL's text takes no NUL (such a record could not be written, and would fail the
    records written in one statement with it), and no refusal naming a value carries a line of
    the sender's making."""
    for field in ("provider", "task", "subject", "step", "trigger"):
        with pytest.raises(ValidationError, match=field):
            LinkageRequest.model_validate({**REQUEST, field: f"city{char}x"})
    LinkageRequest.model_validate({**REQUEST, "task": "子育て 支援-1/2:x\u00a0é\u200b"})


def test_what_a_step_works_out_for_a_request_is_checked_as_the_request_will_be() -> None:
    """The interpreter checks a provider, partner or person it works out at run time with
    this, and fails the step (not the flow's task, again and again) for one it cannot send."""
    assert carried("city-minato") and carried("x" * NAME_LIMIT)
    assert not carried("x" * (NAME_LIMIT + 1)) and not carried("city\x00")
    assert carried("A" * 512, SUBJECT_LIMIT) and not carried("A" * 513, SUBJECT_LIMIT)


@pytest.mark.parametrize(
    ("field", "value"),
    [("info", "i" * 201), ("provider", "p" * 201), ("task", "t" * 201)],
)
def test_a_definitions_ids_are_bounded_where_it_is_validated(field: str, value: str) -> None:
    step = {"info": "local-tax", "provider": "city-shibuya"}
    task = "child-allowance"
    if field == "task":
        task = value
    else:
        step[field] = value
    text = f"""
bpf: sizes
version: 1
title: {{ja: 大きさ, en: Sizes}}
task: {task}
owners: {{definer: mhlw, executors: [role:municipal-mayor]}}
triggers: [counter]
steps:
  - id: tax
    query: {{info: {step["info"]}, provider: {step["provider"]}}}
"""
    with pytest.raises(BpfFileError, match="200"):
        parse_text(text, "sizes.yaml")
