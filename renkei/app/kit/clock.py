"""The kit's clock: a scenario's time passes only when the kit moves it.

A kit run (resolved by the kit's own test-mode hub) waits and sleeps on this clock, never on a
timer: its waits end when answered, or when the kit moves the run's clock past their deadline
(the ``renkei.kit.advance`` update, which every other run refuses). Every stub provider answers
on the same clock: it parks until its scripted delay (none: now) has passed, and the kit lets
the stubs answer one at a time. The kit acts only when the scenario's flows are quiet: no
workflow task and no activity in flight except stubs parked on the clock, in two snapshots
alike; then it lets the first thing due happen, and only that — the stub due first (by due
time, then step, provider and item), or else the flows' first timer. So what happens first is
what is due first, in the same order on an idle machine as on a loaded one.

A linkage over the direct channel is a local activity, which the server does not show (and
while one runs, the worker holds the flow's workflow task open): the kit's own control workers
tell what they are doing with its flows (:class:`~renkei.app.kit.watch.FlowWatch`), and a
flow whose local activities are all parked at their stubs is quiet like one whose activities
are.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError

from renkei.app.client import RPC_TIMEOUT
from renkei.app.kit.watch import FlowWatch
from renkei.contracts.messages import KitAdvance, KitClock, Waiting


@dataclass(eq=False)
class _Parked:
    due: dt.datetime
    key: str
    event: asyncio.Event = field(default_factory=asyncio.Event)


class StubClock:
    """The scenario's time for its stub providers: each answers when the kit lets it."""

    def __init__(self, now: dt.datetime) -> None:
        self.now = now
        self._parked: list[_Parked] = []
        # what the kit's control workers do with the scenario's flows (they run them watched)
        self.watch = FlowWatch()

    @property
    def parked(self) -> int:
        """How many stubs wait on the clock."""
        return len(self._parked)

    def parked_steps(self) -> list[str]:
        """The steps of the stubs waiting on the clock (a stub's key starts with its step)."""
        return [p.key.split("/", 1)[0] for p in self._parked]

    def first(self) -> _Parked | None:
        """The stub due first (ties: by key), if any waits."""
        return min(self._parked, key=lambda p: (p.due, p.key), default=None)

    async def delay(self, span: dt.timedelta, key: str) -> None:
        """Return once the kit lets this stub (``key``: its step, provider, item) answer, no
        sooner than ``span`` after now on the clock."""
        entry = _Parked(self.now + span, key)
        self._parked.append(entry)
        try:
            await entry.event.wait()
        finally:
            self._parked.remove(entry)

    def release(self, entry: _Parked) -> None:
        """Let one stub answer, the clock moved to its time."""
        self.now = max(self.now, entry.due)
        entry.event.set()

    def advance(self, to: dt.datetime) -> None:
        self.now = max(self.now, to)

    def release_all(self) -> None:
        """The scenario is over: no stub stays parked."""
        for entry in self._parked:
            entry.event.set()


async def _snapshot(
    client: Client, root: str, stubs: StubClock
) -> tuple[list[tuple[str, int, int]], int, bool] | None:
    """The open flows under ``root`` (each with its history length, or -1 while its worker
    holds its task for a local activity, and how many activations its worker ran), how many
    activities they have in flight (the server's and the local ones), and whether any has
    something to do; None if one could not be read."""
    watch = stubs.watch
    parked = stubs.parked_steps()
    seen: list[tuple[str, int, int]] = []
    activities = 0
    todo = [root]
    busy = watch.running
    while todo:
        wid = todo.pop(0)
        try:
            desc = await client.get_workflow_handle(wid).describe()
        except RPCError:
            return None  # a child being started: not quiet yet
        if desc.status != WorkflowExecutionStatus.RUNNING:
            continue
        raw = desc.raw_description
        flow = watch.state(wid)
        # While a local activity runs, the worker holds the flow's task open: a task in flight
        # is then the worker's waiting, not work to do, if every local activity is parked.
        held = bool(flow.local)
        busy = (
            busy
            or (raw.HasField("pending_workflow_task") and not held)
            or any(step not in parked for step in flow.local.values())
        )
        # An activity the flow asked for is in flight on the server until the flow is given its
        # end: one asked for and not on the server (not sent yet, or ended and not yet given to
        # the flow) is something to do.
        shown = {a.activity_id for a in raw.pending_activities}
        busy = busy or any(a not in shown for a in flow.remote.values())
        length = -1 if held else raw.workflow_execution_info.history_length
        seen.append((wid, length, flow.activations))
        activities += len(raw.pending_activities) + len(flow.local)
        todo += [c.workflow_id for c in raw.pending_children]
    return seen, activities, busy


