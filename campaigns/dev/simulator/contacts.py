"""The on-premises / BSP contacts endpoint, ``POST /v1/contacts`` (seeds 002, 004).

Two modes (``contacts_mode``, changeable at run time):

- ``classic`` (seed 002): ``invalid`` for a number the simulator would refuse as not on
  WhatsApp (its send outcome is 131026 / 1013, at once or by a later ``failed`` webhook),
  else ``valid`` with its ``wa_id``; under ``blocking: no_wait`` a number it has not checked
  before answers ``processing`` (the next call has its answer);
- ``repurposed`` (seed 004, v2.43 on): ``valid`` with a ``wa_id`` for every number.

An input without digits (or too few) is ``failed``. Every number of every request counts
in ``contacts_checked_total`` (``/_sim/stats``), requests in ``contacts_requests_total``.
"""

from __future__ import annotations

from typing import Any

from campaigns.dev.simulator.outcomes import OutcomeKind, OutcomeRules, outcome_for, wa_id_for

MODES = ("classic", "repurposed")
NOT_ON_WHATSAPP = frozenset({131026, 1013})


def on_whatsapp(digits: str, rules: OutcomeRules) -> bool:
    """Whether a send to it would reach an account (classic mode's answer)."""
    outcome = outcome_for(digits, rules, 1)
    if outcome.kind is OutcomeKind.UNDELIVERABLE_LATER:
        return False
    return not (outcome.code in NOT_ON_WHATSAPP and not outcome.accepted)


def answer(
    item: Any, *, mode: str, rules: OutcomeRules, wait: bool, seen: set[str]
) -> dict[str, Any]:
    """One item of the answer; ``seen``: numbers checked before (no_wait answers them)."""
    text = str(item)
    digits = "".join(ch for ch in text if ch.isdigit())
    if len(digits) < 6 or not isinstance(item, str | int):
        return {"input": item, "status": "failed"}
    if mode == "repurposed":
        return {"input": item, "status": "valid", "wa_id": wa_id_for(digits, rules)}
    if not wait and digits not in seen:
        seen.add(digits)
        return {"input": item, "status": "processing"}
    seen.add(digits)
    if not on_whatsapp(digits, rules):
        return {"input": item, "status": "invalid"}
    return {"input": item, "status": "valid", "wa_id": wa_id_for(digits, rules)}
