"""What can happen to a case. Decisions (workflows/decisions.py) return these; `apply`
(workflows/evolve.py) turns each into state changes, a timeline line and the notices it sends.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from workflows.models import Action, ApprovalDecision, TimelineEntry
from workflows.state import Clock


@dataclass(frozen=True, slots=True)
class Acknowledged:
    by: str
    via: str | None = None  # which way the message came


@dataclass(frozen=True, slots=True)
class Resolved:
    by: str
    resolution: str
    root_cause: str | None = None
    via: str | None = None  # which way the message came


@dataclass(frozen=True, slots=True)
class Escalated:
    """Up one tier in the same department (hierarchical)."""

    by: str | None
    reason: str
    automatic: bool = False
    via: str | None = None  # which way the message came


@dataclass(frozen=True, slots=True)
class Transferred:
    """To another department at the same tier (functional)."""

    by: str
    department: str
    reason: str
    via: str | None = None  # which way the message came


@dataclass(frozen=True, slots=True)
class ApprovalRequested:
    by: str
    action: Action
    approvers: list[str]
    notified: list[str]
    due_by: datetime
    via: str | None = None  # which way the message came


@dataclass(frozen=True, slots=True)
class ApprovalEscalated:
    """Nobody decided in time: the next tier of approvers is asked."""

    waited_on: list[str]
    notified: list[str]
    due_by: datetime


@dataclass(frozen=True, slots=True)
class ApprovalDecided:
    decision: ApprovalDecision
    by: str | None
    note: str
    via: str | None = None


@dataclass(frozen=True, slots=True)
class WaitingForCustomer:
    by: str
    question: str
    via: str | None = None  # which way the message came


@dataclass(frozen=True, slots=True)
class CustomerReplied:
    message: str


@dataclass(frozen=True, slots=True)
class CustomerAskedAtTop:
    """The customer asked to escalate a case already at the top tier."""

    reason: str


@dataclass(frozen=True, slots=True)
class MessageIgnored:
    """An invalid signal: noted in the timeline, otherwise ignored."""

    name: str
    reason: str


@dataclass(frozen=True, slots=True)
class SlaWarned:
    clock: Clock
    deadline: datetime
    silent: bool = False  # came due with its deadline passed too: the breach speaks


@dataclass(frozen=True, slots=True)
class SlaBreached:
    clock: Clock
    deadline: datetime
    top_tier: bool  # nowhere left to escalate: the case is reported up and stays open


@dataclass(frozen=True, slots=True)
class CustomerUpdated:
    pass


@dataclass(frozen=True, slots=True)
class HardCapReached:
    pass


@dataclass(frozen=True, slots=True)
class AssignmentStarted:
    """The pick of the next person begins; its timeline line is reserved now."""


@dataclass(frozen=True, slots=True)
class Assigned:
    assignee: str
    entry: TimelineEntry  # written by the assignment, which knows who and their load


@dataclass(frozen=True, slots=True)
class ReportedUp:
    recipients: list[str]
    # resolved, with a reopen window: the case stays open (stage `resolved`) until then
    window_until: datetime | None = None


@dataclass(frozen=True, slots=True)
class Renotified:
    """The assignee has not acknowledged: page them again."""

    person: str
    page: int
    due_at: datetime  # the next page counts from the schedule, not from a late wake-up


@dataclass(frozen=True, slots=True)
class FeedbackGiven:
    score: int
    comment: str


@dataclass(frozen=True, slots=True)
class Reopened:
    """Back to the tier and department that resolved it, with fresh clocks."""

    by: str
    reason: str
    via: str | None = None  # which way the message came


@dataclass(frozen=True, slots=True)
class WindowClosed:
    """The reopen window ended: the case closes."""


@dataclass(frozen=True, slots=True)
class Deescalated:
    """A supervisor hands the case back down a tier."""

    by: str
    reason: str
    via: str | None = None  # which way the message came


Event = (
    Acknowledged
    | Resolved
    | Escalated
    | Transferred
    | ApprovalRequested
    | ApprovalEscalated
    | ApprovalDecided
    | WaitingForCustomer
    | CustomerReplied
    | CustomerAskedAtTop
    | MessageIgnored
    | SlaWarned
    | SlaBreached
    | CustomerUpdated
    | HardCapReached
    | AssignmentStarted
    | Assigned
    | ReportedUp
    | Renotified
    | FeedbackGiven
    | Reopened
    | WindowClosed
    | Deescalated
)
