"""The contact registry at send time: one statement per gate group, right after it opened.

A contact whose person became unavailable, blocked or opted out after its upload (or has no
opt-in while its campaign requires one) ends Sending failed with that reason code and no
request is made for it: a STOP applied before a contact's group opens stops that contact,
even when its batch was claimed 20 s or more ahead at a low rate.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from sqlalchemy import Engine

from campaigns.domain.dispatch import ClaimedContact
from campaigns.storage import registry as registry_db


class SendTimeCheck:
    """:class:`~campaigns.services.dispatch.ports.PeopleCheck` on Postgres."""

    def __init__(self, engine: Engine, *, require_opt_in: bool) -> None:
        self.engine = engine
        self.require_opt_in = require_opt_in

    def refuse_now(self, group: Sequence[ClaimedContact]) -> dict[int, str]:
        attempts = [registry_db.GroupAttempt(c.id, str(c.attempt_id)) for c in group]
        with self.engine.begin() as conn:
            return registry_db.refuse_at_send(conn, attempts, require_opt_in=self.require_opt_in)

    async def refuse(self, group: Sequence[ClaimedContact]) -> dict[int, str]:
        return await asyncio.to_thread(self.refuse_now, group)
