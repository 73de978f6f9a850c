"""A run's ticket holds only as the hub signed it, and keeps holding across releases."""

from __future__ import annotations

import json

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import TypeAdapter

from activities.claims import _signed_text, _ticket_message, hubs_ticket, issue_ticket
from renkei.contracts.messages import ParentFlow, Pin, RunTicket, SignedTicket, Ticket
from renkei.kernel import attest

HUB = Ed25519PrivateKey.generate()
PUBLIC = HUB.public_key()
PIN = Pin(bpf="child-allowance-check", version=1, content_hash="a" * 64)
PURPOSE = ParentFlow(workflow_id="p/city-minato/c", bpf="p", task="child-allowance")
CARRIED = TypeAdapter(Ticket)


def _issued() -> SignedTicket:
    return issue_ticket(
        HUB,
        workflow_id="child-allowance-check/city-minato/c",
        run_id="run-1",
        pin=PIN,
        trigger="counter",
        parent=PURPOSE.workflow_id,
        subject="code-1",
        mode="operation",
        purpose=PURPOSE,
    )


def test_a_ticket_reads_as_the_hub_issued_it_and_not_otherwise() -> None:
    ticket = _issued()
    fields = hubs_ticket(PUBLIC, ticket)
    assert fields is not None
    assert (fields.run_id, fields.pin, fields.subject, fields.purpose) == (
        "run-1",
        PIN,
        "code-1",
        PURPOSE,
    )
    rewritten = ticket.model_copy(
        update={"text": json.dumps({**json.loads(ticket.text), "trigger": "portal"})}
    )
    assert hubs_ticket(PUBLIC, rewritten) is None
    forged = issue_ticket(
        Ed25519PrivateKey.generate(),
        workflow_id="w",
        run_id="r",
        pin=PIN,
        trigger="counter",
        parent=None,
    )
    assert hubs_ticket(PUBLIC, forged) is None
    # the hub's signature over a text that is no ticket reads as none
    junk = SignedTicket(text="{}", signature=attest.sign(HUB, _signed_text("{}")))
    assert hubs_ticket(PUBLIC, junk) is None


def test_a_ticket_keeps_holding_across_releases_and_workers_of_another() -> None:
    """The flow carries the text, not the fields: a worker of a release that knows fewer or
    more of the ticket's fields passes it on byte for byte, and a ticket signed by a release
    with a field this one does not know (or without one this one added) still reads."""
    ticket = _issued()
    carried = CARRIED.validate_json(CARRIED.dump_json(ticket))  # through a flow's history
    assert carried == ticket and hubs_ticket(PUBLIC, carried) is not None
    later = json.dumps({**json.loads(ticket.text), "lane": "a field of a later release"})
    earlier = json.dumps({k: v for k, v in json.loads(ticket.text).items() if k != "purpose"})
    for text in (later, earlier):
        signed = SignedTicket(text=text, signature=attest.sign(HUB, _signed_text(text)))
        fields = hubs_ticket(PUBLIC, CARRIED.validate_python(signed.model_dump()))
        assert fields is not None and fields.subject == "code-1"


def test_a_ticket_of_the_first_form_still_reads_as_signed() -> None:
    """Runs in flight hold tickets of the first form (the fields, signed as dumped)."""
    first = RunTicket(workflow_id="w", run_id="r", pin=PIN, trigger="counter", subject="code-1")
    first = first.model_copy(update={"signature": attest.sign(HUB, _ticket_message(first))})
    carried = CARRIED.validate_python(first.model_dump(mode="json"))
    assert isinstance(carried, RunTicket) and hubs_ticket(PUBLIC, carried) == first
    assert hubs_ticket(PUBLIC, first.model_copy(update={"subject": "code-2"})) is None


