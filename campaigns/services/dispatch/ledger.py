"""The send ledger's start statements, shared by every chain of a process (one event loop).

Before a gate group's requests leave, one statement marks its attempts started in Postgres
and commits synchronously (``storage.dispatch.StartStatements``: its own asyncio
connection, no thread hop); only the attempts it returns as started are sent. The same
statement is the contact registry's send-time check: a contact whose person is refused now
ends Sending failed there, with the reason code, and is never sent. Groups of several chains
that reach that point while a statement is running go together in the next one (a group
commit: no added wait, fewer commits when many campaigns run). A group is never split
across statements and each chain has at most one group waiting here, so after a pause
commits at most one group per chain still goes out.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence

from sqlalchemy import Engine

from campaigns.domain.dispatch import Starts
from campaigns.storage import dispatch as dispatch_db

Pairs = Sequence[tuple[int, uuid.UUID]]


class StartLedger:
    """Start statements of one event loop, group-committed (module docstring)."""

    def __init__(self, engine: Engine) -> None:
        self.statements = dispatch_db.StartStatements(engine)
        self._waiting: list[tuple[Pairs, asyncio.Future[Starts]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def start(self, attempts: Pairs) -> Starts:
        """Starts these (contact id, attempt id) pairs, or refuses them for the registry
        (``Starts``). Raises if the statement failed (nothing of the group may be sent)."""
        if not attempts:
            return Starts()
        future: asyncio.Future[Starts] = asyncio.get_running_loop().create_future()
        self._waiting.append((attempts, future))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write())
        return await future

    async def _write(self) -> None:
        while self._waiting:
            groups, self._waiting = self._waiting, []
            pairs = [pair for attempts, _ in groups for pair in attempts]
            try:
                started = await self.statements.start(pairs)
            except Exception as exc:  # every group of the statement learns it failed
                for _, future in groups:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for attempts, future in groups:
                if not future.done():
                    future.set_result(_share(started, attempts))

    async def close(self) -> None:
        """Closes its connection once no statement runs (a chain of its own, a dispatcher
        stopping)."""
        if self._writer is not None:
            await asyncio.gather(self._writer, return_exceptions=True)
        await self.statements.close()


def _share(starts: Starts, attempts: Pairs) -> Starts:
    """One group's part of a statement that held several groups."""
    ids = {i for i, _ in attempts}
    return Starts(starts.started & ids, {i: code for i, code in starts.refused.items() if i in ids})
