"""The kit's clock: a scenario's time passes only when the kit moves it.

A kit run (resolved by the kit's own test-mode hub) waits and sleeps on this clock, never on a
timer: its waits end when answered, or when the kit moves the run's clock past their deadline
(the ``renkei.kit.advance`` update, which every other run refuses). A stub provider's scripted
delay is on the same clock. The kit moves the clock only when the scenario's flows are quiet:
no workflow task and no activity in flight except stubs parked on the clock, in two snapshots
alike; and then only to the first thing due. So what happens first is what is due first, on an
idle machine as on a loaded one.
"""

from __future__ import annotations

import asyncio
import datetime as dt

from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError

from renkei.contracts.messages import KitAdvance, KitClock


class StubClock:
    """The scenario's time for its stub providers' delays."""

    def __init__(self, now: dt.datetime) -> None:
        self.now = now
        self._parked: list[tuple[dt.datetime, asyncio.Event]] = []

    @property
    def parked(self) -> int:
        """How many stubs wait on the clock."""
        return len(self._parked)

    def due(self) -> list[dt.datetime]:
        return [due for due, _ in self._parked]

    async def delay(self, span: dt.timedelta) -> None:
        """Return once the kit has moved the clock ``span`` past now."""
        entry = (self.now + span, asyncio.Event())
        self._parked.append(entry)
        try:
            await entry[1].wait()
        finally:
            self._parked.remove(entry)

    def advance(self, to: dt.datetime) -> None:
        self.now = max(self.now, to)
        for due, event in self._parked:
            if due <= self.now:
                event.set()

    def release_all(self) -> None:
        """The scenario is over: no stub stays parked."""
        for _, event in self._parked:
            event.set()


async def _snapshot(client: Client, root: str) -> tuple[list[tuple[str, int]], int, bool] | None:
    """The open flows under ``root`` with their history lengths, how many activities they have
    in flight, and whether any has a workflow task to do; None if one could not be read."""
    seen: list[tuple[str, int]] = []
    activities = 0
    todo = [root]
    busy = False
    while todo:
        wid = todo.pop(0)
        try:
            desc = await client.get_workflow_handle(wid).describe()
        except RPCError:
            return None  # a child being started: not quiet yet
        if desc.status != WorkflowExecutionStatus.RUNNING:
            continue
        raw = desc.raw_description
        seen.append((wid, raw.workflow_execution_info.history_length))
        busy = busy or raw.HasField("pending_workflow_task")
        activities += len(raw.pending_activities)
        todo += [c.workflow_id for c in raw.pending_children]
    return seen, activities, busy


async def quiet_due(client: Client, root: str, stubs: StubClock) -> dt.datetime | None:
    """When the flows under ``root`` are quiet, the first time anything of theirs is due (a
    wait's reminder or deadline, a sleep's end, a stub's delay); else None."""
    first = await _snapshot(client, root)
    if first is None or first[2] or first[1] != stubs.parked or not first[0]:
        return None
    due = stubs.due()
    for wid, _ in first[0]:
        try:
            clock = await client.get_workflow_handle(wid).query(
                "renkei.kit.clock", result_type=KitClock
            )
        except RPCError:
            return None
        due += clock.due
    if await _snapshot(client, root) != first:
        return None  # something moved while it was read
    return min(due) if due else None


async def advance(client: Client, root: str, stubs: StubClock, to: dt.datetime) -> None:
    """Move the clock of the flows under ``root`` and of the stubs to ``to``."""
    stubs.advance(to)
    found = await _snapshot(client, root)
    for wid, _ in found[0] if found else [(root, 0)]:
        try:
            await client.get_workflow_handle(wid).execute_update(
                "renkei.kit.advance", KitAdvance(to=to), result_type=KitClock
            )
        except RPCError:  # it ended meanwhile
            continue
