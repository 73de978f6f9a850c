"""State kept current by PostgreSQL LISTEN/NOTIFY: one listening connection for every channel.

Writers change their rows in one transaction with a bump of a version and a ``NOTIFY`` on their
channel (the whitelist's rows and the org registry on ``renkei_whitelist``, the PIAs and
suspensions on ``renkei_controls``). A :class:`Listener` holds one connection that listens on the
channel of each :class:`Followed` state given to it; a notification reloads that state on the
connection, and a reconnection (after the connection dropped: a notification may have been
missed) reloads them all. Decisions read the state in memory, an attribute swap away from the
newest rows; they never wait on the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence

import asyncpg

from renkei.kernel.db import APP_ROLE, connect

log = logging.getLogger(__name__)
# What a reload may meet on a connection going away: logged, the state kept as it was.
_DB_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError)


class Followed:
    """One state a :class:`Listener` keeps current: what it reloads on its channel's notice."""

    channel: str  # the NOTIFY channel its writers send on
    what: str  # how the log names it

    def __init__(self) -> None:
        self._changed = asyncio.Event()
        self._following = True
        self._pending = False  # a reload queued and not yet begun

    @property
    def version(self) -> int:
        """The version of the rows the state holds now."""
        raise NotImplementedError

    async def load(self, conn: asyncpg.Connection) -> None:
        """Read the state afresh on ``conn`` and swap it in if it is not older than the one held."""
        raise NotImplementedError

    def freeze(self) -> None:
        """Stop following changes: the state stays as it is now (the listener goes on for the
        others)."""
        self._following = False

    async def wait_for_version(self, version: int, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        """Block until the state reflects at least ``version`` (used after a write)."""
        async with asyncio.timeout(timeout):
            while self.version < version:
                self._changed.clear()
                await self._changed.wait()


class Listener:
    """One connection listening on the channel of each state in ``followed``.

    If the listening connection drops it reconnects and reloads every state.
    """

    def __init__(
        self, dsn: str, followed: Sequence[Followed], *, role: str | None = APP_ROLE
    ) -> None:
        self._dsn = dsn
        self._role = role
        self._followed = list(followed)
        self._conn: asyncpg.Connection | None = None
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        # one reload at a time on the listening connection (notifications come in bursts)
        self._reloading = asyncio.Lock()

    async def start(self) -> None:
        """Load every state and start listening for changes; raises if the first load fails."""
        self._task = asyncio.create_task(self._run(), name="renkei-live-listener")
        waiter = asyncio.create_task(self._ready.wait())
        done, _ = await asyncio.wait({waiter, self._task}, return_when=asyncio.FIRST_COMPLETED)
        if self._task in done:
            waiter.cancel()
            self._task.result()

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self._conn is not None and not self._conn.is_closed():
            await self._conn.close()

    def _notified(self, _conn: object, _pid: object, channel: str, _payload: object) -> None:
        for state in self._followed:
            # One reload queued per state at most: a reload reads everything there is, so a
            # burst of notices (anyone may send them) costs one reload, not one each.
            if state.channel == channel and not state._pending:
                state._pending = True
                asyncio.get_running_loop().create_task(self._reload(state))

    async def _reload(self, state: Followed) -> None:
        try:
            async with self._reloading:
                state._pending = False  # a notice from now on queues another reload
                if self._conn is None or self._conn.is_closed() or not state._following:
                    return
                await state.load(self._conn)
        except _DB_ERRORS as err:
            log.warning("%s reload failed, keeping version %s: %s", state.what, state.version, err)
            return
        state._changed.set()

    async def _run(self) -> None:
        while True:
            try:
                self._conn = await connect(self._dsn, role=self._role)
                for channel in sorted({s.channel for s in self._followed}):
                    await self._conn.add_listener(channel, self._notified)
                async with self._reloading:
                    for state in self._followed:
                        if state._following:
                            await state.load(self._conn)
                for state in self._followed:
                    state._changed.set()
                self._ready.set()
                # asyncpg reports a lost connection only through is_closed(); poll it.
                while not self._conn.is_closed():  # noqa: ASYNC110
                    await asyncio.sleep(1.0)
            except asyncio.CancelledError:
                raise
            except (asyncpg.PostgresError, OSError) as err:
                if not self._ready.is_set():
                    raise
                log.warning("the live listener lost its connection, retrying: %s", err)
                await asyncio.sleep(1.0)
