"""How each event changes a case: its state, one timeline line, and the notices it sends.

Notices name a template and the facts it needs (activities/templates renders them); no text
a customer or a supervisor reads is written here. Timeline lines are the audit trail.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from workflows import rules
from workflows.activity_models import CustomerContext, OutboundMessage
from workflows.events import (
    Acknowledged,
    ApprovalDecided,
    ApprovalEscalated,
    ApprovalRequested,
    Assigned,
    AssignmentStarted,
    CustomerAskedAtTop,
    CustomerReplied,
    CustomerUpdated,
    Deescalated,
    Escalated,
    Event,
    FeedbackGiven,
    HardCapReached,
    MessageIgnored,
    Renotified,
    Reopened,
    ReportedUp,
    Resolved,
    SlaBreached,
    SlaWarned,
    Transferred,
    WaitingForCustomer,
    WindowClosed,
)
from workflows.models import (
    ApprovalDecision,
    ApprovalRecord,
    Breach,
    CaseInput,
    Feedback,
    PendingApproval,
    Reopening,
    TierVisit,
    TimelineEntry,
)
from workflows.notices import line, note, notify, tell_customer
from workflows.policy import Policy
from workflows.projections import report
from workflows.state import CaseState, Opening
from workflows.wording import clock_verb, fmt_duration, fmt_money


def open_case(opening: Opening, case: CaseInput, now: datetime) -> None:
    opening.case, opening.opened_at = case, now
    note(opening.timeline, now, "opened", case.opened_by, None, f"{case.channel}: {case.subject}")


def ignore(target: CaseState | Opening, name: str, reason: str, now: datetime) -> None:
    """An invalid signal: a timeline line, nothing else (before identify too)."""
    if isinstance(target, CaseState):
        apply(target, MessageIgnored(name, reason), now)
    else:
        note(
            target.timeline, now, "message ignored", None, None, f"invalid {name} signal: {reason}"
        )


def delivery_failed(target: CaseState | Opening, details: str, now: datetime) -> None:
    """A line for the timeline only: the relay wrote it to the records itself."""
    tier = target.tier if isinstance(target, CaseState) else None
    note(target.timeline, now, "delivery failed", None, tier, details)


def noted(state: CaseState, entry: TimelineEntry) -> None:
    """A line noted before the case was identified, after the lines identify took: it
    goes to the records with the next step."""
    later = entry.model_copy(update={"seq": len(state.timeline) + 1})
    state.timeline.append(later)
    state.unrecorded.append(later)


def take_records(state: CaseState) -> tuple[list[TimelineEntry], list[OutboundMessage]]:
    """What the records and the outbox have not had yet; from now on they have it."""
    taken = state.unrecorded, state.outbox
    state.unrecorded, state.outbox = [], []
    return taken


def identify(
    opening: Opening, ctx: CustomerContext, policy: Policy, key_prefix: str, now: datetime
) -> CaseState:
    """The case's severity, route, starting tier and clocks, from the policy it keeps."""
    case = opening.case
    assert case is not None and opening.opened_at is not None
    severity, reasons = rules.raised_severity(
        policy, case.severity, case.customer.vip, ctx.recent_cases
    )
    department, skill = rules.route(policy, case.category)
    tier = rules.start_tier(policy, severity)
    state = CaseState(
        case=case,
        policy=policy,
        key_prefix=key_prefix,
        opened_at=opening.opened_at,
        hard_cap_at=opening.opened_at + timedelta(seconds=policy.hard_cap),
        severity=severity,
        escalation_type=rules.escalation_type_at_start(policy, tier),
        skill=skill,
        tier=tier,
        department=department,
        next_customer_update=now + timedelta(seconds=policy.customer_update_every[severity]),
        renotify_every=policy.renotify_every.get(severity),
        timeline=list(opening.timeline),
        unrecorded=list(opening.timeline),
    )
    raised = f" (raised from {case.severity}: {', '.join(reasons)})" if reasons else ""
    note(
        state.timeline,
        now,
        "identified",
        None,
        None,
        f"severity {severity}{raised}; {state.escalation_type} escalation to "
        f"{policy.departments[department].name}, tier {tier}; "
        f"{ctx.open_cases} other open and {ctx.recent_cases} recent cases for this customer; "
        f"policy {policy.version}",
        state.unrecorded,
    )
    _enter_tier(state, tier, department, now)
    tell_customer(
        state,
        "escalation_received",
        department_name=policy.departments[department].name,
        tier_name=rules.tier_policy(policy, tier).name,
        update_every_seconds=policy.customer_update_every[severity],
    )
    return state


