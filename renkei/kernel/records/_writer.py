"""Group commit of records written unchained: concurrent linkages share one transaction."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import asyncpg

from renkei.kernel import telemetry
from renkei.kernel.records._chain import (
    AccessRecord,
    RecordSigner,
    append_unchained_many,
    write,
)

# How long a group's statement may take before its calls are written each on its own: it takes
# milliseconds, unless it waits on a row another transaction holds, which must hold back only
# the call whose record conflicts with it.
GROUP_WAIT = 2.0

_Call = tuple[Sequence[AccessRecord], RecordSigner | None, "asyncio.Future[list[AccessRecord]]"]


class GroupWriter:
    """Writes records unchained (:func:`append_unchained`) for many concurrent callers, in as
    few durable commits as the database's pace allows.

    A call waits until the statement writing its records has committed (a group is one
    statement: no transaction around it), as a call of :func:`write` does; calls made while one
    group commits go together in the next (no timer: an idle writer commits a lone call at
    once). A call is still all of its records or
    none: when one call of a group is refused, or the group's statement waits longer than
    :data:`GROUP_WAIT` (on a row another transaction holds), nothing of the group is written and each
    of its calls is written on its own, apart from the groups after it, so only that call fails
    or waits.
    """

    def __init__(self, pool: asyncpg.Pool, *, most: int = 500, wait: float = GROUP_WAIT) -> None:
        self._pool = pool
        self._most = most
        self._wait = wait
        self._alone_tasks: set[asyncio.Task[None]] = set()
        self._waiting: list[_Call] = []
        self._flusher: asyncio.Task[None] | None = None
        self.commits = 0  # groups committed together (calls written alone not counted)

    async def write(
        self, *records: AccessRecord, signer: RecordSigner | None = None
    ) -> list[AccessRecord]:
        done: asyncio.Future[list[AccessRecord]] = asyncio.get_running_loop().create_future()
        self._waiting.append((records, signer, done))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        return await done

    async def _flush(self) -> None:
        while self._waiting:
            group, self._waiting = self._waiting[: self._most], self._waiting[self._most :]
            try:
                async with self._pool.acquire() as conn:  # one statement, its own commit
                    async with asyncio.timeout(self._wait):  # cancelled in the database too
                        answers, new = await append_unchained_many(
                            conn, [(records, signer) for records, signer, _ in group]
                        )
            except (
                PermissionError,
                TimeoutError,
                asyncpg.DataError,
                asyncpg.IntegrityConstraintViolationError,
            ):
                # One call refused (by the writer, or by the database for what one of its
                # records holds: a value past a column's bound, a character text cannot hold),
                # or the group waiting on a row another transaction holds (a record an org's
                # role has not committed, under an attempt key of the group): each call on its
                # own, apart from the groups after it, so only that one fails or waits.
                for call in group:
                    task = asyncio.create_task(self._alone(call))
                    self._alone_tasks.add(task)
                    task.add_done_callback(self._alone_tasks.discard)
                continue
            except Exception as e:  # the database away: every call of the group hears it
                for *_, done in group:
                    if not done.done():
                        done.set_exception(e)
                continue
            self.commits += 1
            telemetry.count_records([r.keeper for r in new])
            for (*_, done), answer in zip(group, answers, strict=True):
                if not done.done():  # a caller cancelled meanwhile: its records stand
                    done.set_result(answer)

    async def _alone(self, call: _Call) -> None:
        records, signer, done = call
        try:
            answer = await write(self._pool, *records, signer=signer, deferred=True)
        except Exception as e:
            if not done.done():
                done.set_exception(e)
        else:
            if not done.done():
                done.set_result(answer)
