"""Every decision a case makes, as pure functions of its state: read this top to bottom to
know the process.

- `decide(state, name, msg, now)`: a message is accepted with the events it causes, or
  refused with a reason that names the field. An Update's validator runs this same function
  and drops the result, so validation and effect never disagree.
- `next_due(state)`: the next instant the case acts by itself (an SLA warning or breach, an
  approval's timeout, a customer update, the hard cap), and `on_due` says what it does then.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from workflows import rules
from workflows.events import (
    Acknowledged,
    ApprovalDecided,
    ApprovalEscalated,
    ApprovalRequested,
    CustomerAskedAtTop,
    CustomerReplied,
    CustomerUpdated,
    Deescalated,
    Escalated,
    Event,
    FeedbackGiven,
    HardCapReached,
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
    Acknowledge,
    ApprovalDecision,
    Approve,
    CustomerEscalate,
    CustomerFeedback,
    Deescalate,
    Escalate,
    Reject,
    Reopen,
    RequestApproval,
    Resolve,
    WaitForCustomer,
)
from workflows.models import CustomerReplied as CustomerRepliedMsg
from workflows.state import CaseState, Clock, Due, DueKind
from workflows.wording import fmt_duration


@dataclass(frozen=True)
class Refused:
    reason: str


Decision = list[Event] | Refused
Decider = Callable[[CaseState, Any, datetime], Decision]


def decide(state: CaseState | None, name: str, msg: Any, now: datetime) -> Decision:
    """Accept `msg` (already parsed with its registry model) with its events, or refuse it."""
    if state is not None and state.stage in ("report_up", "closed"):
        return Refused(f"case is {state.stage.replace('_', '-')}; it takes no more messages")
    if state is None:
        return Refused("case is still being identified; try again in a moment")
    return DECIDERS[name](state, msg, now)


# --- messages anyone involved may send, at any time the case is open ---------------------


def _customer_escalate(s: CaseState, msg: CustomerEscalate, now: datetime) -> Decision:
    if s.stage == "resolved":
        return Refused("case is resolved; ask to reopen it instead")
    if s.stage != "resolve":
        return Refused("case is being assigned; try again in a moment")
    if rules.next_tier(s.policy, s.tier) is None:
        return [CustomerAskedAtTop(msg.reason)]
    return [Escalated("customer", f"customer asked: {msg.reason}")]


def _customer_replied(s: CaseState, msg: CustomerRepliedMsg, now: datetime) -> Decision:
    if s.paused_at is None:
        return Refused("case is not waiting for the customer")
    return [CustomerReplied(msg.message)]


def _approval_decision(decision: ApprovalDecision) -> Decider:
    def decide_approval(s: CaseState, msg: Approve | Reject, now: datetime) -> Decision:
        if s.pending is None:
            return Refused("no approval is pending")
        if msg.by not in s.pending.approvers:
            return Refused(
                f"by: {msg.by} is not authorised to decide this "
                f"(approvers: {', '.join(s.pending.approvers)})"
            )
        text = msg.note if isinstance(msg, Approve) else msg.reason
        return [ApprovalDecided(decision, msg.by, text, msg.via)]

    return decide_approval


# --- messages for the case's holder (and, for escalate, its supervisors) -----------------


def _held(s: CaseState) -> Refused | None:
    if s.stage == "resolved":
        return Refused("case is resolved; reopen it to act on it again")
    if s.stage != "resolve" or s.assignee is None:
        return Refused("case is being assigned; no one holds it yet")
    return None


def _by_assignee(s: CaseState, by: str) -> Refused | None:
    refused = _held(s)
    if refused is None and by != s.assignee:
        return Refused(f"by: {by} is not the assignee ({s.assignee})")
    return refused


def _withdrawn(s: CaseState, by: str, why: str) -> list[Event]:
    return [ApprovalDecided("withdrawn", by, why)] if s.pending is not None else []


def _escalate(s: CaseState, msg: Escalate, now: datetime) -> Decision:
    if refused := _held(s):
        return refused
    policy = s.policy
    if not rules.may_escalate(policy, s.department, s.tier, msg.by, s.assignee):
        return Refused(
            f"by: {msg.by} is neither the assignee ({s.assignee}) nor a supervisor of this case"
        )
    if msg.department is not None:
        if msg.department not in policy.departments:
            known = ", ".join(policy.departments)
            return Refused(f"department: unknown department {msg.department!r} (known: {known})")
        if msg.department == s.department:
            return Refused(f"department: case is already with {msg.department}")
        return [
            *_withdrawn(s, msg.by, f"transferred to {msg.department}"),
            Transferred(msg.by, msg.department, msg.reason, msg.via),
        ]
    if rules.next_tier(policy, s.tier) is None:
        return Refused(f"case is already at the top tier ({s.tier})")
    return [Escalated(msg.by, msg.reason, via=msg.via)]


def _acknowledge(s: CaseState, msg: Acknowledge, now: datetime) -> Decision:
    if refused := _by_assignee(s, msg.by):
        return refused
    return (
        Refused("case is already acknowledged")
        if s.acknowledged
        else [Acknowledged(msg.by, msg.via)]
    )


def _resolve(s: CaseState, msg: Resolve, now: datetime) -> Decision:
    if refused := _by_assignee(s, msg.by):
        return refused
    causes = s.policy.root_causes
    if msg.root_cause is not None and msg.root_cause not in causes:
        return Refused(f"root_cause: {msg.root_cause!r} is not one of {', '.join(causes)}")
    if msg.root_cause is None and s.severity in s.policy.root_cause_required:
        return Refused(f"root_cause: required for {s.severity} cases (one of {', '.join(causes)})")
    resolved = Resolved(msg.by, msg.resolution, msg.root_cause, msg.via)
    return [*_withdrawn(s, msg.by, "case resolved"), resolved]


def _deescalate(s: CaseState, msg: Deescalate, now: datetime) -> Decision:
    if refused := _held(s):
        return refused
    lowest = s.policy.tiers[0].level
    if s.tier <= lowest:
        return Refused(f"case is at the lowest desk tier ({lowest}); nothing to hand down to")
    at_top = rules.next_tier(s.policy, s.tier) is None
    here = rules.people_at(s.policy, s.department, s.tier) if not at_top else s.policy.executives
    if not any(p.id == msg.by for p in here):
        return Refused(f"by: {msg.by} is not a supervisor at tier {s.tier} of {s.department}")
    if s.pending is not None:
        return Refused("an approval is pending; decide it before handing the case down")
    return [Deescalated(msg.by, msg.reason, msg.via)]


# --- after the resolution: the customer's verdict and reopening ---------------------------


def _customer_feedback(s: CaseState, msg: CustomerFeedback, now: datetime) -> Decision:
    if s.stage != "resolved":
        return Refused(
            "case is not resolved: feedback is taken after the resolution, until the case closes"
        )
    if any(f.resolution == s.resolutions for f in s.feedback):
        return Refused("score: this resolution was already rated")
    return [FeedbackGiven(msg.score, msg.comment)]


def _reopen(s: CaseState, msg: Reopen, now: datetime) -> Decision:
    if s.stage != "resolved":
        return Refused("case is not resolved; only a resolved case can be reopened")
    if msg.by not in ("customer", s.resolved_by):
        return Refused(
            f"by: only the customer or the assignee who resolved it ({s.resolved_by}) may reopen"
        )
    return [Reopened(msg.by, msg.reason, msg.via)]


def _wait_for_customer(s: CaseState, msg: WaitForCustomer, now: datetime) -> Decision:
    if refused := _by_assignee(s, msg.by):
        return refused
    if s.paused_at is not None:
        return Refused("case is already waiting for the customer")
    return [WaitingForCustomer(msg.by, msg.question, msg.via)]


def _request_approval(s: CaseState, msg: RequestApproval, now: datetime) -> Decision:
    if refused := _by_assignee(s, msg.by):
        return refused
    policy, action = s.policy, msg.action
    if s.pending is not None:
        return Refused("an approval is already pending")
    try:
        amount = rules.amount_in_policy_currency(policy, action)
        approvers = rules.approvers(policy, s.department, action, msg.by)
    except rules.ApprovalRuleError as err:
        return Refused(str(err))
    own = rules.authority(policy, msg.by)
    if amount <= own:
        return Refused(
            f"action.amount: {action.amount:.2f} {action.currency} is within "
            f"{msg.by}'s own authority ({own:.2f} {policy.currency}); no approval needed"
        )
    if not approvers:
        return Refused("action.amount: nobody's authority covers this amount")
    notified = rules.approvers_to_notify(policy, approvers, 0)
    due_by = now + timedelta(seconds=policy.approval_timeout[s.severity])
    return [ApprovalRequested(msg.by, action, approvers, notified, due_by, msg.via)]


DECIDERS: dict[str, Decider] = {
    "acknowledge": _acknowledge,
    "resolve": _resolve,
    "escalate": _escalate,
    "request_approval": _request_approval,
    "approve": _approval_decision("approved"),
    "reject": _approval_decision("rejected"),
    "wait_for_customer": _wait_for_customer,
    "customer_replied": _customer_replied,
    "customer_escalate": _customer_escalate,
    "deescalate": _deescalate,
    "customer_feedback": _customer_feedback,
    "reopen": _reopen,
}


def accepted(events: list[Event], state: CaseState) -> str:
    """What an accepted Update tells its caller, from the state after its events."""
    match events[-1]:
        case Acknowledged():
            return "acknowledged"
        case Resolved():
            return "resolved; reporting up"
        case Transferred(department=department):
            return f"transferred to {department}"
        case Escalated():
            return f"escalated to tier {state.tier}"
        case ApprovalRequested(notified=notified):
            return f"approval requested from {', '.join(notified)}"
        case ApprovalDecided(decision=decision):
            return decision
        case WaitingForCustomer():
            return "SLA clock paused"
        case CustomerReplied():
            return "SLA clock resumed"
        case CustomerAskedAtTop():
            return "noted; case is already at the top tier"
        case Deescalated():
            return f"handed down to tier {state.tier}"
        case FeedbackGiven(score=score):
            return f"rating {score}/5 recorded"
        case Reopened():
            return f"reopened at tier {state.tier}"
    raise AssertionError(f"no answer for {events[-1]!r}")


# --- the clocks ------------------------------------------------------------------------------


def next_due(s: CaseState) -> Due:
    """The nearest instant at which the case must act by itself (the hard cap is always
    ahead, so there is always one). Ties go to the first in this order."""
    policy, severity = s.policy, s.severity
    if s.stage == "resolved" and s.reopen_until is not None:
        span = fmt_duration(policy.reopen_window.get(severity, 0))
        return Due(s.reopen_until, DueKind.WINDOW_END, f"Reopen window ({span})")
    options = [Due(s.hard_cap_at, DueKind.HARD_CAP, f"Hard cap ({fmt_duration(policy.hard_cap)})")]
    if s.pending is not None and s.pending.due_by is not None:
        who = ", ".join(s.pending.notified)
        wait = fmt_duration(policy.approval_timeout[severity])
        options.append(Due(s.pending.due_by, DueKind.APPROVAL, f"Approval by {who} ({wait})"))
    if s.clocks_run and s.clocks is not None:
        windows = rules.tier_policy(policy, s.tier)
        pct = int(policy.warning_ratio * 100)
        c = s.clocks
        clocks = [
            (Clock.ACK, c.ack_warn_at, c.ack_by, windows.ack[severity]),
            (Clock.RESOLVE, c.resolve_warn_at, c.resolve_by, windows.resolve[severity]),
        ]
        for clock, warn_at, deadline, window in clocks:
            if clock is Clock.ACK and s.acknowledged or clock in s.breached_clocks:
                continue
            name, span = f"Tier {s.tier} {clock.value} SLA", fmt_duration(window)
            if clock not in s.warned:
                label = f"{name} warning ({pct}% of {span})"
                options.append(Due(warn_at, DueKind.WARNING, label, clock, deadline))
            options.append(Due(deadline, DueKind.BREACH, f"{name} ({span})", clock, deadline))
    if s.renotify_every and s.clocks_run and not s.acknowledged and s.paged_at is not None:
        at = s.paged_at + timedelta(seconds=s.renotify_every)
        label = f"Page {s.assignee} again (every {fmt_duration(s.renotify_every)})"
        options.append(Due(at, DueKind.RENOTIFY, label))
    if s.paused_at is None:
        every = fmt_duration(policy.customer_update_every[severity])
        options.append(
            Due(s.next_customer_update, DueKind.CUSTOMER_UPDATE, f"Customer update (every {every})")
        )
    return min(options, key=lambda d: d.at)


def on_due(s: CaseState, due: Due, now: datetime, quiet_when_late: bool = True) -> list[Event]:
    """What the case does when `due` comes. A warning that comes due with its deadline passed
    as well (the server was down) says nothing when `quiet_when_late`: the breach speaks."""
    if due.kind is DueKind.WARNING:
        assert due.clock is not None
        deadline = sla_deadline(s, due.clock)
        return [SlaWarned(due.clock, deadline, silent=quiet_when_late and deadline <= now)]
    return ON_DUE[due.kind](s, due, now)


def _hard_cap(s: CaseState, due: Due, now: datetime) -> list[Event]:
    return [HardCapReached()]


def _customer_update(s: CaseState, due: Due, now: datetime) -> list[Event]:
    return [CustomerUpdated()]


def _renotify(s: CaseState, due: Due, now: datetime) -> list[Event]:
    assert s.assignee is not None
    return [Renotified(s.assignee, s.pages + 1, due.at)]


def _approval_timeout(s: CaseState, due: Due, now: datetime) -> list[Event]:
    """Nobody decided in time: ask the next tier of approvers, or let the request expire."""
    assert s.pending is not None
    waited = s.pending.notified
    nxt = rules.approvers_to_notify(s.policy, s.pending.approvers, s.approval_round + 1)
    if nxt:
        due_by = now + timedelta(seconds=s.policy.approval_timeout[s.severity])
        return [ApprovalEscalated(waited, nxt, due_by)]
    last = ", ".join(waited)
    return [ApprovalDecided("expired", None, f"no decision from anyone authorised (last: {last})")]


def _breach(s: CaseState, due: Due, now: datetime) -> list[Event]:
    """A missed deadline moves the case up a tier; at the top it is reported and stays open."""
    assert due.clock is not None
    top = rules.next_tier(s.policy, s.tier) is None
    breach: list[Event] = [SlaBreached(due.clock, sla_deadline(s, due.clock), top_tier=top)]
    if top:
        return breach
    reason = f"{due.clock.value} SLA breached at tier {s.tier}"
    return [*breach, Escalated(None, reason, automatic=True)]


ON_DUE: dict[DueKind, Callable[[CaseState, Due, datetime], list[Event]]] = {
    DueKind.HARD_CAP: _hard_cap,
    DueKind.CUSTOMER_UPDATE: _customer_update,
    DueKind.APPROVAL: _approval_timeout,
    DueKind.BREACH: _breach,
    DueKind.RENOTIFY: _renotify,
    DueKind.WINDOW_END: lambda s, due, now: [WindowClosed()],
}


def sla_deadline(s: CaseState, clock: Clock) -> datetime:
    """The tier's deadline on `clock` as the case's clocks stand now."""
    assert s.clocks is not None
    return s.clocks.ack_by if clock is Clock.ACK else s.clocks.resolve_by


def report_up(s: CaseState, window_until: datetime | None = None) -> ReportedUp:
    """The supervisor chain above the case; the executives too when breached or critical."""
    people = rules.report_recipients(s.policy, s.department, s.tier, s.sla_breached, s.severity)
    return ReportedUp([p.id for p in people], window_until)


def reopen_until(s: CaseState, now: datetime) -> datetime | None:
    """When a case resolved now closes: the policy's reopen window (none: at once)."""
    window = s.policy.reopen_window.get(s.severity)
    return now + timedelta(seconds=window) if window and s.finish == "resolved" else None
