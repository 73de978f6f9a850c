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

_Call = tuple[Sequence[AccessRecord], RecordSigner | None, "asyncio.Future[list[AccessRecord]]"]


class GroupWriter:
    """Writes records unchained (:func:`append_unchained`) for many concurrent callers, in as
    few durable commits as the database's pace allows.

    A call waits until the transaction holding its records has committed, as a call of
    :func:`write` does; calls made while one transaction commits go together in the next (no
    timer: an idle writer commits a lone call at once). A call is still all of its records or
    none: when one call of a group is refused, the group is rolled back and each of its calls
    is written on its own, so only that call fails.
    """

    def __init__(self, pool: asyncpg.Pool, *, most: int = 500) -> None:
        self._pool = pool
        self._most = most
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
                async with self._pool.acquire() as conn, conn.transaction():
                    answers, new = await append_unchained_many(
                        conn, [(records, signer) for records, signer, _ in group]
                    )
            except PermissionError:  # one call refused: each on its own, only that one fails
                await asyncio.gather(*(self._alone(call) for call in group))
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
