"""Views of one case state: the `status` query, the records' snapshot, the case report, the
search attributes, and the Temporal UI's current details. Each reads the state; none changes it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from workflows import rules
from workflows import search_attributes as sa
from workflows.activity_models import CaseSnapshot
from workflows.models import CaseReport, CaseStatus, Deadlines
from workflows.state import CaseState, Opening


def status(state: CaseState | None, opening: Opening, case_id: str) -> CaseStatus:
    if state is None:
        case = opening.case
        return CaseStatus(
            case_id=case.case_id if case else case_id,
            stage="identify",
            severity=None,
            reported_severity=case.severity if case else None,
            tier=None,
            tier_name=None,
            department=None,
            assignee=None,
            acknowledged=False,
            escalation_type=None,
            deadlines=Deadlines(),
            sla_breached=False,
            paused=False,
            paused_remaining_seconds=None,
            pending_approval=None,
            approvals=[],
            breaches=[],
            customer=case.customer if case else None,
            subject=case.subject if case else None,
            category=case.category if case else None,
            requested_action=case.requested_action if case else None,
            description=case.description if case else None,
            policy_version=None,
            opened_at=opening.opened_at,
            closed_at=None,
            outcome=None,
            resolution=None,
            timeline=opening.timeline,
        )
    s, case, c = state, state.case, state.clocks
    deadlines = Deadlines()
    remaining: dict[str, float] | None = None
    if c is not None:
        deadlines = Deadlines(ack_by=None if s.acknowledged else c.ack_by, resolve_by=c.resolve_by)
        if s.paused_at is not None:
            at = s.paused_at
            remaining = {"resolve": rules.sla_left(s.policy, s.severity, at, c.resolve_by)}
            if not s.acknowledged:
                remaining["ack"] = rules.sla_left(s.policy, s.severity, at, c.ack_by)
    return CaseStatus(
        case_id=case.case_id,
        stage=s.stage,
        severity=s.severity,
        reported_severity=case.severity,
        tier=s.tier,
        tier_name=rules.tier_policy(s.policy, s.tier).name,
        department=s.department,
        assignee=s.assignee,
        acknowledged=s.acknowledged,
        escalation_type=s.escalation_type,
        deadlines=deadlines,
        sla_breached=s.sla_breached,
        paused=s.paused_at is not None,
        paused_remaining_seconds=remaining,
        pending_approval=s.pending,
        approvals=s.approvals,
        breaches=s.breaches,
        customer=case.customer,
        subject=case.subject,
        category=case.category,
        requested_action=case.requested_action,
        description=case.description,
        policy_version=s.policy.version,
        opened_at=s.opened_at,
        closed_at=s.closed_at,
        outcome=s.finish if s.stage == "closed" else None,
        resolution=s.resolution,
        root_cause=s.root_cause,
        resolutions=s.resolutions,
        reopen_until=s.reopen_until,
        feedback=s.feedback,
        reopens=s.reopens,
        timeline=s.timeline,
    )


def snapshot(
    state: CaseState, workflow_id: str, run_id: str, step: int, closing: bool
) -> CaseSnapshot:
    """The case row as the records keep it after `step`."""
    s, case, c = state, state.case, state.clocks
    return CaseSnapshot(
        case_id=case.case_id,
        workflow_id=workflow_id,
        run_id=run_id,
        step=step,
        customer_id=case.customer.id,
        customer_name=case.customer.name,
        subject=case.subject,
        category=case.category,
        channel=case.channel,
        severity=s.severity,
        reported_severity=case.severity,
        stage="closed" if closing else s.stage,
        tier=s.tier,
        department=s.department,
        assignee=s.assignee,
        sla_breached=s.sla_breached,
        opened_at=s.opened_at,
        closed_at=s.closed_at if closing else None,
        outcome=s.finish if closing else None,
        ack_by=c.ack_by if c and not s.acknowledged else None,
        resolve_by=c.resolve_by if c else None,
        policy_version=s.policy.version,
        acknowledged=s.acknowledged,
        paused=s.paused_at is not None,
        warned=bool(s.warned),
        breaches=len(s.breaches),
        approvers=s.pending.approvers if s.pending else [],
        approval_due_by=s.pending.due_by if s.pending else None,
        reopen_until=s.reopen_until,
    )


def report(state: CaseState, now: datetime) -> CaseReport:
    """The case report as of `now`: the tier it is in counts up to now."""
    s, case = state, state.case
    tiers = [v.model_copy() for v in s.tiers]
    if tiers and tiers[-1].left_at is None:
        tiers[-1].left_at = now
        tiers[-1].seconds = (now - tiers[-1].entered_at).total_seconds()
    return CaseReport(
        case_id=case.case_id,
        outcome=s.finish or "resolved",
        severity=s.severity,
        reported_severity=case.severity,
        customer=case.customer,
        subject=case.subject,
        department=s.department,
        final_tier=s.tier,
        opened_at=s.opened_at,
        closed_at=now,
        duration_seconds=(now - s.opened_at).total_seconds(),
        tiers=tiers,
        breaches=list(s.breaches),
        sla_breached=s.sla_breached,
        approvals=list(s.approvals),
        resolution=s.resolution,
        resolved_by=s.resolved_by,
        escalations=s.escalations,
        policy_version=s.policy.version,
        root_cause=s.root_cause,
        feedback=list(s.feedback),
        reopens=list(s.reopens),
        deescalations=s.deescalations,
        timeline=list(s.timeline),
    )


def search_attributes(state: CaseState) -> dict[str, Any]:
    """Every attribute's current value by name (None: not set)."""
    s = state
    deadline: datetime | None = None
    if s.clocks_run and s.clocks is not None:
        deadline = s.clocks.resolve_by if s.acknowledged else s.clocks.ack_by
    return {
        sa.CASE_ID.name: s.case.case_id,
        sa.CUSTOMER_ID.name: s.case.customer.id,
        sa.CASE_STAGE.name: s.stage,
        sa.CASE_TIER.name: s.tier,
        sa.CASE_SEVERITY.name: s.severity,
        sa.CASE_DEPARTMENT.name: s.department,
        sa.CASE_ASSIGNEE.name: s.assignee,
        sa.SLA_BREACHED.name: s.sla_breached,
        sa.SLA_DEADLINE.name: deadline,
    }