async def test_a_run_brokers_only_under_its_own_ticket_from_a_hub_of_this_mode() -> None:
    """``Claims.resolved``, as a hub in operation runs it: a ticket from the conformance kit's
    test-mode hub (the same key) counts nothing; nor does one naming another run, another
    version, trigger or purpose; the run's own ticket, asked as resolved, is taken, and the
    fields it holds are what the hub goes on."""
    import pytest
    from temporalio.exceptions import ApplicationError

    from activities.claims import Caller, Claims
    from renkei.contracts.messages import BrokerRequest
    from whitelist.catalog import default_catalog

    wid = "child-allowance-check/city-minato/c"
    who = Caller(
        workflow_id=wid,
        run_id="run-1",
        workflow_type="child-allowance-check",
        executor="city-minato",
    )
    claims = Claims(None, default_catalog(), hub=PUBLIC, mode="operation")  # type: ignore[arg-type]

    def ticket(**kw: object) -> SignedTicket:
        fields: dict[str, object] = {
            "workflow_id": wid,
            "run_id": "run-1",
            "pin": PIN,
            "trigger": "counter",
            "parent": PURPOSE.workflow_id,
            "subject": "code-1",
            "mode": "operation",
            "purpose": PURPOSE,
            **kw,
        }
        return issue_ticket(HUB, **fields)  # type: ignore[arg-type]

    def request(t: SignedTicket, **kw: object) -> BrokerRequest:
        fields: dict[str, object] = {
            "requester": "city-minato",
            "provider": "city-shibuya",
            "task": "child-allowance",
            "info": "local-tax",
            "bpf": PIN.bpf,
            "bpf_version": PIN.version,
            "content_hash": PIN.content_hash,
            "step": "tax",
            "subject": "code-1",
            "workflow_id": "",
            "run_id": "",
            "trigger": "counter",
            "parent": PURPOSE,
            "ticket": t,
            **kw,
        }
        return BrokerRequest.model_validate(fields)

    refused = [
        request(ticket(mode="test")),  # the kit's hub signs with the same key
        request(ticket(run_id="run-2")),
        request(ticket(), trigger="portal"),
        request(ticket(), bpf_version=2),
        request(ticket(), parent=PURPOSE.model_copy(update={"task": "school-entry-notice"})),
        request(ticket(), parent=None),
    ]
    for req in refused:
        with pytest.raises(ApplicationError) as err:
            await claims.resolved(req, who)
        assert err.value.type == "LinkageRefused", err.value
    fields = await claims.resolved(request(ticket()), who)
    assert fields is not None and fields.subject == "code-1" and fields.purpose == PURPOSE


def test_a_flow_reads_either_form_where_the_hub_answers_a_ticket() -> None:
    """A run continued before this release recorded the hub's ``check-resume`` answer in the
    first form; replayed by a worker of this release, it reads it as it was (the answer's
    declared type is either form), as it reads the signed text the hub issues now."""
    from typing import get_type_hints

    from temporalio.contrib.pydantic import pydantic_data_converter

    from activities.hub import HubActivities

    read = pydantic_data_converter.payload_converter
    answer = get_type_hints(HubActivities.check_resume)["return"]
    first = RunTicket(workflow_id="w", run_id="r", pin=PIN, trigger="counter", subject="c")
    for ticket in (first, _issued(), None):
        assert read.from_payload(read.to_payload(ticket), answer) == ticket
    assert CARRIED.validate_python(first.model_dump(mode="json")) == first


def test_a_signed_state_holds_across_a_release_that_adds_a_field() -> None:
    """The hub signs a continuing run's state as its exact text: a state signed before an
    upgrade that adds a field to the model is still the hub's, and reads with the field's
    default. Signed as dumped (the first form), the same state no longer holds after it."""
    from renkei.bpf.loader import load_file
    from renkei.contracts.messages import ResolvedRun, Resume, SignedResume
    from tests.paths import SAMPLES_DIR

    run = ResolvedRun(
        pin=PIN,
        definition=load_file(SAMPLES_DIR / "child-allowance-portal.yaml").definition,
        info_schemas={},
        inputs={},
        task_queue_prefix="renkei",
        executor_roles=["municipal-mayor"],
    )
    state = Resume(run=run, next_step=1, outputs={}, linkages=[])
    before = json.loads(state.model_dump_json(by_alias=True))
    del before["generation"]  # a release before the field was added wrote no such key
    text = json.dumps(before)
    wid = "child-allowance-check/city-minato/c"
    signed = SignedResume(text=text, signature=attest.resume_state(HUB, wid, text, text=True))
    assert attest.is_hubs_resume(PUBLIC, signed.signature, wid, signed.text, text=True)
    assert signed.resume().generation == 1  # the added field's default
    assert not attest.is_hubs_resume(PUBLIC, signed.signature, wid + "x", signed.text, text=True)
    assert not attest.is_hubs_resume(
        PUBLIC, signed.signature, wid, text.replace("1", "2"), text=True
    )
    # the first form: signed over the dump of the release before, checked over this one's
    first = attest.resume_state(HUB, wid, text)
    assert not attest.is_hubs_resume(PUBLIC, first, wid, signed.resume().model_dump_json())