def apply(state: CaseState, event: Event, now: datetime) -> None:
    policy = state.policy
    match event:
        case Acknowledged(by=by, via=via):
            state.acknowledged = True
            line(state, now, "acknowledged", by, "", via)
            tell_customer(state, "acknowledged", department_name=_department_name(state))
        case Resolved(by=by, resolution=resolution, root_cause=root_cause, via=via):
            state.acknowledged = True
            state.resolution, state.resolved_by = resolution, by
            state.root_cause = root_cause
            state.resolutions += 1
            cause = f" (root cause: {root_cause})" if root_cause else ""
            line(state, now, "resolved", by, resolution + cause, via)
            state.finish = "resolved"
        case FeedbackGiven(score=score, comment=comment):
            state.feedback.append(
                Feedback(score=score, comment=comment, at=now, resolution=state.resolutions)
            )
            line(state, now, "customer feedback", "customer", f"{score}/5 {comment}".strip())
            if state.resolved_by:
                notify(state, state.resolved_by, "feedback_received", score=score, comment=comment)
        case Reopened(by=by, reason=reason, via=via):
            state.reopens.append(
                Reopening(
                    by=by, reason=reason, at=now, tier=state.tier, department=state.department
                )
            )
            where = f"tier {state.tier}, {state.department}"
            line(state, now, "reopened", by, f"{reason} (back to {where})", via)
            state.prefer, state.finish, state.reopen_until = state.resolved_by, None, None
            state.resolution = None
            _enter_tier(state, state.tier, state.department, now)
            for person in rules.supervisors(policy, state.department, state.tier):
                notify(state, person.id, "reopened", by=by, reason=reason, tier=state.tier)
            tell_customer(state, "customer_reopened")
        case WindowClosed():
            rated = len(state.feedback)
            line(state, now, "closed", None, f"reopen window ended; {rated} rating(s)")
            state.finish, state.window_closed, state.closed_at = "resolved", True, now
        case Deescalated(by=by, reason=reason, via=via):
            levels = [t.level for t in policy.tiers]
            lower = levels[levels.index(state.tier) - 1]
            state.deescalations += 1
            line(state, now, "de-escalated", by, f"tier {state.tier} -> {lower}: {reason}", via)
            _enter_tier(state, lower, state.department, now)
        case Escalated(by=by, reason=reason, automatic=automatic, via=via):
            _escalate(state, by, reason, automatic, now, via)
        case Transferred(by=by, department=department, reason=reason, via=via):
            previous, old = state.assignee, state.department
            state.escalations += 1
            state.escalation_type = "functional"
            line(state, now, "transferred", by, f"{old} -> {department}: {reason}", via)
            state.skill = None
            _enter_tier(state, state.tier, department, now)
            state.exclude = []
            name = policy.departments[department].name
            if previous:
                notify(state, previous, "transferred_from_you", department_name=name, reason=reason)
            tell_customer(state, "customer_transferred", department_name=name)
        case ApprovalRequested(
            by=by, action=action, approvers=approvers, notified=notified, via=via
        ):
            state.approval_round = 0
            state.pending = PendingApproval(
                action=action,
                requested_by=by,
                requested_at=now,
                approvers=approvers,
                notified=notified,
                due_by=event.due_by,
            )
            money = fmt_money(action.amount, action.currency)
            line(
                state,
                now,
                "approval requested",
                by,
                f"{action.kind} {money}; asked {', '.join(notified)}",
                via,
            )
            _ask_approvers(state, notified)
        case ApprovalEscalated(waited_on=waited_on, notified=notified, due_by=due_by):
            assert state.pending is not None
            state.approval_round += 1
            state.pending.notified, state.pending.due_by = notified, due_by
            line(
                state,
                now,
                "approval escalated",
                None,
                f"no decision from {', '.join(waited_on)}; asked {', '.join(notified)}",
            )
            _ask_approvers(state, notified)
        case ApprovalDecided(decision=decision, by=by, note=text, via=via):
            _decide_approval(state, decision, by, text, now, via)
        case WaitingForCustomer(by=by, question=question, via=via):
            state.paused_at = now
            line(state, now, "waiting for customer", by, question, via)
            tell_customer(state, "waiting_on_you", question=question)
        case CustomerReplied(message=message):
            paused_at = state.paused_at
            assert paused_at is not None
            paused = now - paused_at
            state.paused_at = None
            if state.clocks is not None:
                state.clocks = rules.resumed(policy, state.severity, state.clocks, paused_at, now)
            state.next_customer_update += paused
            waited = fmt_duration(paused.total_seconds())
            line(state, now, "customer replied", "customer", f"{message} (clock paused {waited})")
            if state.assignee:
                notify(state, state.assignee, "customer_replied", message=message)
        case CustomerAskedAtTop(reason=reason):
            line(
                state,
                now,
                "customer asked to escalate",
                "customer",
                f"{reason} (already at the top tier)",
            )
            for person in policy.executives:
                notify(state, person.id, "customer_asks_top", reason=reason)
        case MessageIgnored(name=name, reason=reason):
            line(state, now, "message ignored", None, f"invalid {name} signal: {reason}")
        case SlaWarned(clock=clock, deadline=deadline, silent=silent):
            state.warned.add(clock)
            if silent:
                return
            left = fmt_duration((deadline - now).total_seconds())
            verb = clock_verb(clock)
            line(
                state,
                now,
                f"{clock.value} SLA warning",
                None,
                f"{left} left to be {verb} at tier {state.tier}",
            )
            for person in rules.supervisors(policy, state.department, state.tier):
                notify(
                    state,
                    person.id,
                    "sla_warning",
                    clock=clock.value,
                    left_seconds=(deadline - now).total_seconds(),
                    deadline=deadline.isoformat(),
                    assignee=state.assignee,
                    tier=state.tier,
                )
        case SlaBreached(clock=clock, deadline=deadline, top_tier=top_tier):
            state.breached_clocks.add(clock)
            state.breaches.append(
                Breach(
                    tier=state.tier, clock=clock.value, deadline=deadline, assignee=state.assignee
                )
            )
            line(
                state,
                now,
                f"{clock.value} SLA breached",
                None,
                f"not {clock_verb(clock)} by {deadline.isoformat()} at tier {state.tier}",
            )
            if top_tier:
                state.sla_breached = True
                interim = report(state, now).model_dump(mode="json", exclude={"timeline"})
                recipients = rules.report_recipients(
                    policy, state.department, state.tier, True, state.severity
                )
                for person in recipients:
                    notify(
                        state,
                        person.id,
                        "top_tier_breach",
                        clock=clock.value,
                        deadline=deadline.isoformat(),
                        tier=state.tier,
                        assignee=state.assignee,
                        report=interim,
                    )
        case CustomerUpdated():
            state.next_customer_update = now + timedelta(
                seconds=policy.customer_update_every[state.severity]
            )
            tell_customer(
                state,
                "status_update",
                department_name=_department_name(state),
                tier_name=rules.tier_policy(policy, state.tier).name,
                approval_pending=state.pending is not None,
            )
            line(state, now, "customer updated", None, "scheduled status update")
        case HardCapReached():
            line(state, now, "hard cap reached", None, f"open for {fmt_duration(policy.hard_cap)}")
            state.finish = "hard_cap"
        case AssignmentStarted():
            state.stage, state.assignee = "assign", None
            seq = len(state.timeline) + 1  # notes made while assigning follow this line
            state.timeline.append(TimelineEntry(seq=seq, at=now, what="assigned", tier=state.tier))
        case Renotified(person=person, page=page, due_at=due_at):
            state.pages, state.paged_at = page, due_at
            line(state, now, "re-notified", None, f"page {page + 1} to {person}: not acknowledged")
            ack_by = state.clocks.ack_by.isoformat() if state.clocks else None
            notify(state, person, "renotify", person=person, page=page + 1, ack_by=ack_by)
        case Assigned(assignee=assignee, entry=entry):
            state.paged_at, state.pages, state.prefer = now, 0, None
            state.timeline[entry.seq - 1] = entry
            state.needs_assign = False
            state.exclude = []
            state.assignee = assignee
            state.stage = "resolve"
            state.acknowledged = False
            state.clocks = rules.clocks(policy, state.tier, state.severity, now)
            state.tiers[-1].assignees.append(assignee)
        case ReportedUp(recipients=recipients, window_until=window_until):
            line(
                state,
                now,
                "reported up",
                None,
                f"to {', '.join(recipients)}; outcome {state.finish}",
            )
            final = report(state, now)
            facts = final.model_dump(mode="json", exclude={"timeline"})
            for person_id in recipients:
                notify(state, person_id, "case_report", report=facts)
            if final.outcome != "resolved":
                tell_customer(state, "closed_by_cap", hard_cap_seconds=policy.hard_cap)
            elif window_until is None:
                tell_customer(state, "resolved", resolution=state.resolution)
            else:  # open for the customer's verdict: the mail carries the rating links
                tell_customer(
                    state,
                    "resolved",
                    resolution=state.resolution,
                    resolution_number=state.resolutions,
                    reopen_until=window_until.isoformat(),
                )
                state.stage, state.finish, state.reopen_until = "resolved", None, window_until
                return
            state.closed_at = final.closed_at
        case _:
            raise AssertionError(f"unhandled event {event!r}")