async def quiet_due(client: Client, root: str, stubs: StubClock) -> list[dt.datetime] | None:
    """When the flows under ``root`` are quiet, when their waits and sleeps are due (a wait's
    reminder or deadline, a sleep's end); else None."""
    first = await _snapshot(client, root, stubs)
    if first is None or first[2] or first[1] != stubs.parked or not first[0]:
        return None
    due: list[dt.datetime] = []
    for wid, *_ in first[0]:
        clock = await _read_clock(client, wid, stubs)
        if clock is None:
            return None
        due += clock.due
    if await _snapshot(client, root, stubs) != first:
        return None  # something moved while it was read
    return due


async def read(client: Client, wid: str, stubs: StubClock, query: str, result_type: Any) -> Any:
    """``wid``'s answer to ``query``, read in the process from its instance in the kit's worker,
    or else by a query through the server (which waits while the worker holds the flow's task
    open for a local activity). Raises :class:`RPCError` if the server cannot answer, in
    :data:`RPC_TIMEOUT` at most (the kit then tries again)."""
    found = await asyncio.to_thread(stubs.watch.read, wid, query)
    if found is not None:
        return client.data_converter.payload_converter.from_payloads([found], [result_type])[0]
    return await client.get_workflow_handle(wid).query(
        query, result_type=result_type, rpc_timeout=RPC_TIMEOUT
    )


async def _read_clock(client: Client, wid: str, stubs: StubClock) -> KitClock | None:
    try:
        clock = await read(client, wid, stubs, "renkei.kit.clock", KitClock)
    except RPCError:
        return None
    return clock if isinstance(clock, KitClock) else None


async def next_event(
    client: Client, root: str, stubs: StubClock, awaited: str | None = None
) -> bool:
    """If the flows under ``root`` are quiet, let the first thing due happen: the stub due
    first, or else the flows' first wait or sleep. Whether anything happened. With ``awaited``
    (the step the script answers next), nothing happens while ``root`` waits there: its answer
    is given first. (The script reads the waits before it looks for something due, and the
    flow may come to the wait in between: quiet there, its deadline would be the first thing
    due, and the kit would end the wait the script was about to answer.)"""
    due = await quiet_due(client, root, stubs)
    if due is None:
        return False
    if awaited is not None:
        try:
            waits = await read(client, root, stubs, "renkei.waiting", list[Waiting])
        except RPCError:
            return False
        if any(w.step == awaited for w in waits):
            return True  # the script answers it on its next turn
    stub = stubs.first()
    if stub is not None and (not due or stub.due <= min(due)):
        stubs.release(stub)
        return True
    if due:
        await advance(client, root, stubs, min(due))
        return True
    return False


async def advance(client: Client, root: str, stubs: StubClock, to: dt.datetime) -> None:
    """Move the clock of the flows under ``root`` and of the stubs to ``to``."""
    stubs.advance(to)
    found = await _snapshot(client, root, stubs)
    for wid in [f[0] for f in found[0]] if found else [root]:
        try:
            await client.get_workflow_handle(wid).execute_update(
                "renkei.kit.advance", KitAdvance(to=to), result_type=KitClock
            )
        except RPCError:  # it ended meanwhile
            continue
