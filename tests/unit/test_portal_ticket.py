"""The portal knows a flow's person only by the hub's own answer for the flow's current run.

A deployed hub's web process cannot open a start its executor sealed for itself: it reads the
person from the hub's ticket in the run's history. These tests play the executor that writes
that history: an activity named ``hub.resolve`` that its run scheduled on a queue of its own and
answered itself, and an answer carrying a ticket the hub signed for another run.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from temporalio.api.common.v1 import Payload
from temporalio.api.history.v1 import HistoryEvent

from activities.claims import issue_ticket, runs_ticket
from renkei.app.client import hubs_first_answer
from renkei.contracts.messages import Pin, SignedTicket

HUB_QUEUE = "renkei.hub"
OWN_QUEUE = "renkei.control.city-minato"
HUB = Ed25519PrivateKey.generate()
WID = "counter-consent-probe/city-minato/case-1"


def _scheduled(event_id: int, name: str, queue: str) -> HistoryEvent:
    event = HistoryEvent(event_id=event_id)
    attrs = event.activity_task_scheduled_event_attributes
    attrs.activity_type.name = name
    attrs.task_queue.name = queue
    return event


def _completed(event_id: int, scheduled: int, data: bytes) -> HistoryEvent:
    event = HistoryEvent(event_id=event_id)
    attrs = event.activity_task_completed_event_attributes
    attrs.scheduled_event_id = scheduled
    attrs.result.payloads.append(Payload(data=data))
    return event


async def _history(*events: HistoryEvent) -> AsyncIterator[HistoryEvent]:
    for event in events:
        yield event


async def test_the_portal_reads_only_the_hubs_answer_on_the_hubs_queue() -> None:
    forged = (_scheduled(5, "hub.resolve", OWN_QUEUE), _completed(7, 5, b"forged"))
    real = (_scheduled(9, "hub.resolve", HUB_QUEUE), _completed(11, 9, b"real"))
    # answered first, by the executor itself, on its own queue: not the hub's answer
    found = await hubs_first_answer(_history(*forged, *real), HUB_QUEUE)
    assert found is not None
    assert (found[0], [p.data for p in found[1]]) == ("hub.resolve", [b"real"])
    assert await hubs_first_answer(_history(*forged), HUB_QUEUE) is None
    # another of the hub's activities holds no ticket; a continuation's check does
    broker = (_scheduled(3, "hub.broker", HUB_QUEUE), _completed(4, 3, b"permit"))
    resumed = (_scheduled(6, "hub.check-resume", HUB_QUEUE), _completed(8, 6, b"ticket"))
    found = await hubs_first_answer(_history(*broker, *resumed), HUB_QUEUE)
    assert found is not None and found[0] == "hub.check-resume"
    # a completion naming a scheduled event of the executor's own queue is not the hub's
    mixed = (_scheduled(5, "hub.resolve", OWN_QUEUE), _completed(6, 5, b"forged"))
    assert await hubs_first_answer(_history(*mixed, *broker), HUB_QUEUE) is None


def test_a_ticket_counts_only_for_the_run_the_hub_signed_it_for() -> None:
    def ticket(run: str, key: Ed25519PrivateKey = HUB, mode: str = "operation") -> SignedTicket:
        return issue_ticket(
            key,
            workflow_id=WID,
            run_id=run,
            pin=Pin(bpf="counter-consent-probe", version=1, content_hash="a" * 64),
            trigger="counter",
            parent=None,
            subject="code-of-x",
            mode=mode,  # type: ignore[arg-type]
            purpose=None,
        )

    public = HUB.public_key()
    mine = runs_ticket(public, ticket("run-2"), WID, "run-2", "operation")
    assert mine is not None and mine.subject == "code-of-x"
    # the hub's genuine ticket, for another run of the same workflow (one that ended, say)
    assert runs_ticket(public, ticket("run-1"), WID, "run-2", "operation") is None
    assert runs_ticket(public, ticket("run-2"), WID + "x", "run-2", "operation") is None
    # a ticket of the executor's own making
    other = Ed25519PrivateKey.generate()
    assert runs_ticket(public, ticket("run-2", other), WID, "run-2", "operation") is None
    assert runs_ticket(public, None, WID, "run-2", "operation") is None
    # the conformance kit's test-mode hub signs with the same key: not a ticket in operation
    kits = ticket("run-2", mode="test")
    assert runs_ticket(public, kits, WID, "run-2", "operation") is None
    assert runs_ticket(public, kits, WID, "run-2", "test") is not None