# --- pieces shared by several events ------------------------------------------------------


def _escalate(
    state: CaseState,
    by: str | None,
    reason: str,
    automatic: bool,
    now: datetime,
    via: str | None = None,
) -> None:
    policy = state.policy
    old_tier = state.tier
    new_tier = rules.next_tier(policy, old_tier)
    assert new_tier is not None
    previous = state.assignee
    state.escalations += 1
    state.escalation_type = "hierarchical"
    auto = " (automatic)" if automatic else ""
    line(state, now, "escalated", by, f"tier {old_tier} -> {new_tier}{auto}: {reason}", via)
    _enter_tier(state, new_tier, state.department, now)
    state.exclude = [previous] if previous else []
    if previous:
        notify(state, previous, "escalated_from_you", new_tier=new_tier, reason=reason)
    for person in rules.supervisors(policy, state.department, new_tier):
        notify(state, person.id, "escalated", old_tier=old_tier, new_tier=new_tier, reason=reason)
    tell_customer(state, "customer_escalated", tier_name=rules.tier_policy(policy, new_tier).name)


def _enter_tier(state: CaseState, tier: int, department: str, now: datetime) -> None:
    if state.tiers and state.tiers[-1].left_at is None:
        visit = state.tiers[-1]
        visit.left_at = now
        visit.seconds = (now - visit.entered_at).total_seconds()
    state.tier, state.department = tier, department
    state.tiers.append(TierVisit(tier=tier, department=department, entered_at=now))
    state.assignee = None
    state.acknowledged = False
    state.clocks = None
    state.warned = set()
    state.breached_clocks = set()
    state.paused_at = None
    state.stage = "assign"
    state.needs_assign = True


