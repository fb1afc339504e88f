"""Contact states, campaign statuses and the one table of legal transitions for each.

Every write of a state goes through :func:`contact_transition` / :func:`campaign_transition`
(the repository builds its SQL ``WHERE state IN (...)`` guards from these same tables), so a
transition that is not listed here can never be applied.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum

from campaigns.domain.refusals import Refusal, RefusalKind


class ContactState(StrEnum):
    INITIAL = "initial"
    INVALID_RECORD = "invalid_record"
    IN_PROGRESS = "in_progress"
    RETRY_SCHEDULED = "retry_scheduled"
    SENT = "sent"
    DELIVERED = "delivered"
    READ = "read"
    DELIVERY_FAILED = "delivery_failed"
    SENDING_FAILED = "sending_failed"
    ERROR = "error"
    REMOVED = "removed"
    CANCELED_BY_ADMIN = "canceled_by_admin"

    @property
    def label(self) -> str:
        """The name operators know from the campaign seed ("Canceled by admin")."""
        return _CONTACT_LABELS[self]


_CONTACT_LABELS: Mapping[ContactState, str] = {
    ContactState.INITIAL: "Initial",
    ContactState.INVALID_RECORD: "Invalid record",
    ContactState.IN_PROGRESS: "In progress",
    ContactState.RETRY_SCHEDULED: "Retry scheduled",
    ContactState.SENT: "Sent",
    ContactState.DELIVERED: "Delivered",
    ContactState.READ: "Read",
    ContactState.DELIVERY_FAILED: "Delivery failed",
    ContactState.SENDING_FAILED: "Sending failed",
    ContactState.ERROR: "Error",
    ContactState.REMOVED: "Removed",
    ContactState.CANCELED_BY_ADMIN: "Canceled by admin",
}

C = ContactState

CONTACT_TRANSITIONS: Mapping[ContactState, frozenset[ContactState]] = {
    # Sending failed without a send: a --check-contacts campaign's check found no WhatsApp
    # account for the number (reason code not_on_whatsapp), before the first send.
    C.INITIAL: frozenset({C.IN_PROGRESS, C.REMOVED, C.CANCELED_BY_ADMIN, C.SENDING_FAILED}),
    C.INVALID_RECORD: frozenset(),
    # Back to Initial / Retry scheduled: a pause released a claim that was never sent.
    C.IN_PROGRESS: frozenset(
        {
            C.SENT,
            C.RETRY_SCHEDULED,
            C.SENDING_FAILED,
            C.ERROR,
            C.INITIAL,
            C.DELIVERED,
            C.READ,
            C.DELIVERY_FAILED,
        }
    ),
    # Sent/Delivered/Read/Delivery failed: a status webhook of the contact's current attempt
    # proves the platform took a send whose answer was an error (a 5xx after acceptance);
    # settling it stops the retry from messaging the person twice.
    C.RETRY_SCHEDULED: frozenset(
        {
            C.IN_PROGRESS,
            C.ERROR,
            C.REMOVED,
            C.CANCELED_BY_ADMIN,
            C.SENT,
            C.DELIVERED,
            C.READ,
            C.DELIVERY_FAILED,
        }
    ),
    C.SENT: frozenset({C.DELIVERED, C.READ, C.DELIVERY_FAILED}),
    C.DELIVERED: frozenset({C.READ}),
    C.READ: frozenset(),
    C.DELIVERY_FAILED: frozenset(),
    # An operator's retry (``wa-campaigns retry``, ``POST /campaigns/{id}/retry``): the only
    # way out of these two, never taken by dispatch or a webhook.
    C.SENDING_FAILED: frozenset({C.RETRY_SCHEDULED}),
    C.ERROR: frozenset({C.RETRY_SCHEDULED}),
    C.REMOVED: frozenset(),
    C.CANCELED_BY_ADMIN: frozenset(),
}
"""In progress may also go straight to Delivered/Read/Delivery failed: a status webhook can
settle an attempt whose worker died (or has not committed Sent yet) after the platform took it."""

RETRYABLE_CONTACT_STATES: frozenset[ContactState] = frozenset({C.ERROR, C.SENDING_FAILED})
"""The states an operator's retry moves back to Retry scheduled (and nothing else does)."""

TERMINAL_CONTACT_STATES: frozenset[ContactState] = frozenset(
    s
    for s, targets in CONTACT_TRANSITIONS.items()
    if not targets or (s in RETRYABLE_CONTACT_STATES and targets == {C.RETRY_SCHEDULED})
)
"""Final for dispatch and webhooks: no transition leaves them but an operator's retry."""
PENDING_CONTACT_STATES: frozenset[ContactState] = frozenset(
    {C.INITIAL, C.IN_PROGRESS, C.RETRY_SCHEDULED}
)
"""A campaign with none of these left has nothing more to send."""


class CampaignStatus(StrEnum):
    DRAFT = "draft"
    SCHEDULED = "scheduled"
    RUNNING = "running"
    PAUSED = "paused"
    COMPLETED = "completed"
    CANCELLED = "cancelled"


S = CampaignStatus

AUTO_PAUSE_PREFIX = "paused automatically"
"""How the status reason of a campaign that paused itself (bad template, token, account)
starts; monitoring and alerts tell these from an operator's pause by it."""

CAMPAIGN_TRANSITIONS: Mapping[CampaignStatus, frozenset[CampaignStatus]] = {
    S.DRAFT: frozenset({S.SCHEDULED, S.RUNNING, S.CANCELLED}),
    S.SCHEDULED: frozenset({S.RUNNING, S.DRAFT, S.CANCELLED}),
    S.RUNNING: frozenset({S.PAUSED, S.COMPLETED, S.CANCELLED}),
    S.PAUSED: frozenset({S.RUNNING, S.CANCELLED, S.COMPLETED}),
    # retry: failed contacts of a completed campaign are queued again.
    S.COMPLETED: frozenset({S.RUNNING}),
    S.CANCELLED: frozenset(),
}


class IllegalTransition(Refusal, ValueError):
    """A state change that the tables do not allow; it is refused, never applied."""

    default_kind = RefusalKind.CONFLICT

    def __init__(self, what: str, current: str, target: str) -> None:
        super().__init__("illegal_transition", f"illegal {what} transition {current} -> {target}")
        self.what = what
        self.current = current
        self.target = target


def contact_transition(current: ContactState, target: ContactState) -> ContactState:
    if target not in CONTACT_TRANSITIONS[current]:
        raise IllegalTransition("contact", current, target)
    return target


def campaign_transition(current: CampaignStatus, target: CampaignStatus) -> CampaignStatus:
    if target not in CAMPAIGN_TRANSITIONS[current]:
        raise IllegalTransition("campaign", current, target)
    return target


def contact_sources(target: ContactState) -> frozenset[ContactState]:
    """States from which ``target`` may be reached: the guard of a set-based UPDATE."""
    return frozenset(s for s, targets in CONTACT_TRANSITIONS.items() if target in targets)
