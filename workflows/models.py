"""Wire models: the one definition of every JSON payload a case sends or receives.

These are imported by the workflow sandbox (passed through), the activities and the starter,
so they hold no I/O and no heavy imports.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
)

Severity = Literal["low", "medium", "high", "critical"]
SEVERITIES: tuple[Severity, ...] = ("low", "medium", "high", "critical")
Stage = Literal["identify", "assign", "resolve", "report_up", "resolved", "closed"]
EscalationType = Literal["functional", "hierarchical"]
Outcome = Literal["resolved", "hard_cap"]
ApprovalDecision = Literal["approved", "rejected", "expired", "withdrawn"]
Channel = Literal["internal", "customer"]

CASE_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
WORKFLOW_TYPE = "EscalationCase"


def workflow_id_for(case_id: str) -> str:
    return f"case-{case_id}"


def _aware(value: datetime) -> datetime:
    """Datetimes are always timezone-aware UTC on the wire and in search attributes."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


UtcDatetime = Annotated[datetime, AfterValidator(_aware)]
NonEmpty = Annotated[str, Field(min_length=1, max_length=2000)]
PersonRef = Annotated[str, Field(min_length=1, max_length=100)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class Customer(Strict):
    id: Annotated[str, Field(min_length=1, max_length=100)]
    name: Annotated[str, Field(min_length=1, max_length=200)]
    email: Annotated[str, Field(min_length=3, max_length=254)]
    vip: bool = False

    @field_validator("email")
    @classmethod
    def _email(cls, value: str) -> str:
        if not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", value):
            raise ValueError("not an email address")
        return value


class Action(Strict):
    kind: Annotated[str, Field(min_length=1, max_length=50)]
    amount: Annotated[float, Field(ge=0, allow_inf_nan=False)]
    currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$")] = "USD"


class CaseInput(Strict):
    """What a backend sends to open a case."""

    case_id: Annotated[str, Field(pattern=CASE_ID_PATTERN)]
    customer: Customer
    subject: Annotated[str, Field(min_length=1, max_length=300)]
    description: Annotated[str, Field(max_length=20000)] = ""
    category: Annotated[str, Field(min_length=1, max_length=50)]
    severity: Severity
    channel: Literal["phone", "email", "chat", "web", "social", "api"] = "email"
    opened_by: Annotated[str, Field(min_length=1, max_length=100)]
    requested_action: Action | None = None


def describe_validation_error(err: ValidationError) -> str:
    """One line per problem, each naming the field as a dotted path."""
    lines = []
    for problem in err.errors():
        field = ".".join(str(p) for p in problem["loc"]) or "input"
        lines.append(f"{field}: {problem['msg']}")
    return "; ".join(lines)


# --- messages -------------------------------------------------------------------------------

# Which way a staff message came, for the audit trail: the desk's web app (console and signed
# links), the CLI, a backend through the API; an Update or a Signal (the Temporal UI) that
# does not say is named as such.
Via = Literal["web", "cli", "api", "update", "signal"]
VIA_HELP = "which way the message came (the audit trail names it)"
ViaField = Annotated[Via | None, Field(description=VIA_HELP)]
# A signature by the desk's web app or CLI (workflows/proofs.py); required for the messages
# the case's policy lists in `proof_required`.
ProofField = Annotated[
    str | None, Field(max_length=1000, description="the desk's signed proof of this decision")
]


class Acknowledge(Strict):
    by: PersonRef
    via: ViaField = None
    proof: ProofField = None


class Resolve(Strict):
    by: PersonRef
    resolution: NonEmpty
    root_cause: Annotated[
        str | None, Field(description="why it happened, from the policy's root_causes")
    ] = None
    via: ViaField = None
    proof: ProofField = None


class Escalate(Strict):
    by: PersonRef
    reason: NonEmpty
    department: Annotated[
        str | None, Field(description="transfer to this department instead of going up a tier")
    ] = None
    via: ViaField = None
    proof: ProofField = None


class RequestApproval(Strict):
    by: PersonRef
    action: Action
    via: ViaField = None
    proof: ProofField = None


class Approve(Strict):
    by: PersonRef
    note: str = ""
    via: ViaField = None
    proof: ProofField = None


class Reject(Strict):
    by: PersonRef
    reason: NonEmpty
    via: ViaField = None
    proof: ProofField = None


class WaitForCustomer(Strict):
    by: PersonRef
    question: NonEmpty
    via: ViaField = None
    proof: ProofField = None


class CustomerReplied(Strict):
    message: NonEmpty


class CustomerEscalate(Strict):
    reason: NonEmpty


class CustomerFeedback(Strict):
    score: Annotated[int, Field(ge=1, le=5, description="the customer's rating, 1 to 5")]
    comment: Annotated[str, Field(max_length=5000)] = ""


class Reopen(Strict):
    by: PersonRef  # "customer", or the assignee who resolved it
    reason: NonEmpty
    via: ViaField = None
    proof: ProofField = None


class Deescalate(Strict):
    by: PersonRef
    reason: NonEmpty
    via: ViaField = None
    proof: ProofField = None


# --- state the workflow exposes -------------------------------------------------------------


class TimelineEntry(BaseModel):
    seq: int
    at: UtcDatetime
    what: str
    by: str | None = None
    tier: int | None = None
    details: str = ""
    via: Via | None = None  # for a person's message: which way it came
    act: dict[str, Any] | None = None  # the message as the simulator replays it (acts.py)


class Deadlines(BaseModel):
    ack_by: UtcDatetime | None = None
    resolve_by: UtcDatetime | None = None


class PendingApproval(BaseModel):
    action: Action
    requested_by: str
    requested_at: UtcDatetime
    approvers: list[str]
    notified: list[str]
    due_by: UtcDatetime | None


class ApprovalRecord(BaseModel):
    action: Action
    requested_by: str
    requested_at: UtcDatetime
    decision: ApprovalDecision
    decided_by: str | None
    decided_at: UtcDatetime
    note: str = ""


class Breach(BaseModel):
    tier: int
    clock: Literal["ack", "resolve"]
    deadline: UtcDatetime
    assignee: str | None


class TierVisit(BaseModel):
    tier: int
    department: str
    assignees: list[str] = []
    entered_at: UtcDatetime
    left_at: UtcDatetime | None = None
    seconds: float = 0.0


class Feedback(BaseModel):
    score: int
    comment: str = ""
    at: UtcDatetime
    resolution: int  # which resolution it rates (1 for the first, 2 after a reopen, ...)


class Reopening(BaseModel):
    by: str
    reason: str
    at: UtcDatetime
    tier: int
    department: str


class CaseStatus(BaseModel):
    """The `status` query. Every key is always present; null means none."""

    case_id: str
    stage: Stage
    severity: Severity | None
    reported_severity: Severity | None
    tier: int | None
    tier_name: str | None
    department: str | None
    assignee: str | None
    acknowledged: bool
    escalation_type: EscalationType | None
    deadlines: Deadlines
    sla_breached: bool
    paused: bool
    paused_remaining_seconds: dict[str, float] | None
    pending_approval: PendingApproval | None
    approvals: list[ApprovalRecord]
    breaches: list[Breach]
    customer: Customer | None
    subject: str | None
    category: str | None
    requested_action: Action | None
    policy_version: str | None
    description: str | None = None
    opened_at: UtcDatetime | None
    closed_at: UtcDatetime | None
    outcome: Outcome | None
    resolution: str | None
    root_cause: str | None = None
    resolutions: int = 0  # how many times it was resolved (a reopened case: more than one)
    reopen_until: UtcDatetime | None = None  # in `resolved`: when the case closes
    feedback: list[Feedback] = []
    reopens: list[Reopening] = []
    timeline: list[TimelineEntry]


class CaseReport(BaseModel):
    """The workflow result: what report-up sends up the hierarchy."""

    case_id: str
    outcome: Outcome
    severity: Severity
    reported_severity: Severity
    customer: Customer
    subject: str
    department: str
    final_tier: int
    opened_at: UtcDatetime
    closed_at: UtcDatetime
    duration_seconds: float
    tiers: list[TierVisit]
    breaches: list[Breach]
    sla_breached: bool
    approvals: list[ApprovalRecord]
    resolution: str | None
    resolved_by: str | None
    escalations: int
    policy_version: str
    root_cause: str | None = None
    feedback: list[Feedback] = []
    reopens: list[Reopening] = []
    deescalations: int = 0
    timeline: list[TimelineEntry]


class MessageResult(BaseModel):
    """What an accepted update returns to its caller."""

    accepted: bool
    message: str
    stage: Stage
    tier: int | None
    assignee: str | None


def case_input(raw: Any, workflow_id: str) -> CaseInput:
    """The case a workflow was started with; ValueError names the field that is wrong."""
    try:
        case = CaseInput.model_validate(raw.model_dump() if hasattr(raw, "model_dump") else raw)
    except ValidationError as err:
        raise ValueError(f"invalid case input: {describe_validation_error(err)}") from None
    expected = workflow_id_for(case.case_id)
    if workflow_id != expected:
        raise ValueError(f"case_id: workflow id must be {expected!r} for case {case.case_id}")
    return case
