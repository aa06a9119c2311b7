"""The one state of a case: what it knows, at which stage, and what it still has to record.

`Opening` is the case between its start and identify (no policy yet); `CaseState` is the case
from identify on, with every field it decides by non-optional. Only the functions in
`workflows/evolve.py` change a state; everything else reads it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from workflows.activity_models import OutboundMessage
from workflows.models import (
    ApprovalRecord,
    Breach,
    CaseInput,
    EscalationType,
    Feedback,
    Outcome,
    PendingApproval,
    Reopening,
    Severity,
    Stage,
    TierVisit,
    TimelineEntry,
)
from workflows.policy import Policy
from workflows.rules import Clocks


@dataclass(slots=True)
class Opening:
    """A case before identify: its input and the first lines of its timeline (a signal can
    come before the case has even read its input)."""

    case: CaseInput | None = None
    opened_at: datetime | None = None
    timeline: list[TimelineEntry] = field(default_factory=list)


class Clock(StrEnum):
    ACK = "ack"
    RESOLVE = "resolve"


@dataclass(slots=True)
class CaseState:
    case: CaseInput
    policy: Policy
    key_prefix: str  # "<workflow id>:<run id>": outbox keys derive from it
    opened_at: datetime
    hard_cap_at: datetime
    severity: Severity
    escalation_type: EscalationType
    skill: str | None
    tier: int
    department: str
    next_customer_update: datetime
    stage: Stage = "assign"
    assignee: str | None = None
    acknowledged: bool = False
    clocks: Clocks | None = None  # set at assignment, for the tier visit
    warned: set[Clock] = field(default_factory=set)
    breached_clocks: set[Clock] = field(default_factory=set)
    sla_breached: bool = False  # the top tier breached
    paused_at: datetime | None = None
    pending: PendingApproval | None = None
    approval_round: int = 0
    approvals: list[ApprovalRecord] = field(default_factory=list)
    breaches: list[Breach] = field(default_factory=list)
    tiers: list[TierVisit] = field(default_factory=list)
    timeline: list[TimelineEntry] = field(default_factory=list)
    needs_assign: bool = True
    exclude: list[str] = field(default_factory=list)  # not to be picked at the next assignment
    finish: Outcome | None = None
    resolution: str | None = None
    resolved_by: str | None = None
    closed_at: datetime | None = None
    escalations: int = 0
    renotify_every: int | None = None  # seconds between pages of an unacknowledged assignee
    paged_at: datetime | None = None  # the assignment or the last page
    pages: int = 0  # re-notifications in this assignment
    # after the resolution
    root_cause: str | None = None
    resolutions: int = 0
    reopen_until: datetime | None = None  # in `resolved`: when the case closes
    window_closed: bool = False
    prefer: str | None = None  # whom the next assignment picks if on shift (a reopen)
    feedback: list[Feedback] = field(default_factory=list)
    reopens: list[Reopening] = field(default_factory=list)
    deescalations: int = 0
    # what the records and the outbox have not had yet
    unrecorded: list[TimelineEntry] = field(default_factory=list)
    outbox: list[OutboundMessage] = field(default_factory=list)
    messages_queued: int = 0

    @property
    def clocks_run(self) -> bool:
        """The SLA clocks count: someone holds the case and it is not waiting on the customer."""
        return self.stage == "resolve" and self.paused_at is None and self.clocks is not None


class DueKind(StrEnum):
    HARD_CAP = "hard_cap"
    APPROVAL = "approval"
    WARNING = "warning"
    BREACH = "breach"
    CUSTOMER_UPDATE = "customer_update"
    RENOTIFY = "renotify"
    WINDOW_END = "window_end"


@dataclass(frozen=True, slots=True)
class Due:
    """The next instant at which the case acts by itself, and what it will do then."""

    at: datetime
    kind: DueKind
    label: str  # the timer's summary in the Temporal UI
    clock: Clock | None = None  # for warnings and breaches
    deadline: datetime | None = None  # for warnings and breaches: the SLA deadline itself