def details(state: CaseState | None) -> str:
    """The Temporal UI's current details (markdown) for the case as it stands."""
    if state is None:
        return "**Stage:** identify\n\n**Assignee:** —"
    s = state
    lines = [f"**Stage:** {s.stage.replace('_', '-')}", f"**Severity:** {s.severity}"]
    lines.append(f"**Tier:** {s.tier} ({rules.tier_policy(s.policy, s.tier).name})")
    lines.append(f"**Department:** {s.policy.departments[s.department].name}")
    acked = " (acknowledged)" if s.acknowledged else ""
    lines.append(f"**Assignee:** {s.assignee or '—'}{acked}")
    if s.clocks is not None and s.stage == "resolve":
        if not s.acknowledged:
            lines.append(f"**Acknowledge by:** {s.clocks.ack_by:%Y-%m-%d %H:%M} UTC")
        lines.append(f"**Resolve by:** {s.clocks.resolve_by:%Y-%m-%d %H:%M} UTC")
    if s.paused_at is not None:
        lines.append(f"**Paused:** waiting for the customer since {s.paused_at:%Y-%m-%d %H:%M} UTC")
    if s.pending is not None:
        a = s.pending.action
        lines.append(
            f"**Pending approval:** {a.kind} {a.amount:.2f} {a.currency} — "
            f"asked {', '.join(s.pending.notified)}"
        )
    if s.sla_breached:
        lines.append("**SLA breached at the top tier**")
    if s.finish:
        lines.append(f"**Outcome:** {s.finish}")
    return "\n\n".join(lines)


def record_summary(state: CaseState) -> str:
    """The summary of the activity that records what is pending: 'Record escalated; notify
    sup-lee, sup-mara; tell the customer'."""
    what = ", ".join(dict.fromkeys(e.what for e in state.unrecorded)) or "update"
    people = list(dict.fromkeys(m.recipient for m in state.outbox if m.channel == "internal"))
    parts = [f"Record {what}"]
    if people:
        parts.append(f"notify {', '.join(people[:3])}{' …' if len(people) > 3 else ''}")
    if any(m.channel == "customer" for m in state.outbox):
        parts.append("tell the customer")
    return "; ".join(parts)
