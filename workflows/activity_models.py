"""Inputs and results of the activities: the boundary between decisions and side effects."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from workflows.models import (
    CaseInput,
    CaseReport,
    Channel,
    Severity,
    Stage,
    TimelineEntry,
    UtcDatetime,
)
from workflows.policy import Person, Policy


class OutboundMessage(BaseModel):
    """One notification or customer update; `key` makes its delivery once-only.

    A case queues a notice: a `template` and the `facts` it needs; the activity renders it
    into `subject` and `body` before it keeps it in the outbox. (Cases started before
    notices queued the text itself, with no template: it is kept as it came.)
    """

    key: str
    channel: Channel
    recipient: str
    address: str
    template: str | None = None
    facts: dict[str, Any] = {}
    subject: str = ""
    body: str = ""
    html: str | None = None  # rendered by the activity; never set by a case
    short: str | None = None


class CaseSnapshot(BaseModel):
    """The case row as the records keep it; `step` orders writes so a retry never rolls back."""

    case_id: str
    workflow_id: str
    run_id: str
    step: int
    customer_id: str
    customer_name: str
    subject: str
    category: str
    channel: str
    severity: Severity
    reported_severity: Severity
    stage: Stage
    tier: int | None
    department: str | None
    assignee: str | None
    sla_breached: bool
    opened_at: UtcDatetime
    closed_at: UtcDatetime | None = None
    outcome: str | None = None
    ack_by: UtcDatetime | None = None
    resolve_by: UtcDatetime | None = None
    policy_version: str
    acknowledged: bool = False
    paused: bool = False
    warned: bool = False
    breaches: int = 0
    approvers: list[str] = []  # of the pending approval
    approval_due_by: UtcDatetime | None = None
    reopen_until: UtcDatetime | None = None


class OpenCaseRequest(BaseModel):
    case: CaseInput
    workflow_id: str
    run_id: str
    opened_at: UtcDatetime
    # the timeline so far ("opened", and any signal noted before): the first record's lines
    # when the case is opened and assigned in one activity (open_and_assign)
    timeline: list[TimelineEntry] = []


class CustomerContext(BaseModel):
    """What identify needs: the policy this case will keep and the customer's history."""

    policy: Policy
    recent_cases: int
    open_cases: int
    recent_case_ids: list[str]


class Transition(BaseModel):
    key: str
    snapshot: CaseSnapshot
    timeline: list[TimelineEntry]
    messages: list[OutboundMessage]
    report: CaseReport | None = None


class AssignRequest(BaseModel):
    """Pick the least-loaded candidate, record it and tell them, in one step."""

    transition: Transition
    people: list[Person]
    skill: str | None
    exclude: list[str]
    timezone: str
    assigned_seq: int
    tier_name: str
    department_name: str
    prefer: str | None = None  # picked if eligible: the assignee who resolved a reopened case
    # the new tier's deadlines counted from the request (the case counts them from the
    # answer, a moment later): the records list the case by them until its next transition
    ack_by: UtcDatetime | None = None
    resolve_by: UtcDatetime | None = None


class AssignResult(BaseModel):
    assignee: str
    entry: TimelineEntry


class OpenedCase(BaseModel):
    """open_and_assign's answer: what identify needed, and who took the case."""

    context: CustomerContext
    assigned: AssignResult


class ProofClaim(BaseModel):
    """A Signal's proof and what it must sign (checked by the `check_proof` local activity)."""

    proof: str | None
    case_id: str
    message: str
    by: str
    request: str