def _ask_approvers(state: CaseState, people: list[str]) -> None:
    pending = state.pending
    assert pending is not None
    for pid in people:
        notify(
            state,
            pid,
            "approval_needed",
            action=pending.action.model_dump(),
            requested_by=pending.requested_by,
            requested_at=pending.requested_at.isoformat(),  # the request, for signed links
            due_by=pending.due_by.isoformat() if pending.due_by else None,
            approver=pid,
        )


def _decide_approval(
    state: CaseState,
    decision: ApprovalDecision,
    by: str | None,
    text: str,
    now: datetime,
    via: str | None = None,
) -> None:
    pending = state.pending
    assert pending is not None
    state.approvals.append(
        ApprovalRecord(
            action=pending.action,
            requested_by=pending.requested_by,
            requested_at=pending.requested_at,
            decision=decision,
            decided_by=by,
            decided_at=now,
            note=text,
        )
    )
    state.pending = None
    a = pending.action
    details = f"{a.kind} {fmt_money(a.amount, a.currency)}: {text}".rstrip(": ")
    line(state, now, f"approval {decision}", by, details, via)
    action = a.model_dump()
    if state.assignee:
        notify(
            state,
            state.assignee,
            "approval_decided",
            action=action,
            decision=decision,
            by=by,
            note=text,
        )
    if decision == "approved":
        tell_customer(state, "approval_granted", action=action)


def _department_name(state: CaseState) -> str:
    return state.policy.departments[state.department].name
